"""The tool-call format and the decoding grammar built from the syscall table.

After the kernel decides that the model should call (see kernel.py), it writes
``<tool_call>\n`` itself and the model continues under this grammar: one JSON
object naming a real syscall with schema-valid arguments. The kernel closes the
block with ``\n</tool_call>``, exactly as Qwen's chat template lays tool calls
out, so the model reads and writes the special tokens it was trained on (a
grammar would make it spell ``</tool_call>`` out of plain-text pieces).

JSON Schema to GBNF is llama-cpp-python's converter, given a copy of each
schema that it reads as JSON Schema means it (:class:`_Prepared`): a schema
with no type is any value, not an object; ``$ref`` targets get names of their
own; a list of types is a union. ``pattern`` is translated here from Python's
own parse of the regex, so that every string it allows is valid JSON. What the
converter still cannot express (a lookahead, ``not``, an ``allOf`` of
non-objects) is decoded under a looser rule for that part, any value or any
value of the declared type, with a note in the log: the kernel validates
arguments against the real schema before anything is run.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from typing import Any

from llama_cpp.llama_grammar import PRIMITIVE_RULES, SchemaConverter

from llmos_shell.kernel import regex_private
# Python's own regex parser: a pattern means here what it means to jsonschema's `re`
from llmos_shell.kernel.regex_private import constants as _sre
from llmos_shell.syscalls import SyscallTable

log = logging.getLogger("llmos.grammar")

CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"
# Most calls in one step: without a bound, small models repeat the same call until the token limit.
MAX_PARALLEL_CALLS = 5

# Bounds past which a count is dropped from the grammar (llama.cpp expands {m,n} into rules).
MAX_COUNT = 64
MAX_LENGTH = 1000

_ANY = {"x-llmos": "any"}  # any JSON value (the converter would make an empty schema an object)
# What makes the converter build something other than "any value".
_SHAPING = frozenset({"type", "enum", "const", "properties", "additionalProperties", "items", "prefixItems",
                      "anyOf", "oneOf", "allOf", "pattern", "$ref"})
_KEPT = frozenset({"type", "enum", "const", "required", "pattern", "format", "minLength", "maxLength",
                   "minItems", "maxItems"})
_CONVERTER_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})


class _Prepared:
    """A copy of one syscall's parameters for the converter, with its ``$ref`` targets as
    ``$defs`` named ``<prefix>-ref<n>``, and notes on what was loosened."""

    def __init__(self, root: Any, prefix: str, notes: list[str]) -> None:
        from referencing import Registry
        from referencing.jsonschema import DRAFT202012

        self.prefix = prefix
        self.notes = notes
        self.defs: dict[str, Any] = {}
        self._names: dict[str, str] = {}
        self._resolver = None
        if isinstance(root, dict):
            resource = DRAFT202012.create_resource(root)
            self._resolver = Registry().with_resource("urn:llmos:p", resource).resolver("urn:llmos:p")
        self.schema = self.node(root)

    def loosen(self, what: str) -> dict:
        self.notes.append(what)
        return _ANY

    def node(self, schema: Any) -> dict:
        if schema is True:
            return _ANY
        if not isinstance(schema, dict):
            return self.loosen(f"a {type(schema).__name__} schema")
        if "$ref" in schema:
            name = self.ref(schema["$ref"])
            return {"$ref": f"#/$defs/{name}"} if name else self.loosen(f"$ref {schema['$ref']!r}")
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                # a property whose schema is false must not appear: leaving it out says so
                out[key] = {k: self.node(v) for k, v in value.items() if v is not False and v != {"not": {}}}
            elif key == "additionalProperties":
                out[key] = value if isinstance(value, bool) else self.node(value)
            elif key == "items" and isinstance(value, (dict, bool)):
                if value is False or value == {"not": {}}:
                    out["maxItems"] = 0
                else:
                    out[key] = self.node(value)
            elif key in ("anyOf", "oneOf", "prefixItems", "allOf") and isinstance(value, list):
                out[key] = [self.node(v) for v in value]
            elif key in ("maxItems", "maxLength") and isinstance(value, int):
                if value <= (MAX_COUNT if key == "maxItems" else MAX_LENGTH):
                    out[key] = value
            elif key in ("minItems", "minLength") and isinstance(value, int):
                if value <= (MAX_COUNT if key == "minItems" else MAX_LENGTH):
                    out[key] = value
                else:
                    self.notes.append(f"{key} {value}")
            elif key == "format" and isinstance(value, str):
                if value in _CONVERTER_FORMATS:
                    out[key] = value
            elif key in _KEPT:
                out[key] = value
            elif key == "not" and value != {}:
                self.notes.append("not")
        if "allOf" in out:  # the converter merges objects' properties, and nothing else
            if not all(self._has_properties(member) for member in out["allOf"]):
                self.notes.append("allOf")
                del out["allOf"]
            elif any(k in out for k in ("anyOf", "oneOf", "properties")):
                del out["allOf"]  # it would take one of the two: keep the other, looser
                self.notes.append("allOf beside other keywords")
        if isinstance(out.get("type"), list):
            types = out.pop("type")
            if not types:
                return self.loosen("an empty list of types")
            if len(types) == 1:
                out["type"] = types[0]
            elif not any(k in out for k in ("anyOf", "oneOf", "enum", "const")):
                # one branch per type, each with the keywords that apply to it
                return {"anyOf": [{**out, "type": t} for t in types]}
        if not _SHAPING & out.keys():  # e.g. only a description, or only string keywords: any value
            return _ANY
        return out

    def _has_properties(self, member: dict) -> bool:
        if "$ref" in member:
            member = self.defs.get(member["$ref"].rsplit("/", 1)[-1], {})
        return isinstance(member.get("properties"), dict)

    def ref(self, ref: Any) -> str | None:
        if not isinstance(ref, str) or self._resolver is None:
            return None
        if ref not in self._names:
            try:
                target = self._resolver.lookup(ref).contents
            except Exception:  # referencing's Unresolvable, or a malformed pointer
                return None
            name = self._names[ref] = f"{self.prefix}-ref{len(self._names)}"
            self.defs[name] = {}  # recursion: the name exists before its definition is built
            self.defs[name] = self.node(target)
        return self._names[ref]


# --- pattern -> GBNF -------------------------------------------------------------------------

_JSON_SPECIAL = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]  # written escaped inside a JSON string
_SAFE_CHAR = r'[^"\\\x00-\x1F]'
_CATEGORIES = {
    _sre.CATEGORY_DIGIT: [(0x30, 0x39)],
    _sre.CATEGORY_WORD: [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    _sre.CATEGORY_SPACE: [(0x09, 0x0D), (0x20, 0x20)],
}
_NEGATED = {_sre.CATEGORY_NOT_DIGIT: _sre.CATEGORY_DIGIT, _sre.CATEGORY_NOT_WORD: _sre.CATEGORY_WORD,
            _sre.CATEGORY_NOT_SPACE: _sre.CATEGORY_SPACE}


class UnsupportedPattern(ValueError):
    """A regex construct a grammar cannot express (lookaround, backreference, flags)."""


def pattern_rule(pattern: str) -> str:
    """A GBNF body for the JSON strings (quotes included) that ``re.search(pattern, s)`` accepts."""
    parsed = regex_private.parse(pattern)
    if parsed.state.flags & (re.IGNORECASE | re.MULTILINE):
        raise UnsupportedPattern("regex flags")
    items = list(parsed)
    starts = bool(items) and items[0] in ((_sre.AT, _sre.AT_BEGINNING), (_sre.AT, _sre.AT_BEGINNING_STRING))
    ends = bool(items) and items[-1] in ((_sre.AT, _sre.AT_END), (_sre.AT, _sre.AT_END_STRING))
    core = items[int(starts):len(items) - int(ends)]
    body = [] if starts else [f"{_SAFE_CHAR}*"]
    body += [_sequence(core)] + ([] if ends else [f"{_SAFE_CHAR}*"])
    return '"\\"" ' + " ".join(part for part in body if part) + ' "\\""'


def _sequence(items) -> str:
    return " ".join(_regex_node(op, av) for op, av in items)


def _regex_node(op, av) -> str:
    if op is _sre.LITERAL:
        return _json_literal(chr(av))
    if op is _sre.NOT_LITERAL:
        return _char_class([(av, av)], negate=True)
    if op is _sre.ANY:
        return _SAFE_CHAR
    if op is _sre.IN:
        return _in(av)
    if op is _sre.BRANCH:
        return "(" + " | ".join(_sequence(branch) for branch in av[1]) + ")"
    if op is _sre.SUBPATTERN:
        _group, add_flags, _del_flags, items = av
        if add_flags & (re.IGNORECASE | re.MULTILINE):
            raise UnsupportedPattern("regex flags")
        return "(" + _sequence(items) + ")"
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None)):
        low, high, items = av
        if low > MAX_LENGTH:
            raise UnsupportedPattern(f"a repeat of {low}")
        inner = "(" + _sequence(items) + ")"
        if high is _sre.MAXREPEAT or high > MAX_LENGTH:
            return inner + ("*" if low == 0 else "+" if low == 1 else f"{{{low},}}")
        if (low, high) == (0, 1):
            return inner + "?"
        return inner + (f"{{{low}}}" if low == high else f"{{{low},{high}}}")
    raise UnsupportedPattern(f"regex construct {op}")


def _in(members) -> str:
    negate = bool(members) and members[0][0] is _sre.NEGATE
    ranges: list[tuple[int, int]] = []
    for op, av in members[int(negate):]:
        if op is _sre.LITERAL:
            ranges.append((av, av))
        elif op is _sre.RANGE:
            ranges.append(av)
        elif op is _sre.CATEGORY and av in _CATEGORIES:
            ranges += _CATEGORIES[av]
        elif op is _sre.CATEGORY and av in _NEGATED and len(members) == 1:
            return _char_class(_CATEGORIES[_NEGATED[av]], negate=True)
        else:
            raise UnsupportedPattern(f"character class member {op}")
    return _char_class(ranges, negate=negate)


def _char_class(ranges: list[tuple[int, int]], *, negate: bool) -> str:
    """Characters in (or, negated, not in) ``ranges``, as they are written in a JSON string."""
    if negate:  # anything else that is written as itself
        return "[^" + "".join(_class_range(r) for r in ranges + _JSON_SPECIAL) + "]"
    plain, escaped = _split(ranges)
    options = (["[" + "".join(_class_range(r) for r in plain) + "]"] if plain else [])
    options += [_json_literal(chr(c)) for c in escaped]
    if not options:
        raise UnsupportedPattern("an empty character class")
    return options[0] if len(options) == 1 else "(" + " | ".join(options) + ")"


def _split(ranges: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[int]]:
    """Ranges without JSON's special characters, and those special characters (written escaped)."""
    plain: list[tuple[int, int]] = []
    escaped: set[int] = set()
    for low, high in ranges:
        for special_low, special_high in _JSON_SPECIAL:
            escaped.update(range(max(low, special_low), min(high, special_high) + 1))
        cuts = sorted(c for c in escaped if low <= c <= high)
        start = low
        for cut in cuts:
            if start < cut:
                plain.append((start, cut - 1))
            start = cut + 1
        if start <= high:
            plain.append((start, high))
    return plain, sorted(escaped)


