"""The connection to ``llmos.db``: opening, transactions, locking, error translation.

One :class:`Store` owns one SQLite connection (``Store.db`` wraps it in
sqlite-utils for migrations and introspection), opened
with ``check_same_thread=False`` so the shell's thread and a syscall worker
can share it; a re-entrant lock serialises every use of the connection, so
each public method is atomic with respect to other threads. Other processes
(``llmos fs`` while the shell runs) are serialised by SQLite itself: WAL mode
lets readers run during a write, writers wait up to ``timeout`` seconds.

Every write runs in a transaction (``BEGIN IMMEDIATE``: the write lock is
taken up front, so two writers never deadlock on an upgrade). Group many
writes into one with :meth:`Store.transaction`.

``synchronous=NORMAL`` (SQLite's advice for WAL) survives a crashed or killed
process with every committed transaction; after a power cut the last few
commits may be rolled back, but the file is never corrupt. Pass
``synchronous="FULL"`` to :meth:`Filesystem.open` to trade speed for those too.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import sqlite3
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from llmos_shell.errors import FsError, LlmosError
from llmos_shell.fs import migrations

if TYPE_CHECKING:  # pragma: no cover
    import sqlite_utils

F = TypeVar("F", bound=Callable[..., Any])


class CorruptDatabase(FsError):
    """``llmos.db`` is not an SQLite database, or is damaged."""


class DatabaseBusy(FsError):
    """Another process held the write lock for longer than the timeout."""


def translate_error(error: sqlite3.Error, where: str) -> LlmosError:
    """One clear line for an SQLite error."""
    message = str(error)
    lowered = message.lower()
    if isinstance(error, sqlite3.ProgrammingError) and "closed" in lowered:
        return FsError("the filesystem is closed")
    if "locked" in lowered or "busy" in lowered:
        return DatabaseBusy(f"{where} is busy (another llmos is writing to it): try again")
    if ("not a database" in lowered or "malformed" in lowered or "corrupt" in lowered
            or isinstance(error, sqlite3.DatabaseError) and type(error) is sqlite3.DatabaseError):
        return CorruptDatabase(f"{where} is damaged or not an SQLite database ({message}): "
                               "restore a backup, or move it away to start a new one")
    if "unable to open" in lowered or "readonly" in lowered or "disk i/o" in lowered or "disk is full" in lowered:
        return FsError(f"cannot use {where}: {message}")
    return FsError(f"database error in {where}: {message}")


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL. Needs a moment's exclusive lock on a new file, and SQLite
    reports "locked" at once rather than waiting when several processes race
    to do it: retry until ``timeout``. On a WAL file already it is a no-op."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.03))


def op(method: F) -> F:
    """Run a public method under the connection lock, turning SQLite errors into FsError."""

    @functools.wraps(method)
    def wrapper(self: "Store", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as error:
                raise translate_error(error, self.where) from error

    return wrapper  # type: ignore[return-value]


class Store:
    """An open ``llmos.db``: the connection, its lock and its transactions."""

    def __init__(self, conn: sqlite3.Connection, where: str, run_dir: Path | None = None) -> None:
        self.conn = conn
        self.where = where
        # Where the lock files of the programs running this database's processes live
        # (fs/owners.py): ``run/`` next to the file; None for an in-memory database.
        self.run_dir = run_dir
        self._lock = threading.RLock()
        self._closed = False
        self._savepoints = itertools.count()
        self._budget_due = False   # see _before_commit
        self._usage_delta = 0      # bytes the versions' budget gained in this transaction, not written yet

    def _before_commit(self) -> None:
        """Called inside the outermost transaction just before it commits (the versions' budget)."""

    @cached_property
    def db(self) -> "sqlite_utils.Database":
        """The same connection as a ``sqlite_utils.Database``, for introspection and one-off queries.

        Made on first use: sqlite-utils imports numpy and pandas when they are
        installed, which the common paths (open, read, write) don't need.
        """
        import sqlite_utils

        return sqlite_utils.Database(self.conn, execute_plugins=False)

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, synchronous: str = "NORMAL", timeout: float = 15.0,
             versions_mb: float | None = None):
        """Open (creating and migrating if needed) the database at ``path``.

        ``versions_mb``: the budget of old versions of files (fs/versions.py; None: the default, 0: none kept).

        Raises :class:`CorruptDatabase` for a file that is not a sound SQLite
        database, and :class:`~llmos_shell.errors.FsError` for one written by a
        newer llmos or by another program.
        """
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"bad synchronous mode {synchronous!r}")
        name = str(path)
        where = "the in-memory database" if name == ":memory:" else name
        try:
            conn = sqlite3.connect(name, timeout=timeout, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as error:
            raise translate_error(error, where) from error
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA recursive_triggers = ON")
            if name != ":memory:":
                _enable_wal(conn, timeout)
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            if not migrations.is_current(conn):
                migrations.migrate(conn, where)
        except LlmosError:
            conn.close()
            raise
        except sqlite3.Error as error:
            conn.close()
            raise translate_error(error, where) from error
        # Resolved, so that every program finds the same folder however it names the file.
        store = cls(conn, where, None if name == ":memory:" else Path(name).resolve().parent / "run")
        if versions_mb is not None:
            if not 0 <= versions_mb < float("inf"):
                raise ValueError(f"bad versions budget {versions_mb!r}")
            store.versions_bytes = int(versions_mb * (1 << 20))
        try:
            store.opened()
        except BaseException:
            store.close()
            raise
        return store

    def opened(self) -> None:
        """Called once the database is open and migrated (the records mark orphans here)."""

    @op
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- transactions -----------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Store"]:
        """Group writes into one transaction: all of them are committed, or none.

        Holds the connection lock (other threads wait) and SQLite's write lock
        (other processes' writers wait; their readers don't). Nested uses
        become savepoints. Batching is also much faster than one commit per write::

            with fs.transaction():
                for i in range(1000):
                    fs.write(f"/data/{i}.txt", "...")
        """
        with self._lock:
            conn = self.conn
            if conn.in_transaction:
                name = f"llmos_{next(self._savepoints)}"
                conn.execute(f"SAVEPOINT {name}")
                usage_delta = self._usage_delta
                try:
                    yield self
                except BaseException:
                    self._usage_delta = usage_delta
                    if conn.in_transaction:
                        conn.execute(f"ROLLBACK TO {name}")
                        conn.execute(f"RELEASE {name}")
                    raise
                conn.execute(f"RELEASE {name}")
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise translate_error(error, self.where) from error
            try:
                yield self
            except BaseException:
                self._budget_due, self._usage_delta = False, 0
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                self._before_commit()
                conn.execute("COMMIT")
            except sqlite3.Error as error:
                self._budget_due, self._usage_delta = False, 0
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise translate_error(error, self.where) from error

    @contextlib.contextmanager
    def _atomic(self) -> Iterator["Store"]:
        """A transaction for one operation, joining the caller's if one is open.

        For operations whose checks all come before their writes (a failed
        check changes nothing): they need no savepoint of their own inside a
        batch, which makes batched writes about twice as fast.
        """
        with self._lock:
            if self.conn.in_transaction:
                yield self
            else:
                with self.transaction():
                    yield self

    # --- queries ----------------------------------------------------------------------

    def _one(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        cursor = self.conn.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        return {d[0]: value for d, value in zip(cursor.description, row)}

    def _all(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        keys = [d[0] for d in cursor.description]
        return [dict(zip(keys, row)) for row in cursor]

    def _value(self, sql: str, params: Any = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # --- maintenance ------------------------------------------------------------------

    @op
    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: 'ok', or what is wrong."""
        return migrations.integrity_check(self.conn)

    @op
    def schema_version(self) -> int:
        return self._value("PRAGMA user_version")

    @op
    def checkpoint(self) -> None:
        """Copy the WAL into the main file (SQLite also does this on its own)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
