"""The bridge to the host's files: import into the tree, export out of it.

Both directions follow ``cp``: a destination that is an existing directory
receives the source under its own name; any other destination is the new
file's (or folder's) own path, and its parent must already exist.

Import reads regular files and folders (symbolic links, sockets, devices and
FIFOs inside a folder are skipped and reported, never followed or read).

Export never writes outside the host directory the user named:

* every name written is checked to be one plain segment (no ``..``, ``.``,
  ``/``, NUL or empty name), even if the database was edited by hand; the
  whole export is checked before anything is written;
* directories are walked with file descriptors (``openat`` with
  ``O_NOFOLLOW | O_DIRECTORY``), so an existing symlink in the way is refused
  rather than followed, and nothing can swap a directory for a link mid-way;
* files are written to a temporary name and renamed into place, so an existing
  link (symbolic or hard) at the destination is replaced, never written through;
  an existing symlink there is refused.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as stat_mod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos_shell.errors import FsError, UsageError
from llmos_shell.format import printable
from llmos_shell.fs.paths import (MAX_FILE_BYTES, ROOT, basename, join, normalise, parent, safe_host_name,
                                  subtree_bounds)

if TYPE_CHECKING:  # pragma: no cover
    from llmos_shell.fs.files import FilesMixin


# --- import -------------------------------------------------------------------------------

def import_host(fs: "FilesMixin", host_path: str | os.PathLike, dest: str = ROOT) -> dict[str, Any]:
    """Copy a host file or folder into the tree, in one transaction.

    If ``dest`` is an existing directory the source goes inside it under its
    own name (``put report.txt /inputs`` makes ``/inputs/report.txt``);
    otherwise ``dest`` is the new name (as with ``cp``); missing folders above
    it are made, as the tree is llmos's own (``put todo.txt /notes/todo.txt``
    into a new home works, as users and task inputs expect). Returns ``{"path", "files", "dirs", "bytes", "skipped"}``
    (``skipped``: host paths not imported, with why).
    """
    source = Path(host_path).expanduser()
    try:
        info = source.stat()
    except FileNotFoundError:
        raise FsError(f"no such host file: {_shown(source)}") from None
    except OSError as error:
        raise FsError(f"cannot read {_shown(source)}: {error.strerror}") from None
    names_a_directory = str(dest).endswith("/")
    dest = normalise(dest)
    name = source.resolve().name
    summary: dict[str, Any] = {"path": dest, "files": 0, "dirs": 0, "bytes": 0, "skipped": []}
    with fs.transaction():
        if fs.is_dir(dest) and name:
            target = join(dest, _checked_name(name, source))
        elif names_a_directory and name:
            target = join(dest, _checked_name(name, source))
        elif fs.exists(parent(dest)) and not fs.is_dir(parent(dest)):
            raise FsError(f"not a directory: {parent(dest)} (cannot import to {dest})")
        elif fs.exists(dest) and stat_mod.S_ISDIR(info.st_mode):
            raise FsError(f"not a directory: {dest} (cannot import the folder {_shown(source)} over a file)")
        else:
            target = dest
        summary["path"] = target
        if stat_mod.S_ISREG(info.st_mode):
            _import_file(fs, source, target, summary)
        elif stat_mod.S_ISDIR(info.st_mode):
            _import_tree(fs, source, target, summary)
        else:
            raise FsError(f"not a regular file or folder: {_shown(source)}")
    return summary


def _checked_name(name: str, where: Path) -> str:
    try:
        normalise(name)
        name.encode("utf-8")
    except (UsageError, UnicodeEncodeError):
        raise UsageError(f"cannot import {_shown(where)}: its name is not a valid llmos file name") from None
    return name


def _shown(path: Any) -> str:
    """A host path in a message: its control and bidi characters escaped (names can hold anything)."""
    return printable(str(path))


def _read_limited(handle, source: Any) -> bytes:
    """A host file's bytes, its size checked before it is read (and while, should it grow)."""
    size = os.fstat(handle.fileno()).st_size
    data = handle.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else None
    if data is None or len(data) > MAX_FILE_BYTES:
        shown = size if data is None else f"more than {MAX_FILE_BYTES}"
        raise FsError(f"file too large: {_shown(source)} ({shown} bytes; the limit is {MAX_FILE_BYTES})")
    return data


def _import_file(fs: "FilesMixin", source: Path, target: str, summary: dict[str, Any]) -> None:
    try:
        with source.open("rb") as handle:
            data = _read_limited(handle, source)
    except OSError as error:
        raise FsError(f"cannot read {_shown(source)}: {error.strerror}") from None
    fs.write(target, data)
    summary["files"] += 1
    summary["bytes"] += len(data)