def _class_range(bounds: tuple[int, int]) -> str:
    low, high = bounds
    return _class_char(low) if low == high else f"{_class_char(low)}-{_class_char(high)}"


def _class_char(code: int) -> str:
    return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def _json_literal(text: str) -> str:
    """A GBNF literal for ``text`` as it is written inside a JSON string."""
    written = json.dumps(text, ensure_ascii=False)[1:-1]
    return '"' + written.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the converter -----------------------------------------------------------------------------

class _Converter(SchemaConverter):
    """llama-cpp-python's converter, loosening any part it fails on instead of failing whole."""

    def __init__(self, notes: list[str]) -> None:
        super().__init__(prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False,
                         raw_pattern=False)
        self.notes = notes

    def visit(self, schema, name):
        if schema == _ANY:
            return self._add_primitive("value", PRIMITIVE_RULES["value"])
        try:
            return super().visit(schema, name)
        except (AssertionError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            self.notes.append(f"{_brief(schema)} ({type(error).__name__}: {str(error)[:80]})")
            return self._add_rule(name or "root", self._loose(schema))

    def _loose(self, schema) -> str:
        """Any value of the schema's declared type(s); any value at all without one."""
        kinds = schema.get("type") if isinstance(schema, dict) else None
        kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
        kinds = [k for k in kinds if k in PRIMITIVE_RULES] or ["value"]
        return " | ".join(self._add_primitive(k, PRIMITIVE_RULES[k]) for k in kinds)

    def _format_literal(self, literal):
        # The converter leaves backslashes unescaped: a constant or a property name holding one
        # would end its literal early.
        return '"' + literal.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
            .replace("\r", "\\r") + '"'

    def _visit_pattern(self, pattern, name):
        return self._add_rule(name, pattern_rule(pattern) + " space")


def _brief(schema: Any) -> str:
    text = json.dumps(schema, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:79] + "…"


_RULE_REFERENCE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_NOT_A_REFERENCE = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[0-9, ]*\}|#[^\n]*')


