"""Paths of the SQLite filesystem: normalised POSIX paths under ``/``.

Every path the filesystem stores or looks up goes through :func:`normalise`:

* relative paths are taken from ``cwd`` (default ``/``);
* empty segments and ``.`` are dropped, ``..`` goes up one level and never
  above the root (``/../../etc`` is ``/etc`` *inside* the filesystem);
* names are Unicode NFC, so a composed and a decomposed ``é`` are one file;
* NUL and other control characters (C0, C1 such as U+0085, and bidi controls
  such as U+202E), text that is not valid Unicode, names
  longer than :data:`MAX_NAME_BYTES` and paths longer than :data:`MAX_PATH_CHARS`
  are refused with :class:`~llmos_shell.errors.UsageError`.

The result always starts with ``/``, never ends with ``/`` (except the root),
and has no empty, ``.`` or ``..`` segment.
"""

from __future__ import annotations

import re
import unicodedata

from llmos_shell.errors import UsageError

ROOT = "/"
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
MAX_FILE_BYTES = 512 * 1024 * 1024   # the largest file the tree holds
MAX_DEPTH = 256

# C0 and C1 controls (U+0085 is a newline), and the bidi controls that make a name show as another
# (U+202E turns "txt.exe" around): none belongs in a file name.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# An absolute ASCII path that is already normal: no empty, "." or ".." segment, no
# control character, names of at most 255 bytes. Most paths are; they skip the slow path.
_NORMAL_ASCII = re.compile(r"(?:/(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f]{1,255})+")


def normalise(path: str, cwd: str = ROOT) -> str:
    """Return the normalised absolute form of ``path``, relative ones taken from ``cwd``.

    >>> normalise("notes/../a.txt", cwd="/home")
    '/home/a.txt'
    >>> normalise("/../../etc//passwd")
    '/etc/passwd'
    """
    if not isinstance(path, str):
        raise UsageError(f"a path must be text, not {type(path).__name__}")
    if path == "":
        raise UsageError("empty path")
    if (path.isascii() and len(path) <= MAX_PATH_CHARS and _NORMAL_ASCII.fullmatch(path)
            and path.count("/") <= MAX_DEPTH):
        return path
    if len(path) > MAX_PATH_CHARS:
        raise UsageError(f"path longer than {MAX_PATH_CHARS} characters")
    if not path.startswith("/"):
        cwd = normalise(cwd) if cwd != ROOT else ROOT
        path = cwd.rstrip("/") + "/" + path
    _check_text(path)
    path = unicodedata.normalize("NFC", path)
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        if len(segment.encode("utf-8")) > MAX_NAME_BYTES:
            raise UsageError(f"file name longer than {MAX_NAME_BYTES} bytes: {segment[:40]}…")
        parts.append(segment)
    if len(parts) > MAX_DEPTH:
        raise UsageError(f"path deeper than {MAX_DEPTH} directories")
    result = "/" + "/".join(parts)
    if len(result) > MAX_PATH_CHARS:
        raise UsageError(f"path longer than {MAX_PATH_CHARS} characters")
    return result


def _check_text(path: str) -> None:
    match = _CONTROL.search(path)
    if match:
        raise UsageError(f"path contains a control character (U+{ord(match.group()):04X}): "
                         f"{path[:80].encode('unicode_escape').decode('ascii')!r}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"path is not valid Unicode: {path[:80]!r}") from None


def parent(path: str) -> str:
    """The parent of a normalised path (the root is its own parent)."""
    if path == ROOT:
        return ROOT
    head = path.rsplit("/", 1)[0]
    return head or ROOT


def basename(path: str) -> str:
    """The last segment of a normalised path ('' for the root)."""
    return path.rsplit("/", 1)[1] if path != ROOT else ""


def join(directory: str, name: str) -> str:
    """Join a normalised directory and one name."""
    return directory.rstrip("/") + "/" + name


def is_within(path: str, directory: str) -> bool:
    """True if ``path`` is ``directory`` or below it (both normalised)."""
    return directory == ROOT or path == directory or path.startswith(directory + "/")


def subtree_bounds(directory: str) -> tuple[str, str]:
    """``(low, high)`` such that the strict descendants of ``directory`` are exactly the
    paths ``p`` with ``low < p < high`` (binary collation): a range scan on the path index."""
    prefix = "/" if directory == ROOT else directory + "/"
    return prefix, prefix[:-1] + "0"  # '0' is the character after '/'


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob: ``*`` and ``?`` stay inside one segment, ``**`` crosses
    segments (``**/`` matches zero or more directories), ``[abc]``/``[!abc]`` are classes."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape("["))
                i += 1
                continue
            body = pattern[i + 1:end]
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            body = "".join("\\" + ch if ch in "\\^[]&~|" else ch for ch in body)
            out.append(f"[^/{body}]" if negate else f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as error:
        raise UsageError(f"bad glob pattern {pattern!r}: {error}") from None


def safe_host_name(name: str) -> bool:
    """True if ``name`` can be one segment of a host path without leaving its directory."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name
            and len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES)
