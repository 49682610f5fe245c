"""Is a further call asked for? Its new argument values must come from the user's words.

Small models end their turn after one tool call even when the request asks
for several ("play Taylor Swift for 20 minutes and Maroon 5 for 15"), and
when pushed to write another call they invent one. So the kernel has the model
write a candidate next call of the same syscall and keeps it only if it is
*grounded*: the values that make it differ from the calls already made (the
new artist, the new duration) all appear in the request or in this turn's
syscall results. A call that only changes a flag, or changes a value to
something nobody said, is the model's invention and ends the step.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(%?)")
_WORD = re.compile(r"[^\W_]+")


class Source:
    """The text that values may be taken from, indexed for lookups."""

    def __init__(self, texts: Iterable[str]) -> None:
        text = "\n".join(texts)
        self.text = text.lower()
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

    def has_string(self, value: str) -> bool:
        """The value's words, in order, as whole words of the text ("ancient empire" is not
        in "ancient empires"); case and spacing aside."""
        words = _WORD.findall(value.lower())
        if not words:
            return False
        phrase = r"\W+".join(re.escape(word) for word in words)
        return re.search(rf"(?<![^\W_]){phrase}(?![^\W_])", self.text) is not None


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def new_values(call: dict, earlier: list[dict]) -> list[Any]:
    """The values in ``call``'s arguments (list items one by one) that no earlier call had for the
    same parameter."""
    out = []
    for key, value in call["arguments"].items():
        seen = [leaf for previous in earlier for leaf in _leaves(previous["arguments"].get(key))]
        out.extend(leaf for leaf in _leaves(value) if leaf not in seen)
    return out


def grounded(call: dict, earlier: list[dict], source: Source) -> bool:
    """True if ``call`` brings new values, all of them found in ``source``."""
    # a flag cannot be checked against words
    checkable = [leaf for leaf in new_values(call, earlier) if not isinstance(leaf, bool) and leaf is not None]
    if not checkable:
        return False  # the same call again, or only a flag changed
    for leaf in checkable:
        if isinstance(leaf, (int, float)):
            if not source.has_number(float(leaf)):
                return False
        elif not source.has_string(str(leaf)):
            return False
    return True
