"""The kernel's records: processes, their messages, the syscall audit log, snapshots.

The kernel writes every turn (:meth:`RecordsMixin.add_message`) and every
syscall (:meth:`RecordsMixin.record_syscall`) here as it happens, each in its
own transaction, so ``llmos ps`` and ``llmos log`` show a run while it goes on
and after it crashed. Messages are indexed by FTS5 for ``recall``.

Every process records its owner, the llmos program running it (fs/owners.py).
Each time the database is opened, processes still ``running`` or ``ready``
whose owner has ended (killed, crashed) are marked ``crashed``, in one
transaction that re-checks their status, so a process that finished or was
taken over meanwhile is left alone, and a live owner's process never is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Iterable

from llmos_shell.errors import FsError, LlmosError, UsageError
from llmos_shell.fs import owners
from llmos_shell.fs.base import Store, op
from llmos_shell.fs.files import fts_query

log = logging.getLogger("llmos.fs")

#: Statuses after which a process has ended (``ended`` is set when one is reached).
TERMINAL_STATUSES = frozenset({
    "done", "exited", "ok", "error", "failed", "killed", "cancelled", "interrupted", "denied",
    "max_steps", "tool_calls", "crashed",
})

#: Longest JSON text kept for one syscall's arguments or result in the audit log.
MAX_LOGGED_CHARS = 64 * 1024

_PROCESS_COLUMNS = ("pid, parent, name, status, model, created, updated, ended, owner_pid, context_tokens, "
                    "kv_bytes")
_MESSAGE_COLUMNS = "pid, seq, role, content, tokens, swapped, created"


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json(value: Any) -> str:
    """JSON for the audit log, cut to :data:`MAX_LOGGED_CHARS` (still valid JSON)."""
    text = json.dumps(value, ensure_ascii=False, default=_json_default)
    if len(text) > MAX_LOGGED_CHARS:
        text = json.dumps({"truncated": True, "chars": len(text), "head": text[:MAX_LOGGED_CHARS // 2]},
                          ensure_ascii=False)
    return text


def _from_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _message(row: dict[str, Any]) -> dict[str, Any]:
    row["swapped"] = bool(row["swapped"])
    return row


class RecordsMixin(Store):
    """Processes, messages, syscalls and snapshots (mixed into :class:`~llmos_shell.fs.Filesystem`)."""

    # --- processes --------------------------------------------------------------------

    def _require_process(self, pid: int | None) -> None:
        if pid is not None and self._value("SELECT 1 FROM processes WHERE pid = ?", (pid,)) is None:
            raise FsError(f"no such process: {pid}")

    def _owner(self) -> tuple[str | None, int]:
        """This program's owner token (None without a run folder) and OS pid."""
        owner = owners.this_program(self.run_dir) if self.run_dir is not None else None
        return (owner.token, owner.pid) if owner is not None else (None, os.getpid())

    @op
    def create_process(self, name: str, model: str | None = None, parent: int | None = None,
                       status: str = "ready") -> int:
        """Record a new process, owned by this program; returns its pid (1, 2, ...)."""
        now = time.time()
        token, owner_pid = self._owner()
        with self._atomic():
            self._require_process(parent)
            cursor = self.conn.execute(
                "INSERT INTO processes (parent, name, status, model, created, updated, owner, owner_pid) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (parent, str(name), status, model, now, now, token, owner_pid))
            return cursor.lastrowid

    @op
    def set_process_status(self, pid: int, status: str) -> None:
        """Change a process's status; a status in :data:`TERMINAL_STATUSES` also sets ``ended``.

        A process set to an unfinished status (``running``) becomes this program's: the program
        that runs it now is the one whose end would leave it orphaned."""
        now = time.time()
        if status in TERMINAL_STATUSES:
            sql = "UPDATE processes SET status = ?, updated = ?, ended = ? WHERE pid = ?"
            params = (status, now, now, pid)
        else:
            token, owner_pid = self._owner()
            sql = "UPDATE processes SET status = ?, updated = ?, ended = NULL, owner = ?, owner_pid = ? WHERE pid = ?"
            params = (status, now, token, owner_pid, pid)
        with self._atomic():
            cursor = self.conn.execute(sql, params)
            if cursor.rowcount == 0:
                raise FsError(f"no such process: {pid}")

    @op
    def set_process_usage(self, pid: int, context_tokens: int | None, kv_bytes: int | None) -> None:
        """Record a process's context size in tokens and the bytes of its KV state (shown by ``ps``)."""
        with self._atomic():
            self.conn.execute("UPDATE processes SET context_tokens = ?, kv_bytes = ? WHERE pid = ?",
                              (context_tokens, kv_bytes, pid))

    @op
    def kill_process(self, pid: int) -> int | None:
        """Mark an unfinished process ``killed``, for the program that runs it to stop it (its run
        queue polls for this: kernel/scheduler.py); returns that program's OS pid."""
        with self._atomic():
            row = self._one("SELECT status, owner_pid FROM processes WHERE pid = ?", (pid,))
            if row is None:
                raise UsageError(f"no process {pid}")
            if row["status"] in TERMINAL_STATUSES:
                raise UsageError(f"process {pid} is not running (it ended: {row['status']})")
            self.conn.execute("UPDATE processes SET status = 'killed', updated = ?, ended = ? WHERE pid = ?",
                              (time.time(), time.time(), pid))
        return row["owner_pid"]

    @op
    def process_statuses(self, pids: Iterable[int]) -> dict[int, str]:
        """The status of each of ``pids`` that exists (one query: a run queue polls it for kills)."""
        pids = [int(pid) for pid in pids]
        if not pids:
            return {}
        marks = ",".join("?" * len(pids))
        return {row[0]: row[1] for row in self.conn.execute(
            f"SELECT pid, status FROM processes WHERE pid IN ({marks})", pids)}

    def opened(self) -> None:
        # An open never fails for want of this: the next one tries again.
        try:
            self.mark_crashed()
        except LlmosError as error:
            log.warning("could not check for orphaned processes: %s", error)

    @op
    def mark_crashed(self) -> list[int]:
        """Mark ``crashed`` every unfinished process whose owning program has ended; return their pids.

        Safe with several programs at once: owners are checked by their lock files (a live
        one's lock cannot be taken), then one write transaction updates only processes that
        are still unfinished and still belong to an owner found gone."""
        if self.run_dir is None:
            return []
        # (status IN ('running', 'ready', 'waiting'), word for word: what the partial index of m009 covers)
        tokens = {row[0] for row in self.conn.execute(
            "SELECT DISTINCT owner FROM processes WHERE status IN ('running', 'ready', 'waiting') "
            "AND owner IS NOT NULL")}
        # Lock files of programs killed with no unfinished process are swept up too.
        gone = owners.find_gone(self.run_dir, tokens | owners.listed(self.run_dir))
        if not gone.tokens:
            return []
        try:
            now = time.time()
            marks = ",".join("?" * len(gone.tokens))
            with self.transaction():
                pids = [row[0] for row in self.conn.execute(
                    f"SELECT pid FROM processes WHERE status IN ('running', 'ready', 'waiting') AND owner IN ({marks})",
                    gone.tokens)]
                self.conn.execute(
                    f"UPDATE processes SET status = 'crashed', updated = ?, ended = ? "
                    f"WHERE status IN ('running', 'ready', 'waiting') AND owner IN ({marks})", (now, now, *gone.tokens))
        except BaseException:
            gone.release()  # keep the files: the next open tries again
            raise
        gone.forget()
        if pids:
            log.info("marked crashed (their program ended): pids %s", pids)
        return pids

    @op
    def get_process(self, pid: int) -> dict[str, Any]:
        """pid, parent, name, status, model, created, updated, ended (times are Unix seconds), and
        owner_pid, the OS pid of the llmos program that last ran it."""
        row = self._one(f"SELECT {_PROCESS_COLUMNS} FROM processes WHERE pid = ?", (pid,))
        if row is None:
            raise FsError(f"no such process: {pid}")
        return row

    @op
    def processes(self) -> list[dict[str, Any]]:
        """Every process, oldest first, with how many messages and syscalls it has."""
        return self._all(
            f"SELECT {_PROCESS_COLUMNS}, "
            "(SELECT count(*) FROM messages m WHERE m.pid = p.pid) AS messages, "
            "(SELECT count(*) FROM syscalls s WHERE s.pid = p.pid) AS syscalls "
            "FROM processes p ORDER BY pid")

    # --- messages ---------------------------------------------------------------------

    @op
    def add_message(self, pid: int, role: str, content: str, tokens: int = 0) -> int:
        """Append one message to a process's conversation; returns its seq (1, 2, ...)."""
        return self.add_messages(pid, [(role, content, tokens)])[0]

    @op
    def add_messages(self, pid: int, messages: Iterable[tuple[str, str, int] | dict[str, Any]]) -> list[int]:
        """Append several messages in one transaction; returns their seqs."""
        now = time.time()
        seqs = []
        with self._atomic():
            self._require_process(pid)
            seq = self._value("SELECT coalesce(max(seq), 0) FROM messages WHERE pid = ?", (pid,))
            rows = []
            for message in messages:
                if isinstance(message, dict):
                    role, content, tokens = message["role"], message.get("content"), message.get("tokens", 0)
                else:
                    role, content, tokens = message
                if content is None:
                    content = ""
                elif not isinstance(content, str):
                    content = json.dumps(content, ensure_ascii=False, default=_json_default)
                seq += 1
                seqs.append(seq)
                rows.append((pid, seq, str(role), content, int(tokens or 0), now))
            self.conn.executemany(
                "INSERT INTO messages (pid, seq, role, content, tokens, created) VALUES (?, ?, ?, ?, ?, ?)", rows)
        return seqs

    @op
    def messages(self, pid: int, include_swapped: bool = True) -> list[dict[str, Any]]:
        """A process's messages in order: pid, seq, role, content, tokens, swapped (bool), created."""
        where = "" if include_swapped else " AND swapped = 0"
        return [_message(r) for r in self._all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE pid = ?{where} ORDER BY seq", (pid,))]

    @op
    def search_messages(self, query: str, limit: int = 20, *, pid: int | None = None,
                        swapped: bool | None = None, any_word: bool = False) -> list[dict[str, Any]]:
        """Messages whose content has every word of ``query`` (FTS5, stemmed), best first.

        Each result is a message dict plus ``snippet`` (the matching part, words
        in ``[...]``) and ``rank`` (bm25, lower is better). Narrow with ``pid``
        and ``swapped`` (True: only messages evicted to swap). With
        ``any_word=True`` a message needs only one of the words (for recall by
        a whole sentence); those with more of them rank first.
        """
        if limit < 1:
            raise UsageError("limit must be at least 1")
        conditions, params = ["messages_fts MATCH ?"], [fts_query(query, any_word)]
        if pid is not None:
            conditions.append("m.pid = ?")
            params.append(pid)
        if swapped is not None:
            conditions.append("m.swapped = ?")
            params.append(int(swapped))
        params.append(limit)
        rows = self._all(
            f"SELECT m.pid, m.seq, m.role, m.content, m.tokens, m.swapped, m.created, "
            "snippet(messages_fts, 0, '[', ']', '…', 16) AS snippet, messages_fts.rank AS rank "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            f"WHERE {' AND '.join(conditions)} ORDER BY messages_fts.rank LIMIT ?", params)
        return [_message(r) for r in rows]

    @op
    def mark_swapped(self, pid: int, seqs: Iterable[int], swapped: bool = True) -> int:
        """Mark messages as evicted to swap (or back, with ``swapped=False``); returns how many changed."""
        seqs = list(seqs)
        with self._atomic():
            cursor = self.conn.executemany(
                "UPDATE messages SET swapped = ? WHERE pid = ? AND seq = ? AND swapped != ?",
                [(int(swapped), pid, seq, int(swapped)) for seq in seqs])
            return cursor.rowcount

    # --- syscalls ---------------------------------------------------------------------

    @op
    def record_syscall(self, pid: int | None, name: str, arguments: dict[str, Any], status: str,
                       result: Any = None, error: str | None = None, started: float | None = None,
                       ms: float = 0.0) -> int:
        """Append one syscall to the audit log; returns its id.

        ``arguments`` and ``result`` are stored as JSON (bytes as ``"<N bytes>"``,
        anything longer than :data:`MAX_LOGGED_CHARS` cut); ``started`` is Unix
        seconds (default: now), ``ms`` how long it took.
        """
        with self._atomic():
            self._require_process(pid)
            cursor = self.conn.execute(
                "INSERT INTO syscalls (pid, name, arguments, status, result, error, started, ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (pid, name, to_json(arguments), status, None if result is None else to_json(result),
                 None if error is None else str(error), time.time() if started is None else started, float(ms)))
            return cursor.lastrowid

    @op
    def syscalls(self, pid: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The audit log, oldest first (the last ``limit`` entries if given): id, pid, name,
        arguments, status, result, error, started, ms (arguments and result decoded)."""
        where, params = ("WHERE pid = ?", [pid]) if pid is not None else ("", [])
        sql = f"SELECT id, pid, name, arguments, status, result, error, started, ms FROM syscalls {where}"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id"
            params.append(limit)
        else:
            sql += " ORDER BY id"
        rows = self._all(sql, params)
        for row in rows:
            row["arguments"] = _from_json(row["arguments"])
            row["result"] = _from_json(row["result"])
        return rows

    # --- snapshots --------------------------------------------------------------------

    @op
    def add_snapshot_file(self, *, kind: str, file: str, model_sha256: str, prefix_sha256: str, n_tokens: int,
                          size: int, pid: int | None = None) -> int:
        """Record a snapshot kept in a file (``kind`` 'process' or 'prefix'); returns its id. A prefix
        recorded again (another llmos on the same home saved it meanwhile) replaces the old row."""
        with self._atomic():
            self._require_process(pid)
            now = time.time()
            cursor = self.conn.execute(
                "INSERT OR REPLACE INTO snapshots (pid, kind, model_sha256, prefix_sha256, n_tokens, size, file, "
                "created, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pid, kind, model_sha256, prefix_sha256, n_tokens, size, file, now, now))
            return cursor.lastrowid

    @op
    def snapshot_files(self, *, kind: str | None = None, pid: int | None = None, model_sha256: str | None = None,
                       prefix_sha256: str | None = None) -> list[dict[str, Any]]:
        """Snapshots kept in files, least recently used first: id, pid, kind, model_sha256,
        prefix_sha256, n_tokens, size, file, created, used."""
        where, params = ["file IS NOT NULL"], []
        for column, value in (("kind", kind), ("pid", pid), ("model_sha256", model_sha256),
                              ("prefix_sha256", prefix_sha256)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return self._all("SELECT id, pid, kind, model_sha256, prefix_sha256, n_tokens, size, file, created, used "
                         f"FROM snapshots WHERE {' AND '.join(where)} ORDER BY used, id", params)

    @op
    def orphaned_snapshots(self) -> list[dict[str, Any]]:
        """Process snapshots whose program has ended (crashed or killed before it could remove
        them): only the program that ran a process can use its snapshot. Prefixes are shared, and
        stay."""
        if self.run_dir is None:
            return []
        live = owners.listed(self.run_dir) | owners.own_tokens()   # lock files of programs still running
        rows = self._all("SELECT s.id, s.pid, s.file, p.owner FROM snapshots s LEFT JOIN processes p ON p.pid = s.pid "
                         "WHERE s.kind = 'process' AND s.file IS NOT NULL")
        return [row for row in rows if row["owner"] is None or row["owner"] not in live]

    @op
    def touch_snapshot(self, snapshot_id: int) -> None:
        with self._atomic():
            self.conn.execute("UPDATE snapshots SET used = ? WHERE id = ?", (time.time(), snapshot_id))

    @op
    def remove_snapshot(self, snapshot_id: int) -> None:
        with self._atomic():
            self.conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
