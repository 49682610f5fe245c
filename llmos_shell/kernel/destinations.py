"""The destination is the destination: which paths a request reads, and which it stores to.

"Summarise /docs/license.txt and save the summary to /notes/summary.txt" names
two paths. Offered both, a small model stores the summary over the licence. So
the kernel reads the request's own grammar: a path after a verb that keeps
something ("save", "write", "put", "store", "copy", "translate"...) and one of
the prepositions that say where ("to", "into", "in", "as", "under", "called")
is a *destination*, asked for by name; so is one after "overwrite", "replace",
"update". A path that does not exist yet can only be written: it is a
destination too. Every other path is something to read. Paths listed together
("/a.txt, /b.txt and /c.txt") share the role of the first.

:func:`store_choices` then gives a step that stores the paths it may write:
the destinations, and never a file an earlier step of the request read unless
the request named it as where to store (the user asked for it to be replaced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from llmos_shell.errors import LlmosError
from llmos_shell.fs.paths import normalise
from llmos_shell.kernel.language import WORDS
from llmos_shell.kernel.places import PATH

@dataclass(frozen=True)
class Roles:
    """The paths of one request, in order, and which of them are where to store."""

    paths: tuple[str, ...] = ()
    #: named as where to store ("save ... to X", "overwrite X"): writing there is what was asked
    asked: frozenset[str] = frozenset()
    #: ``asked``, and the named paths that did not exist when the request came
    destinations: frozenset[str] = frozenset()

    def is_destination(self, path: str) -> bool:
        return _normal(path) in self.destinations

    def is_asked(self, path: str) -> bool:
        return _normal(path) in self.asked


def _normal(path: str) -> str | None:
    try:
        return normalise(path)
    except LlmosError:
        return None


def roles(request: str, exists: Callable[[str], bool]) -> Roles:
    """Which paths of ``request`` are destinations. ``exists(path)``: is there a file or folder there now?"""
    masked = WORDS.quoted.sub(lambda m: "x" * len(m.group(0)), request)   # quoted text is data, not grammar
    quoted = [m.span() for m in WORDS.quoted.finditer(request)]
    starts = [0] + [m.end() for m in WORDS.clause.finditer(masked)]
    paths: list[str] = []
    asked: set[str] = set()
    previous_end, previous_asked = None, False
    for match in PATH.finditer(request):
        path = _normal(match.group(0))
        if path is None or any(start <= match.start() < end for start, end in quoted):
            continue   # a path inside quoted text is part of the text
        clause_start = max(s for s in starts if s <= match.start())
        if previous_end is not None and WORDS.listed.match(masked[previous_end:match.start()]):
            is_asked = previous_asked
        else:
            before = masked[max(clause_start, previous_end or 0):match.start()]
            clause = masked[clause_start:match.start()]
            is_asked = bool(WORDS.replaces.search(before)
                            or (WORDS.where.search(before) and WORDS.keeps.search(clause)))
        if is_asked:
            asked.add(path)
        if path not in paths:
            paths.append(path)
        previous_end, previous_asked = match.end(), is_asked
    new = {p for p in paths if not exists(p)}
    return Roles(tuple(paths), frozenset(asked), frozenset(asked | new))


def store_choices(roles: Roles, read: Iterable[str]) -> list[str]:
    """The named paths a step that stores may write to: the destinations if any, else the paths no
    earlier step read. A path an earlier step read is offered only if the request asked to store there."""
    read = {p for p in (_normal(r) for r in read) if p}
    allowed = [p for p in roles.paths if p not in read or p in roles.asked]
    return [p for p in allowed if p in roles.destinations] or allowed
