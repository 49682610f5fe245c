"""Whose path is it: the llmos filesystem's (SQLite) or the host machine's?

A request names paths. ``/notes/todo.txt`` is a file of the llmos filesystem,
which the bundled file syscalls (``reads_fs``, ``writes_fs``) work on.
``~/data``, ``/home/ann/report.txt`` or a path inside a folder an MCP server
was given (``mcp-server-filesystem /srv/photos``) is the host's: only a
syscall that reaches that place can take it (a syscall's ``places``, see
hookspecs). A path that exists in the llmos filesystem is always llmos's,
whatever it looks like (``/home/router.txt`` put there by a user).
"""

from __future__ import annotations

import os
import re
from typing import Callable, Iterable

from llmos_shell.fs.mime import guess_from_name

# Something that looks like an absolute path ("/inputs/report.txt"), not a fraction, a date or the
# tail of a home path ("~/data" is not "/data").
PATH = re.compile(r"(?<![\w.:/~])/[\w.\-/]*[\w/]")
# A path in the user's home on the host: "~/data", "~/notes/x.txt", "~".
HOME_PATH = re.compile(r"(?<![\w.:/~])~(?:/[\w.\-/]*[\w/])?(?![\w~])")
# Either kind, in the order they are written.
ANY_PATH = re.compile(f"{HOME_PATH.pattern}|{PATH.pattern}")
# A user's home on the host (Linux, macOS) or something in it: "/home/ann", "/Users/ann/x.txt";
# not "/home/hi.txt", a file an llmos user may keep in the llmos filesystem's /home.
HOST_HOME = re.compile(r"^/(?:home|Users)/(?:[^/]+/|[^/.]+/?$)")
# An argument of an MCP server that is a host path it was given ("/srv/photos", "~/data"): no
# spaces, no "=" or quotes (a script's text, an option's value glued to its name).
PLACE_ARGUMENT = re.compile(r"^(?:~|/)[^\s=\"'\\,;]*$")
# Words of a parameter's name that say it takes a path ("path", "file_path", "repoPath", "source").
PATH_WORDS = frozenset("path paths file files filename folder dir directory source destination".split())

KindOf = Callable[[str], "str | None"]


def named_paths(text: str) -> list[str]:
    """The paths a text names, both kinds, in order."""
    return ANY_PATH.findall(text)


def expand(path: str) -> str:
    """An absolute host path ("~" is the user's home), without a trailing slash."""
    return os.path.normpath(os.path.expanduser(path))


def inside(path: str, folder: str) -> bool:
    """Is ``path`` the folder itself or something in it (on the host)?"""
    path, folder = expand(path), expand(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def is_host(path: str, kind_of: KindOf, places: Iterable[str]) -> bool:
    """Is ``path`` the host's? ``kind_of``: what is at an llmos path (None: nothing);
    ``places``: the host folders the syscalls reach."""
    if path.startswith("~"):
        return True
    if kind_of(path) is not None:
        return False
    return bool(HOST_HOME.match(path)) or any(inside(path, place) for place in places)


def host_kind(path: str) -> str | None:
    """What a host path names, from its name alone (llmos cannot look): a folder when it has no
    extension."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return guess_from_name(name) or ("inode/directory" if "." not in name else None)


def places_in(arguments: Iterable[str]) -> tuple[str, ...]:
    """The host paths a server's command-line arguments give it (``--repository /home/me/x``,
    ``/srv/photos``): the places its tools reach."""
    return tuple(dict.fromkeys(a.rstrip("/") or "/" for a in arguments if PLACE_ARGUMENT.match(a)))


def takes_a_path(parameters: dict) -> bool:
    """Does a schema have a parameter that takes a path (by its name)?"""
    for name in parameters.get("properties", {}):
        words = re.split(r"[_\-\s]+|(?<=[a-z])(?=[A-Z])", name)
        if PATH_WORDS & {w.lower() for w in words}:
            return True
    return False
