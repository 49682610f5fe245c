"""Is a further call asked for? Its new argument values must come from the user's words.

Small models end their turn after one tool call even when the request asks
for several ("play Taylor Swift for 20 minutes and Maroon 5 for 15"), and
when pushed to write another call they invent one. So the kernel has the model
write a candidate next call of the same syscall and keeps it only if it is
*grounded*: the values that make it differ from the calls already made (the
new artist, the new duration) all appear in the request or in this turn's
syscall results. A call that only changes a flag, or changes a value to
something nobody said, is the model's invention and ends the step.

The same test trims every call: small models fill optional arguments with
plausible values nobody asked for (a team for "LeBron James' career stats",
"Lunch" for a recipe's calories) and pad lists with the enum's other members
(all four amenities when the user asked for a patio). ``without_inventions``
gives such an argument back to its default and drops such list items.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

import jsonschema

from llmos_shell.kernel.language import WORDS

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(%?)")
_WORD = re.compile(r"[^\W_]+")
_DIGITS_MEET_LETTERS = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")
_NO_DEFAULT = object()


class Source:
    """The text that values may be taken from, indexed for lookups."""

    def __init__(self, texts: Iterable[str]) -> None:
        text = "\n".join(texts)
        self.text = _words_apart(text.lower())
        self.numbers: list[float] = []
        for match in _NUMBER.finditer(text):
            digits = match.group(0).rstrip("%").replace(",", "")
            try:
                value = float(digits)
            except ValueError:
                continue
            self.numbers.append(value)
            if match.group(1):  # "5%" also stands for 0.05
                self.numbers.append(value / 100)

    def has_number(self, value: float) -> bool:
        return any(math.isclose(value, number, rel_tol=1e-9, abs_tol=1e-12) for number in self.numbers)

    def has_string(self, value: str, *, inflected: bool = False) -> bool:
        """The value's words, in order, as whole words of the text ("ancient empire" is not
        in "ancient empires"); case and spacing aside, and a number and its unit are two words
        ("5cm"). ``inflected`` lets each word carry a short ending ("child" in "children") or drop
        a plural "s"."""
        words = _WORD.findall(_words_apart(value.lower()))
        if not words:
            return False
        if inflected:  # a plural either way: "adult" in "adults", "guitars" in "guitar shop"
            words = [WORDS.without_plural(word) for word in words]
        ending = WORDS.inflection if inflected else ""
        phrase = r"\W+".join(re.escape(word) + (ending if word[-1].isalpha() else "") for word in words)
        return re.search(rf"(?<![^\W_]){phrase}(?![^\W_])", self.text) is not None

    def has(self, value: Any, *, inflected: bool = False) -> bool:
        """Was this value said? Flags and nulls cannot be checked against words: they count as said."""
        if isinstance(value, bool) or value is None:
            return True
        if isinstance(value, (int, float)):
            return self.has_number(float(value))
        if isinstance(value, str):
            return self.has_string(value, inflected=inflected)
        return True  # objects: too many ways to say one


def _words_apart(text: str) -> str:
    return _DIGITS_MEET_LETTERS.sub(" ", text)


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _is_default(parameters: dict, key: str, value: Any) -> bool:
    """Is ``value`` the declared default of parameter ``key``? Then it says nothing either way."""
    return value == parameters.get("properties", {}).get(key, {}).get("default", _NO_DEFAULT)


def _new_leaves(call: dict, earlier: list[dict]) -> Iterable[tuple[Any, list[Any]]]:
    """Each value in ``call``'s arguments (list items one by one) that no earlier call had for the
    same parameter, with the values earlier calls had for it."""
    for key, value in call["arguments"].items():
        seen = [leaf for previous in earlier for leaf in _leaves(previous["arguments"].get(key))]
        for leaf in _leaves(value):
            if leaf not in seen:
                yield leaf, seen


def new_values(call: dict, earlier: list[dict]) -> list[Any]:
    """The values in ``call``'s arguments (list items one by one) that no earlier call had for the
    same parameter."""
    return [leaf for leaf, _seen in _new_leaves(call, earlier)]


def _variant(value: str, seen: list[Any]) -> bool:
    """Is ``value`` a piece or an extension of an earlier value ("2021" of "2020-2021", "Like New"
    of "New")? Then the model is rephrasing one thing, not naming a second one."""
    others = [str(other) for other in seen if isinstance(other, str)]
    return Source(others).has_string(value) or any(Source([value]).has_string(other) for other in others)


def _values(call: dict) -> list[str]:
    return sorted(repr(leaf) for leaf in _leaves(call["arguments"]))


def grounded(call: dict, earlier: list[dict], source: Source) -> bool:
    """True if ``call`` brings new values, all of them found in ``source``, none of them a
    variant of what an earlier call had for the same parameter, and not just an earlier call's
    values rearranged."""
    # a flag cannot be checked against words
    checkable = [(leaf, seen) for leaf, seen in _new_leaves(call, earlier)
                 if not isinstance(leaf, bool) and leaf is not None]
    if not checkable:
        return False  # the same call again, or only a flag changed
    if any(_values(call) == _values(previous) for previous in earlier):
        return False  # the same values swapped between parameters (team1 and team2 the other way round)
    return all(source.has(leaf) and not (isinstance(leaf, str) and _variant(leaf, seen)) for leaf, seen in checkable)


def refines(call: dict, earlier: dict) -> bool:
    """True if ``call`` is ``earlier`` with more arguments (the same syscall, the same values)."""
    return (call["name"] == earlier["name"] and len(call["arguments"]) > len(earlier["arguments"])
            and all(call["arguments"].get(key, _NO_DEFAULT) == value for key, value in earlier["arguments"].items()))


def repeats(call: dict, earlier: list[dict], parameters: dict) -> bool:
    """True if every value of ``call`` was already an argument of an earlier call (of any syscall):
    a call that can only bring back what the turn already has (``read_file`` of the file just
    summarised, ``search_files`` for its name). Arguments given their declared default say nothing."""
    said = Source(str(leaf) for previous in earlier for leaf in _leaves(previous["arguments"]))
    values = [value for key, value in call["arguments"].items() if not _is_default(parameters, key, value)]
    return all(said.has(leaf) for leaf in _leaves(values))  # flags and nulls count as said


def all_said(call: dict, parameters: dict, source: Source) -> bool:
    """True if every value of ``call`` (list items and nested fields one by one) was said in
    ``source`` or is its parameter's declared default: a call the request fully spells out."""
    return all(_is_default(parameters, key, value)
               or all(source.has(leaf, inflected=True) for leaf in _leaves(value))
               for key, value in call["arguments"].items())


def without_inventions(call: dict, parameters: dict, source: Source) -> dict:
    """``call`` with the values nobody said taken out, where the schema allows it.

    Only clear inventions go: a value counts as said even with a short ending ("adult" for
    "adults"). An optional argument whose value is not in ``source`` (and is not its declared
    default) is left out; a list keeps only its items that were said (if that still fits its
    schema), and an optional list none of whose items were said is left out. Required scalars
    stay as they are: the call needs them."""
    properties = parameters.get("properties", {})
    required = set(parameters.get("required", []))
    arguments = {}
    for key, value in call["arguments"].items():
        prop = properties.get(key, {})
        if isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
            said = [item for item in value if source.has(item, inflected=True)]
            if not said and key not in required and value:
                continue
            if said and jsonschema.Draft202012Validator(prop).is_valid(said):
                value = said
        elif (key not in required and not source.has(value, inflected=True)
              and not _is_default(parameters, key, value)):
            continue
        arguments[key] = value
    if arguments == call["arguments"] or not jsonschema.Draft202012Validator(parameters).is_valid(arguments):
        return call
    return {**call, "arguments": arguments}