def _undefined_rules(gbnf: str) -> set[str]:
    """Rule names used in ``gbnf`` but never defined (a converter bug would make llama.cpp reject it)."""
    defined, used = set(), set()
    for line in gbnf.splitlines():
        if "::=" not in line:
            continue
        head, body = line.split("::=", 1)
        defined.add(head.strip())
        used.update(_RULE_REFERENCE.findall(_NOT_A_REFERENCE.sub(" ", body)))
    return used - defined


def _convert(syscalls: list[tuple[str, Any]], notes: list[str], loose: bool) -> str:
    options, defs = [], {}
    for index, (name, parameters) in enumerate(syscalls):
        if loose:
            arguments: Any = {"type": "object"}
        else:
            prepared = _Prepared(parameters, f"f{index}", notes)
            arguments = prepared.schema if prepared.schema != _ANY else {"type": "object"}
            defs.update(prepared.defs)
        options.append({"type": "object", "properties": {"name": {"const": name}, "arguments": arguments},
                        "required": ["name", "arguments"], "additionalProperties": False})
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"oneOf": options}
    if defs:
        schema = {**schema, "$defs": defs}
    converter = _Converter(notes)
    converter.visit(converter.resolve_refs(schema, "syscalls"), "call")
    rules = _strings_as_json(converter.format_grammar())
    grammar = "root ::= call\n" + rules
    missing = _undefined_rules(grammar)
    if missing:
        raise ValueError(f"rules used but not defined: {sorted(missing)}")
    return grammar


