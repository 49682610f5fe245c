"""The file tree: directories and files (text or binary) stored in the ``files`` table.

Each row is one file or directory, keyed by its normalised path (see
:mod:`llmos_shell.fs.paths`), with a link to its parent directory's row.
File content is a BLOB kept byte for byte, with its mime type, size and
sha256; text files (valid UTF-8, no NUL) are also indexed by FTS5.

Conventions, as a user of a POSIX shell expects:

* ``write`` creates missing parent directories (``parents=False`` to refuse);
* ``mkdir`` with ``parents=True`` is ``mkdir -p``: an existing directory is fine;
* ``rm`` removes a file or an empty directory; a non-empty one needs ``recursive``;
* ``mv``/``cp`` into an existing directory put the source inside it; onto an
  existing file they replace it; the destination's parent must exist;
* errors are :class:`~llmos_shell.errors.FsError` ("no such file: /a") or,
  for a bad path, :class:`~llmos_shell.errors.UsageError`.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Iterator

from llmos_shell.errors import FsError, UsageError
from llmos_shell.fs import mime as mimes
from llmos_shell.fs.base import op
from llmos_shell.fs.paths import (ROOT, basename, glob_regex, is_within, join, normalise, parent,
                                  subtree_bounds)
from llmos_shell.fs.versions import VersionsMixin

#: Largest file the filesystem stores (SQLite's own limit is 1,000,000,000 bytes).
from llmos_shell.fs.paths import MAX_FILE_BYTES  # noqa: E402  (host.py checks it too)

_STAT_COLUMNS = "id, path, parent, name, kind, mime, size, sha256, created, modified, is_text"
_SUBTREE = "(path = ? OR (path > ? AND path < ?))"


def _subtree_params(directory: str) -> tuple[str, str, str]:
    low, high = subtree_bounds(directory)
    return directory, low, high


def stat_of(row: dict[str, Any]) -> dict[str, Any]:
    """The public description of a file or directory row."""
    is_dir = row["kind"] == "dir"
    return {
        "path": row["path"],
        "name": row["name"] or "/",
        "kind": row["kind"],
        "size": row["size"],
        "mime": "inode/directory" if is_dir else row["mime"],
        "text": bool(row["is_text"]),
        "sha256": row["sha256"],
        "created": row["created"],
        "modified": row["modified"],
    }


def fts_query(text: str, any_word: bool = False) -> str:
    """Turn a user's words into a safe FTS5 query: every word must appear (or any, with ``any_word``).

    Each whitespace-separated chunk becomes a quoted phrase (so ``NOT``, ``OR``,
    ``:`` or quotes have no special meaning); a trailing ``*`` keeps prefix search.
    """
    parts = []
    for chunk in text.split():
        prefix = chunk.endswith("*")
        chunk = chunk.rstrip("*")
        if not re.search(r"\w", chunk):
            continue
        parts.append('"' + chunk.replace('"', '""') + '"' + ("*" if prefix else ""))
    if not parts:
        raise UsageError(f"nothing to search for in {text!r}: give at least one word")
    return (" OR " if any_word else " ").join(parts)


def _as_bytes(data: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError("text to write is not valid Unicode (lone surrogate)") from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise UsageError(f"can only write text or bytes, not {type(data).__name__}")


class FilesMixin(VersionsMixin):
    """File and directory operations (mixed into :class:`~llmos_shell.fs.Filesystem`)."""

    # --- lookups --------------------------------------------------------------------

    def _row(self, path: str) -> dict[str, Any] | None:
        return self._one(f"SELECT {_STAT_COLUMNS} FROM files WHERE path = ?", (path,))

    def _require(self, path: str) -> dict[str, Any]:
        row = self._row(path)
        if row is None:
            raise FsError(f"no such file: {path}")
        return row

    def _ensure_dir(self, path: str, parents: bool) -> int:
        """The id of directory ``path``, creating it (and its parents) if ``parents``."""
        row = self._one("SELECT id, kind FROM files WHERE path = ?", (path,))
        if row is not None:
            if row["kind"] != "dir":
                raise FsError(f"not a directory: {path}")
            return row["id"]
        if not parents:
            raise FsError(f"no such directory: {path}")
        parent_id = self._ensure_dir(parent(path), parents=True)
        now = time.time()
        cursor = self.conn.execute(
            "INSERT INTO files (path, parent, name, kind, created, modified) VALUES (?, ?, ?, 'dir', ?, ?)",
            (path, parent_id, basename(path), now, now))
        return cursor.lastrowid

    # --- reading ----------------------------------------------------------------------

    @op
    def exists(self, path: str) -> bool:
        """True if ``path`` is a file or a directory."""
        return self._value("SELECT 1 FROM files WHERE path = ?", (normalise(path),)) is not None

    @op
    def stat(self, path: str) -> dict[str, Any]:
        """path, name, kind ('file' or 'dir'), size, mime, text (bool), sha256, created, modified."""
        return stat_of(self._require(normalise(path)))

    @op
    def is_dir(self, path: str) -> bool:
        return self._value("SELECT kind FROM files WHERE path = ?", (normalise(path),)) == "dir"

    def _file_row(self, path: str) -> Any:
        """The row of the file at ``path`` (normalised), with its content; FsError for none or a directory."""
        row = self._one("SELECT f.kind, f.is_text, f.mime, f.size, b.content FROM files f "
                        "LEFT JOIN blobs b ON b.sha256 = f.sha256 WHERE f.path = ?", (path,))
        if row is None:
            raise FsError(f"no such file: {path}")
        if row["kind"] == "dir":
            raise FsError(f"is a directory: {path}")
        return row

    @op
    def read(self, path: str) -> bytes:
        """The content of a file, byte for byte."""
        return bytes(self._file_row(normalise(path))["content"] or b"")

    @op
    def read_text(self, path: str) -> str:
        """The content of a text file as a string (a binary file raises FsError)."""
        path = normalise(path)
        row = self._file_row(path)
        if not row["is_text"]:
            raise FsError(f"not a text file: {path} ({row['mime']}, {row['size']} bytes)")
        return bytes(row["content"] or b"").decode("utf-8")

    @op
    def ls(self, path: str = ROOT) -> list[dict[str, Any]]:
        """The entries of a directory sorted by name (a file lists itself), as :meth:`stat` dicts."""
        path = normalise(path)
        row = self._require(path)
        if row["kind"] != "dir":
            return [stat_of(row)]
        rows = self._all(f"SELECT {_STAT_COLUMNS} FROM files WHERE parent = ? ORDER BY name", (row["id"],))
        return [stat_of(r) for r in rows]

    @op
    def walk(self, path: str = ROOT) -> list[dict[str, Any]]:
        """``path`` and everything below it, sorted by path, as :meth:`stat` dicts."""
        path = normalise(path)
        self._require(path)
        rows = self._all(f"SELECT {_STAT_COLUMNS} FROM files WHERE {_SUBTREE} ORDER BY path",
                         _subtree_params(path))
        return [stat_of(r) for r in rows]

    @op
    def find(self, pattern: str, path: str = ROOT) -> list[dict[str, Any]]:
        """Files and directories under ``path`` matching a glob, sorted by path.

        A pattern without ``/`` matches names at any depth (``*.txt``); one with
        ``/`` matches whole paths, relative to ``path`` unless absolute
        (``notes/*.md``, ``/data/**/*.wav``).
        """
        if not isinstance(pattern, str) or not pattern:
            raise UsageError("find needs a pattern, such as '*.txt'")
        base = normalise(path)
        self._require(base)
        if "/" in pattern:
            regex = glob_regex(normalise(pattern, cwd=base))
            key = "path"
        else:
            regex = glob_regex(pattern)
            key = "name"
        rows = self._all(f"SELECT {_STAT_COLUMNS} FROM files WHERE {_SUBTREE} ORDER BY path",
                         _subtree_params(base))
        return [stat_of(r) for r in rows if r["path"] != ROOT and regex.fullmatch(r[key])]

    @op
    def grep(self, pattern: str, regex: bool = False, path: str = ROOT, *, ignore_case: bool = False,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Lines of text files under ``path`` that match, as ``{"path", "line", "text"}`` (line from 1).

        By default ``pattern`` is words looked up with FTS5: every word must be
        in the file (stemmed: "run" finds "running"; ``word*`` is a prefix), and
        the lines holding any of them are returned. With ``regex=True`` it is a
        Python regular expression matched against each line.
        """
        base = normalise(path)
        self._require(base)
        return list(self._grep_regex(pattern, base, ignore_case, limit) if regex
                    else self._grep_words(pattern, base, limit))

    @op
    def search(self, query: str, limit: int = 20, path: str = ROOT) -> dict[str, Any]:
        """Files whose name contains ``query`` (case-insensitive) and lines holding its words.

        Returns ``{"names": [path, ...], "lines": [{"path", "line", "text"}, ...]}``,
        each list at most ``limit`` long: what the model's ``search_files`` shows.
        """
        base = normalise(path)
        self._require(base)
        needle = query.strip().lower()
        if not needle:
            raise UsageError("nothing to search for: give a word or part of a file name")
        names = [r["path"] for r in self._all(
            f"SELECT path FROM files WHERE path != '/' AND instr(lower(name), ?) > 0 AND {_SUBTREE} "
            "ORDER BY path LIMIT ?", (needle, *_subtree_params(base), limit))]
        lines = list(self._grep_words(query, base, limit)) if re.search(r"\w", query) else []
        return {"names": names, "lines": lines}

    def _grep_words(self, pattern: str, base: str, limit: int | None) -> Iterator[dict[str, Any]]:
        query = fts_query(pattern)
        cursor = self.conn.execute(
            "SELECT f.path, CAST(b.content AS TEXT), highlight(files_fts, 0, char(1), char(2)) AS marked "
            "FROM files_fts JOIN files f ON f.id = files_fts.rowid JOIN blobs b ON b.sha256 = f.sha256 "
            f"WHERE files_fts MATCH ? AND {_SUBTREE.replace('path', 'f.path')} ORDER BY f.path",
            (query, *_subtree_params(base)))
        count = 0
        for file_path, text, marked in cursor.fetchall():
            # highlight() only inserts the markers, so its lines are the file's lines.
            lines = text.split("\n")
            for number, marked_line in enumerate(marked.split("\n")):
                if "\x01" in marked_line:
                    yield {"path": file_path, "line": number + 1, "text": lines[number].rstrip("\r")}
                    count += 1
                    if limit is not None and count >= limit:
                        return

    def _grep_regex(self, pattern: str, base: str, ignore_case: bool, limit: int | None) -> Iterator[dict[str, Any]]:
        try:
            compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as error:
            raise UsageError(f"bad regular expression {pattern!r}: {error}") from None
        cursor = self.conn.execute(
            "SELECT f.path, CAST(b.content AS TEXT) FROM files f JOIN blobs b ON b.sha256 = f.sha256 "
            f"WHERE f.kind = 'file' AND f.is_text = 1 AND {_SUBTREE.replace('path', 'f.path')} ORDER BY f.path",
            _subtree_params(base))
        count = 0
        for file_path, text in cursor.fetchall():
            for number, line in enumerate(text.split("\n")):
                line = line.rstrip("\r")
                if compiled.search(line):
                    yield {"path": file_path, "line": number + 1, "text": line}
                    count += 1
                    if limit is not None and count >= limit:
                        return

    # --- writing ----------------------------------------------------------------------

    @op
    def write(self, path: str, data: str | bytes, append: bool = False, mime: str | None = None, *,
              parents: bool = True) -> dict[str, Any]:
        """Create or overwrite a file (or append to it); return its :meth:`stat`.

        ``data`` is text (stored as UTF-8) or bytes (stored as they are). The
        mime type is ``mime`` if given, else guessed from the content and name;
        appending keeps the file's type. Missing parent directories are created
        unless ``parents=False``.
        """
        path = normalise(path)
        if path == ROOT:
            raise FsError("is a directory: /")
        return self._put(path, _as_bytes(data), append, mime, parents, "append" if append else "write")

    def _put(self, path: str, raw: bytes, append: bool, mime: str | None, parents: bool,
             change: str) -> dict[str, Any]:
        """:meth:`write` of a normalised path, the previous content kept as a version made by ``change``."""
        parent_path = parent(path)
        with self._atomic():  # every check below comes before the first change
            found = {r["path"]: r for r in self._all(
                "SELECT id, path, kind, mime, size, sha256, created FROM files WHERE path IN (?, ?)",
                (path, parent_path))}
            row, parent_row = found.get(path), found.get(parent_path)
            if row is not None and row["kind"] == "dir":
                raise FsError(f"is a directory: {path}")
            if parent_row is not None and parent_row["kind"] != "dir":
                raise FsError(f"not a directory: {parent_path}")
            if parent_row is None and not parents:
                raise FsError(f"no such directory: {parent_path}")
            if append and row is not None:
                raw = bytes(self._value("SELECT content FROM blobs WHERE sha256 = ?", (row["sha256"],)) or b"") + raw
                mime = mime or row["mime"]
            if len(raw) > MAX_FILE_BYTES:
                raise FsError(f"file too large: {path} ({len(raw)} bytes; the limit is {MAX_FILE_BYTES})")
            name = basename(path)
            kind_mime, is_text = mimes.classify(name, raw, mime)
            digest = hashlib.sha256(raw).hexdigest()
            now = time.time()
            if row is None or row["sha256"] != digest:
                self._hold(digest, raw)
            if row is None:
                parent_id = parent_row["id"] if parent_row is not None else self._ensure_dir(parent_path, parents)
                self.conn.execute(
                    "INSERT INTO files (path, parent, name, kind, is_text, mime, size, sha256, created, modified)"
                    " VALUES (?, ?, ?, 'file', ?, ?, ?, ?, ?, ?)",
                    (path, parent_id, name, int(is_text), kind_mime, len(raw), digest, now, now))
                created = now
                self._created([path], change)
            else:
                self.conn.execute(
                    "UPDATE files SET is_text = ?, mime = ?, size = ?, sha256 = ?, modified = ? WHERE id = ?",
                    (int(is_text), kind_mime, len(raw), digest, now, row["id"]))
                if row["sha256"] != digest:   # the content it replaces is kept (after the update: the
                    # index drops the old text, read from its blob)
                    self._keep([(path, row["sha256"], row["size"], row["mime"])], change)
                created = row["created"]
        return {"path": path, "name": name, "kind": "file", "size": len(raw), "mime": kind_mime,
                "text": is_text, "sha256": digest, "created": created, "modified": now}

    @op
    def mkdir(self, path: str, parents: bool = True) -> dict[str, Any]:
        """Create a directory; with ``parents`` (the default) also its parents, and an
        existing directory is fine (``mkdir -p``). Returns its :meth:`stat`."""
        path = normalise(path)
        with self.transaction():
            row = self._row(path)
            if row is not None:
                if row["kind"] != "dir":
                    raise FsError(f"file exists: {path}")
                if not parents and path != ROOT:
                    raise FsError(f"already exists: {path}")
                return stat_of(row)
            self._ensure_dir(parent(path), parents)
            self._ensure_dir(path, parents=True)
            return stat_of(self._require(path))

    @op
    def rm(self, path: str, recursive: bool = False) -> int:
        """Remove a file or an empty directory (a non-empty one needs ``recursive``).

        Returns how many files and directories were removed.
        """
        path = normalise(path)
        if path == ROOT:
            raise UsageError("refusing to remove /")
        return self._remove(path, recursive, "delete")

    def _remove(self, path: str, recursive: bool, change: str) -> int:
        """:meth:`rm` of a normalised path, the content of every file removed kept as a version."""
        with self.transaction():
            row = self._require(path)
            if row["kind"] == "dir" and not recursive:
                if self._value("SELECT 1 FROM files WHERE parent = ? LIMIT 1", (row["id"],)):
                    raise FsError(f"directory not empty: {path} (remove it recursively)")
            params = _subtree_params(path)
            count = self._value(f"SELECT count(*) FROM files WHERE {_SUBTREE}", params)
            leaving = self._leaving(_SUBTREE, params)
            self.conn.execute(f"DELETE FROM files WHERE {_SUBTREE}", params)
            self._keep(leaving, change)
            return count

    def _destination(self, source: dict[str, Any], dst: str) -> tuple[str, dict[str, Any] | None]:
        """Where mv/cp put ``source``: inside ``dst`` if it is a directory, else at ``dst``."""
        target = self._row(dst)
        if target is not None and target["kind"] == "dir" and dst != source["path"]:
            dst = join(dst, source["name"])
            target = self._row(dst)
        if source["kind"] == "dir" and is_within(dst, source["path"]) and dst != source["path"]:
            raise FsError(f"cannot put {source['path']} inside itself: {dst}")
        if target is not None and target["path"] != source["path"]:
            if source["kind"] == "dir":
                raise FsError(f"already exists: {dst}")
            if target["kind"] == "dir":
                raise FsError(f"is a directory: {dst}")
        return dst, target

    @op
    def mv(self, src: str, dst: str) -> dict[str, Any]:
        """Move or rename a file or directory; returns the :meth:`stat` of where it went."""
        src, dst = normalise(src), normalise(dst)
        if src == ROOT:
            raise UsageError("cannot move /")
        with self.transaction():
            source = self._require(src)
            dst, target = self._destination(source, dst)
            if dst == src:
                return stat_of(source)
            parent_id = self._ensure_dir(parent(dst), parents=False)
            # kept: what was at the source paths, and a file the move replaces; noted: the paths it fills
            self._keep(self._leaving(_SUBTREE, _subtree_params(src)), "move", released=False)
            if target is not None:
                replaced = self._leaving("id = ?", (target["id"],))
                self.conn.execute("DELETE FROM files WHERE id = ?", (target["id"],))
                self._keep(replaced, "move")
            self.conn.execute("UPDATE files SET path = ?, name = ?, parent = ? WHERE id = ?",
                              (dst, basename(dst), parent_id, source["id"]))
            if source["kind"] == "dir":
                low, high = subtree_bounds(src)
                self.conn.execute("UPDATE files SET path = ? || substr(path, ?) WHERE path > ? AND path < ?",
                                  (dst, len(src) + 1, low, high))
            if target is None:
                self._created(self._file_paths(dst), "move")
            return stat_of(self._require(dst))

    def _file_paths(self, path: str) -> list[str]:
        """The paths of the files at or under ``path``."""
        return [r[0] for r in self.conn.execute(f"SELECT path FROM files WHERE kind = 'file' AND {_SUBTREE}",
                                                _subtree_params(path))]

    @op
    def cp(self, src: str, dst: str) -> dict[str, Any]:
        """Copy a file, or a directory with everything in it; returns the :meth:`stat` of the copy."""
        src, dst = normalise(src), normalise(dst)
        with self.transaction():
            source = self._require(src)
            if source["kind"] == "dir" and src == ROOT:
                raise FsError("cannot copy / into itself")
            dst, target = self._destination(source, dst)
            if dst == src:
                raise FsError(f"{src} and {dst} are the same file")
            parent_id = self._ensure_dir(parent(dst), parents=False)
            now = time.time()
            if target is not None:  # a file over a file
                replaced = self._leaving("id = ? AND sha256 IS NOT ?", (target["id"], source["sha256"]))
                if replaced:
                    self._hold_again(source["sha256"])
                self.conn.execute(
                    "UPDATE files SET (is_text, mime, size, sha256, modified) = "
                    "(SELECT is_text, mime, size, sha256, ? FROM files WHERE id = ?) WHERE id = ?",
                    (now, source["id"], target["id"]))
                self._keep(replaced, "copy")   # the content it replaced (none when it was the same)
                return stat_of(self._require(dst))
            new_ids = {source["id"]: self._copy_row(source["id"], dst, parent_id, now)}
            if source["kind"] == "dir":
                low, high = subtree_bounds(src)
                rows = self._all("SELECT id, path, parent FROM files WHERE path > ? AND path < ? ORDER BY path",
                                 (low, high))
                for row in rows:  # parents sort before their children
                    new_ids[row["id"]] = self._copy_row(row["id"], dst + row["path"][len(src):],
                                                        new_ids[row["parent"]], now)
            self._created(self._file_paths(dst), "copy")
            return stat_of(self._require(dst))

    def _copy_row(self, file_id: int, path: str, parent_id: int, now: float) -> int:
        """A copy of one row: a file's copy holds the same blob (no bytes are copied)."""
        new_id, kind, digest = self.conn.execute(
            "INSERT INTO files (path, parent, name, kind, is_text, mime, size, sha256, created, modified) "
            "SELECT ?, ?, ?, kind, is_text, mime, size, sha256, ?, ? FROM files WHERE id = ? "
            "RETURNING id, kind, sha256", (path, parent_id, basename(path), now, now, file_id)).fetchone()
        if kind == "file":
            self._hold_again(digest)
        return new_id

    # --- host bridge --------------------------------------------------------------------

    @op
    def import_host(self, host_path, dest: str = ROOT) -> dict[str, Any]:
        """Copy a host file or folder into the tree (see :func:`llmos_shell.fs.host.import_host`)."""
        from llmos_shell.fs.host import import_host

        return import_host(self, host_path, dest)

    @op
    def export(self, path: str, host_dir, *, overwrite: bool = True) -> dict[str, Any]:
        """Copy a file or directory out to a host directory (see :func:`llmos_shell.fs.host.export`)."""
        from llmos_shell.fs.host import export

        return export(self, path, host_dir, overwrite=overwrite)
