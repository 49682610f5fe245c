"""Old versions of files: every change to a file's content keeps what it replaced.

:mod:`llmos_shell.fs.files` calls :meth:`VersionsMixin._keep` (and
:meth:`VersionsMixin._created`) inside the transaction of each change, so a
write, an append, a delete, ``rm -r``, and ``mv``/``cp`` over a file all keep
the previous content, whoever asks (a syscall, a shell command, ``llmos fs``,
MCP, serve), and a crash loses neither the old version nor the new.

Content lives in ``blobs``, once per sha256, for files and versions alike: a
blob counts the files that hold it (``live``) and the versions (``kept``). A
version is the state of one path just before one change: the sha256 of its
content, or none when the change created the file. So an overwrite copies
nothing: the old blob stays, held by the new version instead of the file.
Each version records who made the change: the process (pid) and the request,
an id shared by every change one request makes (a shell line, a task's turn,
one ``llmos fs`` command), set with :func:`acting`. That is what :meth:`undo`
reverts.

The blobs versions keep live within a byte budget (``LLMOS_VERSIONS_MB``, 256
by default; ``versions_usage`` counts them): after each change that keeps one,
the oldest versions go until they fit.
A budget of 0 keeps no versions at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from llmos_shell.errors import FsError
from llmos_shell.fs.base import Store, op
from llmos_shell.fs.paths import normalise

log = logging.getLogger("llmos.fs")

DEFAULT_VERSIONS_MB = 256.0
MEGABYTE = 1 << 20


@dataclass(frozen=True)
class Actor:
    """Who is changing files: a process (None for a command with no process) and one request of it."""

    pid: int | None
    request: str


_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("llmos_actor", default=None)


@contextlib.contextmanager
def acting(pid: int | None = None) -> Iterator[Actor]:
    """Changes made inside (in this thread, and in syscall threads started from it) belong to one
    request of process ``pid``. Nested, it joins the request already open for the same process."""
    current = _ACTOR.get()
    if current is not None and (pid is None or current.pid == pid):
        yield current
        return
    token = _ACTOR.set(Actor(pid if pid is not None else getattr(current, "pid", None), uuid.uuid4().hex[:16]))
    try:
        yield _ACTOR.get()
    finally:
        _ACTOR.reset(token)


def current_actor() -> Actor | None:
    return _ACTOR.get()


_VERSION_COLUMNS = "id AS version, path, sha256, size, mime, change, pid, request, created, undone"


class VersionsMixin(Store):
    """Versions of files (mixed into :class:`~llmos_shell.fs.Filesystem`)."""

    #: Most bytes the old versions' content may take; 0 keeps none. Set by :meth:`Store.open`.
    versions_bytes: int = int(DEFAULT_VERSIONS_MB * MEGABYTE)

    # --- content and the versions that keep it (called inside each change's transaction) ------

    def _hold(self, digest: str, raw: bytes) -> None:
        """A file now holds ``raw``: its blob (stored once per sha256) counts one more live file."""
        self.conn.execute("INSERT INTO blobs (sha256, size, content, live, kept) VALUES (?, ?, ?, 1, 0) "
                          "ON CONFLICT (sha256) DO UPDATE SET live = live + 1", (digest, len(raw), raw))

    def _hold_again(self, digest: str) -> None:
        """One more file holds content already stored (a copy: no bytes move)."""
        self.conn.execute("UPDATE blobs SET live = live + 1 WHERE sha256 = ?", (digest,))

    def _leaving(self, where: str, params: Iterable[Any]) -> list[tuple]:
        """(path, sha256, size, mime) of the files matching ``where`` (a condition on ``files``)."""
        return self.conn.execute(f"SELECT path, sha256, size, mime FROM files WHERE kind = 'file' AND {where}",
                                 tuple(params)).fetchall()

    def _keep(self, files: list[tuple], change: str, *, released: bool = True) -> None:
        """``files`` ((path, sha256, size, mime) rows) lose their content to ``change``: each becomes a
        version of its path, and its blob moves from the live count to the kept one, so nothing is
        copied. With ``released=False`` the content stays live elsewhere (a move: only the old path
        gets a version). With no budget (versions off) a blob no one holds any more is deleted.
        The budget is checked once, before the transaction commits, so a batch pays for it once."""
        if not files:
            return
        keep = 1 if self.versions_bytes else 0
        if keep:
            actor = _ACTOR.get()
            now = time.time()
            self.conn.executemany(
                "INSERT INTO versions (path, sha256, size, mime, change, pid, request, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(path, digest, size, mime, change, actor and actor.pid, actor and actor.request, now)
                 for path, digest, size, mime in files])
            self._budget_due = True
        elif not released:
            return
        for _path, digest, _size, _mime in files:
            live, kept, size = self.conn.execute(
                "UPDATE blobs SET live = live - ?, kept = kept + ? WHERE sha256 = ? RETURNING live, kept, size",
                (1 if released else 0, keep, digest)).fetchone()
            if keep and kept == 1:
                self._usage_delta += size       # a blob the budget now counts
            elif not live and not kept:
                self.conn.execute("DELETE FROM blobs WHERE sha256 = ?", (digest,))

    def _before_commit(self) -> None:
        """The kept bytes written down, and within the budget, before the transaction commits (once
        per batch)."""
        if self._usage_delta:
            self.conn.execute("UPDATE versions_usage SET bytes = bytes + ? WHERE id = 1", (self._usage_delta,))
            self._usage_delta = 0
        if self._budget_due:
            self._budget_due = False
            self._within_budget()

    def _created(self, paths: Iterable[str], change: str) -> None:
        """Note that ``change`` makes files at ``paths`` where there were none (undo removes them)."""
        if not self.versions_bytes:
            return
        actor = _ACTOR.get()
        if actor is None:   # nothing to undo them with: a change outside any request
            return
        now = time.time()
        self.conn.executemany(
            "INSERT INTO versions (path, change, pid, request, created) VALUES (?, ?, ?, ?, ?)",
            [(path, change, actor.pid, actor.request, now) for path in paths])

    def _within_budget(self) -> None:
        """Drop the oldest versions until the content they keep fits the budget (never over it)."""
        used = self._value("SELECT bytes FROM versions_usage WHERE id = 1") or 0
        if used <= self.versions_bytes:
            return
        dropped = 0
        last_id = 0
        while used > self.versions_bytes:
            rows = self._all("SELECT id, sha256 FROM versions WHERE sha256 IS NOT NULL AND id > ? "
                             "ORDER BY id LIMIT 64", (last_id,))
            if not rows:
                break
            for row in rows:
                last_id = row["id"]
                self.conn.execute("DELETE FROM versions WHERE id = ?", (row["id"],))
                live, kept, size = self.conn.execute(
                    "UPDATE blobs SET kept = kept - 1 WHERE sha256 = ? RETURNING live, kept, size",
                    (row["sha256"],)).fetchone()
                if not kept:
                    used -= size
                    if not live:
                        self.conn.execute("DELETE FROM blobs WHERE sha256 = ?", (row["sha256"],))
                dropped += 1
                if used <= self.versions_bytes:
                    break
        self.conn.execute("UPDATE versions_usage SET bytes = ? WHERE id = 1", (used,))
        # what older requests created cannot be undone whole any more: those notes go too
        self.conn.execute("DELETE FROM versions WHERE sha256 IS NULL AND id < ?", (last_id,))
        log.info("versions over budget (%d bytes): dropped the %d oldest", self.versions_bytes, dropped)

    # --- reading them ------------------------------------------------------------------------

    @op
    def versions(self, path: str) -> list[dict[str, Any]]:
        """The kept versions of ``path``, oldest first: ``version`` (its number for :meth:`restore`),
        ``size``, ``mime``, ``sha256``, ``change`` (what replaced it: write, append, delete, move,
        copy, restore, undo), ``pid`` and ``request`` of that change, ``created`` (when)."""
        return self._all(f"SELECT {_VERSION_COLUMNS} FROM versions WHERE path = ? AND sha256 IS NOT NULL "
                         "ORDER BY id", (normalise(path),))

    @op
    def version_content(self, path: str, version: int | None = None) -> bytes:
        """The content of a kept version of ``path`` (the newest if ``version`` is None)."""
        return bytes(self._version(normalise(path), version)["content"])

    def _version(self, path: str, version: int | None) -> dict[str, Any]:
        if version is None:
            row = self._one("SELECT v.id, v.mime, b.content FROM versions v JOIN blobs b ON b.sha256 = v.sha256 "
                            "WHERE v.path = ? ORDER BY v.id DESC LIMIT 1", (path,))
            if row is None:
                raise FsError(f"no earlier versions of {path}")
        else:
            row = self._one("SELECT v.id, v.mime, b.content FROM versions v JOIN blobs b ON b.sha256 = v.sha256 "
                            "WHERE v.path = ? AND v.id = ?", (path, version))
            if row is None:
                raise FsError(f"no version {version} of {path} (`llmos fs versions {path}` lists them)")
        return row

    @op
    def versions_usage(self) -> dict[str, int]:
        """``bytes`` the kept content takes, ``budget``, ``versions`` kept (with content)."""
        return {"bytes": (self._value("SELECT bytes FROM versions_usage WHERE id = 1") or 0) + self._usage_delta,
                "budget": self.versions_bytes,
                "versions": self._value("SELECT count(*) FROM versions WHERE sha256 IS NOT NULL")}

    # --- going back ----------------------------------------------------------------------------

    @op
    def restore(self, path: str, version: int | None = None) -> dict[str, Any]:
        """Put a kept version of ``path`` back (the newest if ``version`` is None), as a change of its
        own: what the file holds now is kept too. Returns the file's :meth:`stat`."""
        path = normalise(path)
        with self.transaction():
            row = self._version(path, version)
            return self._put(path, bytes(row["content"]), False, row["mime"], True, "restore")

    @op
    def undo(self, pids: Iterable[int] | None = None) -> dict[str, Any] | None:
        """Revert every change of the last request (of one of ``pids``, if given) not undone yet:
        each path it touched goes back to what it was before, a file it made is removed.

        Returns ``{"request", "pid", "reverted": [{"path", "action": "restored"|"removed", "size"}]}``,
        or None when there is nothing to undo. The undo is a change too (kept, never undone itself)."""
        scope, params = "", ()
        if pids is not None:
            pids = [int(p) for p in pids]
            if not pids:
                return None
            scope, params = f" AND pid IN ({','.join('?' * len(pids))})", tuple(pids)
        with self.transaction():
            last = self._one("SELECT request, pid FROM versions WHERE request IS NOT NULL AND undone IS NULL "
                             f"AND change != 'undo'{scope} ORDER BY id DESC LIMIT 1", params)
            if last is None:
                return None
            rows = self._all("SELECT v.path, v.sha256, v.mime, b.content FROM versions v "
                             "LEFT JOIN blobs b ON b.sha256 = v.sha256 WHERE v.request = ? ORDER BY v.id",
                             (last["request"],))
            before: dict[str, dict[str, Any]] = {}
            for row in rows:          # the first version of each path: its state before the request
                before.setdefault(row["path"], row)
            reverted = []
            with acting(last["pid"]):
                for path, row in before.items():
                    exists = self._value("SELECT kind FROM files WHERE path = ?", (path,))
                    if row["sha256"] is None:
                        if exists == "file":
                            self._remove(path, False, "undo")
                            reverted.append({"path": path, "action": "removed", "size": 0})
                    elif exists != "dir":
                        info = self._put(path, bytes(row["content"]), False, row["mime"], True, "undo")
                        reverted.append({"path": path, "action": "restored", "size": info["size"]})
            self.conn.execute("UPDATE versions SET undone = ? WHERE request = ?", (time.time(), last["request"]))
        return {"request": last["request"], "pid": last["pid"], "reverted": reverted}

    # provided by FilesMixin
    def _put(self, path: str, raw: bytes, append: bool, mime: str | None, parents: bool,
             change: str) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _remove(self, path: str, recursive: bool, change: str) -> int:  # pragma: no cover
        raise NotImplementedError