# The converter's string rules, and what they become: no raw control characters (JSON forbids
# them), and at most two newlines in a row. Greedy decoding can fall into a loop of one token;
# newlines are where the 0.5B model did ("Add eggs to my list": "eggs\n\n\n..." for 512
# tokens), and no argument needs a third blank line.
_CONVERTER_CHAR = 'char ::= [^"\\\\] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
_CONVERTER_STRING = 'string ::= "\\"" char* "\\"" space'
_JSON_CHAR = 'char ::= [^"\\\\\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
_JSON_STRING = ('string ::= "\\"" (line-char | newline line-char | newline newline line-char)* '
                '(newline newline?)? "\\"" space\n'
                'line-char ::= [^"\\\\\\x00-\\x1F] | "\\\\" (["\\\\/bfrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])\n'
                'newline ::= "\\\\n"')


def _strings_as_json(rules: str) -> str:
    """The converter's rules with JSON's string characters, and free strings (no length or
    pattern of their own) without a third newline in a row."""
    rules = rules.replace(_CONVERTER_CHAR, _JSON_CHAR)
    return rules.replace(_CONVERTER_STRING, _JSON_STRING)


@lru_cache(maxsize=64)
def _grammar(syscalls_json: str) -> str:
    syscalls = json.loads(syscalls_json)
    names = ", ".join(name for name, _ in syscalls)
    notes: list[str] = []
    try:
        grammar = _convert(syscalls, notes, loose=False)
    except Exception:  # a converter bug must not cost the call: any object as arguments, still validated
        log.exception("grammar for %s: falling back to any JSON object as arguments", names)
        return _convert(syscalls, [], loose=True)
    if notes:  # once per table (this function is cached)
        log.info("grammar for %s: decoding is looser than the schema for %s; arguments are validated "
                 "against the schema itself", names, "; ".join(dict.fromkeys(notes)))
    return grammar


def call_grammar(table: SyscallTable) -> str:
    """GBNF for one call of one of the syscalls in ``table``."""
    if not len(table):
        raise ValueError("no syscalls to call")
    # keep the declared parameter order
    return _grammar(json.dumps([[syscall.name, syscall.parameters] for syscall in table]))


def parse_call(text: str) -> dict:
    """The call in one grammar-constrained JSON object."""
    call = json.loads(text)
    return {"name": call["name"], "arguments": call.get("arguments", {})}


def call_blocks(text: str) -> list[str]:
    """The JSON text of each ``<tool_call>`` block in ``text``."""
    blocks = (block.replace(CALL_CLOSE.strip(), "").strip() for block in text.split(CALL_OPEN.strip()))
    return [block for block in blocks if block]


def write_calls(calls: list[dict]) -> str:
    """The calls as the model's turn shows them: ``<tool_call>`` blocks, one per line."""
    return "\n".join(CALL_OPEN + json.dumps(call, ensure_ascii=False) + CALL_CLOSE for call in calls)


@lru_cache(maxsize=32)
def _value_grammar(schema_json: str) -> str:
    notes: list[str] = []
    prepared = _Prepared(json.loads(schema_json), "r", notes)
    schema = prepared.schema
    if prepared.defs:
        schema = {**schema, "$defs": prepared.defs}
    converter = _Converter(notes)
    converter.visit(converter.resolve_refs(schema, "reply"), "reply")
    rules = _strings_as_json(converter.format_grammar())
    grammar = "root ::= reply\n" + rules
    missing = _undefined_rules(grammar)
    if missing:
        raise ValueError(f"rules used but not defined: {sorted(missing)}")
    if notes:
        log.info("reply grammar: looser than the schema for %s", "; ".join(dict.fromkeys(notes)))
    return grammar


def value_grammar(schema: Any) -> str:
    """GBNF for one JSON value that fits ``schema``: a reply an API client asked to be JSON
    (``response_format``). What the converter cannot express is decoded looser, as for calls."""
    return _value_grammar(json.dumps(schema, sort_keys=True))
