"""Python's own regular-expression parser, in one place: ``re._parser`` and ``re._constants``.

A schema's ``pattern`` becomes grammar rules (kernel/grammar.py) by walking the tree Python's
``re`` parses it into, so the pattern means here exactly what it means to jsonschema's ``re``.
That parser is private to the standard library (``sre_parse`` before Python 3.11, deprecated
since). ``PRIVATE_NAMES`` lists what is used; tests/test_private_apis.py checks each on the
running Python, so a version that moves one fails there by name.
"""

from __future__ import annotations

try:
    from re import _constants as constants
    from re import _parser as _parser
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as constants  # type: ignore[no-redef]
    import sre_parse as _parser  # type: ignore[no-redef]

#: The opcodes and categories kernel/grammar.py reads in a parsed pattern.
OPCODES = ("ANY", "AT", "BRANCH", "CATEGORY", "IN", "LITERAL", "MAX_REPEAT", "MIN_REPEAT", "NEGATE",
           "NOT_LITERAL", "RANGE", "SUBPATTERN")
AT_CODES = ("AT_BEGINNING", "AT_BEGINNING_STRING", "AT_END", "AT_END_STRING")
CATEGORIES = ("CATEGORY_DIGIT", "CATEGORY_NOT_DIGIT", "CATEGORY_SPACE", "CATEGORY_NOT_SPACE",
              "CATEGORY_WORD", "CATEGORY_NOT_WORD")

PRIVATE_NAMES = {
    "re._parser.parse": "a function (pattern) -> a sequence of (opcode, argument) with .state.flags",
    "re._constants": "the opcodes " + ", ".join(OPCODES + AT_CODES + CATEGORIES) + " and MAXREPEAT",
}


def parse(pattern: str):
    """The parsed ``pattern``: a sequence of (opcode, argument) pairs, its flags at ``.state.flags``."""
    return _parser.parse(pattern)