def _import_tree(fs: "FilesMixin", source: Path, target: str, summary: dict[str, Any]) -> None:
    fs.mkdir(target)
    summary["dirs"] += 1
    for root, dirs, files, root_fd in os.fwalk(source, follow_symlinks=False):
        rel = os.path.relpath(root, source)
        base = target if rel == "." else join(target, rel)
        for entry in sorted(dirs) + sorted(files):
            host = Path(root, entry)
            try:
                normalise(entry)
                if "/" in entry or entry in (".", ".."):
                    raise UsageError(entry)
                entry.encode("utf-8")
            except (UsageError, UnicodeEncodeError):
                summary["skipped"].append({"host": str(host), "why": "name not valid in llmos (a control "
                                                                     "character, or not Unicode)"})
                if entry in dirs:
                    dirs.remove(entry)
                continue
            info = os.stat(entry, dir_fd=root_fd, follow_symlinks=False)
            if stat_mod.S_ISLNK(info.st_mode):
                summary["skipped"].append({"host": str(host), "why": "symbolic link"})
                if entry in dirs:
                    dirs.remove(entry)
            elif stat_mod.S_ISDIR(info.st_mode):
                fs.mkdir(join(base, entry))
                summary["dirs"] += 1
            elif stat_mod.S_ISREG(info.st_mode):
                fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=root_fd)
                with os.fdopen(fd, "rb") as handle:
                    data = _read_limited(handle, host)
                fs.write(join(base, entry), data)
                summary["files"] += 1
                summary["bytes"] += len(data)
            else:
                summary["skipped"].append({"host": str(host), "why": "not a regular file"})


# --- export -------------------------------------------------------------------------------

def export(fs: "FilesMixin", path: str, host_dir: str | os.PathLike, *, overwrite: bool = True) -> dict[str, Any]:
    """Copy file or directory ``path`` into host directory ``host_dir`` (created if missing).

    ``/notes`` exported to ``out`` becomes ``out/notes/...``; ``/`` exports the
    whole tree's contents into ``out``. Existing host files are replaced unless
    ``overwrite=False``. Returns ``{"path", "files", "dirs", "bytes"}``.
    """
    path = normalise(path)
    host_root = Path(host_dir).expanduser()
    with fs._lock:
        fs.stat(path)  # a missing source is reported before anything is created on the host
        try:
            host_root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise FsError(f"cannot write to host directory {host_root}: {error.strerror}") from None
        return _copy_out(fs, path, host_root, None if path == ROOT else basename(path), overwrite)


def get(fs: "FilesMixin", path: str, dest: str | os.PathLike, *, overwrite: bool = True) -> dict[str, Any]:
    """Copy file or directory ``path`` to the host as ``cp -r`` does.

    An existing host directory ``dest`` receives ``path`` under its own name
    (``/`` puts the tree's contents there); otherwise ``dest`` is the new file's
    or folder's path, in a host directory that must exist. Returns
    ``{"path", "files", "dirs", "bytes"}``.
    """
    path = normalise(path)
    raw = os.fspath(dest)
    target = Path(raw).expanduser()
    with fs._lock:
        fs.stat(path)
        if target.is_dir():  # named by the user: following a link here is what they asked
            return _copy_out(fs, path, target, None if path == ROOT else basename(path), overwrite)
        if raw.endswith(("/", os.sep)):
            raise FsError(f"no such host directory: {target}")
        if not target.parent.is_dir():
            raise FsError(f"no such host directory: {target.parent} (to write {target}, create it first)")
        return _copy_out(fs, path, target.parent, target.name, overwrite)


def _copy_out(fs: "FilesMixin", path: str, host_root: Path, name: str | None,
              overwrite: bool) -> dict[str, Any]:
    """Write ``path`` into the existing host directory ``host_root`` as ``name``
    (``None``: the tree's contents, for ``/``)."""
    top = fs.stat(path)
    entries = _plan(fs, path, top, name)
    try:
        root_fd = os.open(host_root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise FsError(f"cannot write to host directory {host_root}: {error.strerror}") from None
    summary = {"path": str(host_root / name) if name else str(host_root), "files": 0, "dirs": 0, "bytes": 0}
    try:
        _preflight(entries, root_fd, host_root, overwrite)
    except BaseException:
        os.close(root_fd)
        raise
    # Depth first, keeping open only the directories on the way down to the current entry.
    stack: list[tuple[tuple[str, ...], int]] = [((), root_fd)]
    try:
        for parts, row in entries:
            while stack[-1][0] != parts[:-1]:
                os.close(stack.pop()[1])
            parent_fd = stack[-1][1]
            if row["kind"] == "dir":
                stack.append((parts, _open_dir(parent_fd, parts, host_root)))
                summary["dirs"] += 1
            else:
                content = fs._value("SELECT b.content FROM files f JOIN blobs b ON b.sha256 = f.sha256 "
                                   "WHERE f.id = ?", (row["id"],)) or b""
                _write_file(parent_fd, parts, bytes(content), row["modified"], host_root, overwrite)
                summary["files"] += 1
                summary["bytes"] += len(content)
    finally:
        for _, fd in stack:
            os.close(fd)
    return summary


def _plan(fs: "FilesMixin", path: str, top: dict[str, Any],
          name: str | None) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every row to export with its host-relative segments (``path`` itself becomes ``name``),
    all checked before anything is written."""
    rows = [fs._one("SELECT id, path, kind, modified FROM files WHERE path = ?", (path,))]
    if top["kind"] == "dir":
        low, high = subtree_bounds(path)
        rows += fs._all("SELECT id, path, kind, modified FROM files WHERE path > ? AND path < ? ORDER BY path",
                        (low, high))
    head = (name,) if name else ()
    inside = len(path.rstrip("/")) + 1  # where a row's path below ``path`` starts
    plan = []
    for row in rows:
        below = () if row["path"] == path else tuple(row["path"][inside:].split("/"))
        parts = head + below
        if not parts:
            continue  # "/" into a directory: only its contents are written
        if not row["path"].startswith("/") or not all(safe_host_name(part) for part in parts):
            raise UsageError(f"refusing to export {row['path']!r}: it is not a plain relative name")
        plan.append((parts, row))
    plan.sort(key=lambda entry: entry[0])  # depth-first: a directory, then everything in it
    return plan


def _describe(host_root: Path, parts: tuple[str, ...]) -> str:
    return _shown(host_root.joinpath(*parts))


def _preflight(entries: list[tuple[tuple[str, ...], dict[str, Any]]], root_fd: int, host_root: Path,
               overwrite: bool) -> None:
    """Refuse the export before anything is written if anything already on the host is in the way: a
    symlink or a file where a folder goes (however deep), a symlink or a folder where a file goes, an
    existing file under ``overwrite=False``. (The writing pass checks again, against races.)"""
    stack: list[tuple[tuple[str, ...], int]] = [((), root_fd)]
    absent: set[tuple[str, ...]] = set()   # folders not on the host yet: nothing below them is either
    try:
        for parts, row in entries:
            if any(parts[:depth] in absent for depth in range(1, len(parts))):
                continue
            while stack[-1][0] != parts[:-1]:
                os.close(stack.pop()[1])
            where = _describe(host_root, parts)
            try:
                existing = os.stat(parts[-1], dir_fd=stack[-1][1], follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            except OSError as error:
                raise FsError(f"cannot look at {where}: {error.strerror}") from None
            if row["kind"] == "dir":
                if existing is None:
                    absent.add(parts)
                elif not stat_mod.S_ISDIR(existing.st_mode):
                    raise FsError(f"refusing to export into {where}: it exists on the host and is not a plain "
                                  "directory (a symlink or a file); nothing was written")
                else:
                    stack.append((parts, os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                                 dir_fd=stack[-1][1])))
            elif existing is not None:
                _refuse_existing(existing, where, overwrite, "; nothing was written")
    finally:
        for _, fd in stack[1:]:
            os.close(fd)


def _open_dir(parent_fd: int, parts: tuple[str, ...], host_root: Path) -> int:
    name = parts[-1]
    try:
        os.mkdir(name, 0o777, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as error:
        raise FsError(f"cannot create {_describe(host_root, parts)}: {error.strerror}") from None
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FsError(f"refusing to export into {_describe(host_root, parts)}: "
                          "it exists on the host and is not a plain directory (a symlink or a file)") from None
        raise FsError(f"cannot open {_describe(host_root, parts)}: {error.strerror}") from None


def _refuse_existing(existing: os.stat_result, where: str, overwrite: bool, note: str = "") -> None:
    """Raise if a file may not be exported over ``existing`` (a symlink, a directory, or a file
    without ``overwrite``); ``note`` ends the message."""
    if stat_mod.S_ISLNK(existing.st_mode):
        raise FsError(f"refusing to export over a symbolic link: {where}{note}")
    if stat_mod.S_ISDIR(existing.st_mode):
        raise FsError(f"is a directory on the host: {where}{note}")
    if not overwrite:
        raise FsError(f"already exists on the host: {where}{note}")


def _write_file(parent_fd: int, parts: tuple[str, ...], content: bytes, modified: float,
                host_root: Path, overwrite: bool) -> None:
    name = parts[-1]
    where = _describe(host_root, parts)
    try:
        existing = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        _refuse_existing(existing, where, overwrite)
    temp = f".{name[:200]}.llmos-{secrets.token_hex(4)}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=parent_fd)
    except OSError as error:
        raise FsError(f"cannot write {where}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.utime(temp, (modified, modified), dir_fd=parent_fd, follow_symlinks=False)
        os.replace(temp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    except BaseException as error:
        try:
            os.unlink(temp, dir_fd=parent_fd)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise FsError(f"cannot write {where}: {error.strerror}") from None
        raise
