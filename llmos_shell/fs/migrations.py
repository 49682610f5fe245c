"""The schema of ``llmos.db``, built by numbered migrations kept in code.

Each migration is a small function ``mNNN_what(db)`` taking a
``sqlite_utils.Database``, registered with ``@migration`` in order. They are
applied with sqlite-utils' migrations helper: each once, in a transaction,
recorded in ``_sqlite_migrations`` (set ``llmos``). ``PRAGMA user_version``
holds how many have been applied and ``PRAGMA application_id`` marks the file
as an llmos database, so opening an up-to-date database costs two pragmas (and
does not even import sqlite-utils, which pulls in numpy when it is installed).

A database that records a migration this code does not know (written by a
newer llmos) is refused, never modified. Add a migration by appending a
function with the next number; never edit, rename or reorder applied ones.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from typing import TYPE_CHECKING, Callable

from llmos_shell.errors import FsError

if TYPE_CHECKING:  # pragma: no cover
    import sqlite_utils

APPLICATION_ID = 0x4C4C4F53  # "LLOS"
MIGRATION_SET = "llmos"
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"

#: Every migration, in the order they apply.
MIGRATIONS: list[Callable[["sqlite_utils.Database"], None]] = []


def migration(function: Callable[["sqlite_utils.Database"], None]) -> Callable[["sqlite_utils.Database"], None]:
    """Register the next migration (its name must be ``mNNN_...`` with the next number)."""
    expected = f"m{len(MIGRATIONS) + 1:03d}_"
    if not function.__name__.startswith(expected):
        raise ValueError(f"migration {function.__name__} should be named {expected}...")
    MIGRATIONS.append(function)
    return function


@migration
def m001_files(db: sqlite_utils.Database) -> None:
    # content is always a BLOB (byte-exact); `text` is the same bytes seen as
    # text for text files, NULL for binary ones: that is what FTS5 indexes.
    db.executescript("""
        CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            parent INTEGER REFERENCES files(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
            content BLOB,
            is_text INTEGER NOT NULL DEFAULT 0,
            mime TEXT,
            size INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT,
            created REAL NOT NULL,
            modified REAL NOT NULL,
            text TEXT GENERATED ALWAYS AS (CASE WHEN is_text THEN CAST(content AS TEXT) END) VIRTUAL
        );
        CREATE INDEX files_parent_name ON files(parent, name);
    """)
    now = time.time()
    db.execute("INSERT INTO files (path, parent, name, kind, created, modified) VALUES ('/', NULL, '', 'dir', ?, ?)",
               [now, now])
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


@migration
def m002_files_fts(db: sqlite_utils.Database) -> None:
    db["files"].enable_fts(["text"], fts_version="FTS5", create_triggers=True, tokenize=FTS_TOKENIZER)


@migration
def m003_processes(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE processes (
            pid INTEGER PRIMARY KEY,
            parent INTEGER REFERENCES processes(pid) ON DELETE SET NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            model TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            ended REAL
        );
        CREATE INDEX processes_parent ON processes(parent);
    """)


@migration
def m004_messages(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            pid INTEGER NOT NULL REFERENCES processes(pid) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            tokens INTEGER NOT NULL DEFAULT 0,
            swapped INTEGER NOT NULL DEFAULT 0 CHECK (swapped IN (0, 1)),
            created REAL NOT NULL,
            UNIQUE (pid, seq)
        );
    """)
    db["messages"].enable_fts(["content"], fts_version="FTS5", create_triggers=True, tokenize=FTS_TOKENIZER)


@migration
def m005_syscalls(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE syscalls (
            id INTEGER PRIMARY KEY,
            pid INTEGER REFERENCES processes(pid) ON DELETE CASCADE,
            name TEXT NOT NULL,
            arguments TEXT NOT NULL,
            status TEXT NOT NULL,
            result TEXT,
            error TEXT,
            started REAL NOT NULL,
            ms REAL NOT NULL
        );
        CREATE INDEX syscalls_pid ON syscalls(pid, id);
    """)


@migration
def m006_snapshots(db: sqlite_utils.Database) -> None:
    db.executescript("""
        CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            pid INTEGER NOT NULL REFERENCES processes(pid) ON DELETE CASCADE,
            created REAL NOT NULL,
            state BLOB NOT NULL
        );
        CREATE INDEX snapshots_pid ON snapshots(pid, id);
    """)


@migration
def m007_process_owners(db: sqlite_utils.Database) -> None:
    # owner: the lock-file token of the llmos program running the process (fs/owners.py), so
    # that a process whose program died can be told from one still running; owner_pid: that
    # program's OS pid, for people. Processes left unfinished before owners were recorded
    # cannot be checked: they are marked crashed now.
    # (statements one by one: executescript would commit the migration's transaction half-way)
    now = time.time()
    db.execute("ALTER TABLE processes ADD COLUMN owner TEXT")
    db.execute("ALTER TABLE processes ADD COLUMN owner_pid INTEGER")
    db.execute("CREATE INDEX processes_unfinished ON processes(owner) WHERE status IN ('running', 'ready')")
    db.execute("UPDATE processes SET status = 'crashed', updated = ?, ended = ? "
               "WHERE status IN ('running', 'ready')", [now, now])



@migration
def m008_snapshot_files(db: sqlite_utils.Database) -> None:
    # KV snapshots live in files under $LLMOS_HOME/snapshots/ (megabytes each); a row records one:
    # its kind ('process': a process's context saved at a context switch; 'prefix': a pinned prefix
    # any process of that model and table starts from; 'state': the older in-database form), the
    # model and the sha256 of its exact tokens. A prefix has no process, so pid becomes nullable:
    # the table is rebuilt (one statement at a time, inside the migration's transaction).
    db.execute("""
        CREATE TABLE snapshots_new (
            id INTEGER PRIMARY KEY,
            pid INTEGER REFERENCES processes(pid) ON DELETE CASCADE,
            kind TEXT NOT NULL DEFAULT 'state' CHECK (kind IN ('state', 'process', 'prefix')),
            model_sha256 TEXT,
            prefix_sha256 TEXT,
            n_tokens INTEGER NOT NULL DEFAULT 0,
            size INTEGER NOT NULL DEFAULT 0,
            file TEXT,
            state BLOB,
            created REAL NOT NULL,
            used REAL NOT NULL,
            CHECK (state IS NOT NULL OR file IS NOT NULL)
        )""")
    db.execute("INSERT INTO snapshots_new (id, pid, kind, size, state, created, used) "
               "SELECT id, pid, 'state', length(state), state, created, created FROM snapshots")
    db.execute("DROP TABLE snapshots")
    db.execute("ALTER TABLE snapshots_new RENAME TO snapshots")
    db.execute("CREATE INDEX snapshots_pid ON snapshots(pid, id)")
    db.execute("CREATE INDEX snapshots_used ON snapshots(used) WHERE file IS NOT NULL")
    db.execute("CREATE UNIQUE INDEX snapshots_prefix ON snapshots(model_sha256, prefix_sha256) "
               "WHERE kind = 'prefix'")


@migration
def m009_process_usage(db: sqlite_utils.Database) -> None:
    # What `ps` shows of a live process: its context in tokens and the bytes of its KV state (on
    # the CPU or in a snapshot), after its last turn. 'waiting' (in a run queue) is unfinished too,
    # so the index of unfinished processes covers it.
    db.execute("ALTER TABLE processes ADD COLUMN context_tokens INTEGER")
    db.execute("ALTER TABLE processes ADD COLUMN kv_bytes INTEGER")
    db.execute("DROP INDEX processes_unfinished")
    db.execute("CREATE INDEX processes_unfinished ON processes(owner) "
               "WHERE status IN ('running', 'ready', 'waiting')")


@migration
def m010_versions(db: sqlite_utils.Database) -> None:
    # Old versions of files (fs/versions.py). A version is the state of a path just before one
    # change: its content (a blob, NULL when no file was there: the change created it) and who made
    # the change (pid, and the request: a shell line, a task's turn, one `llmos fs` command), so a
    # request can be undone. Content is stored once per sha256; versions_usage counts the blobs'
    # bytes (kept by triggers, so no write ever sums the table) against LLMOS_VERSIONS_MB. No foreign
    # key from versions to blobs: its checks cost every write, and fs/versions.py deletes a blob only
    # once no version refers to it (found through versions_sha256).
    db.execute("""
        CREATE TABLE blobs (
            sha256 TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            content BLOB NOT NULL
        )""")
    db.execute("""
        CREATE TABLE versions (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL,
            sha256 TEXT,
            size INTEGER,
            mime TEXT,
            change TEXT NOT NULL,
            pid INTEGER,
            request TEXT,
            created REAL NOT NULL,
            undone REAL
        )""")
    db.execute("CREATE INDEX versions_path ON versions(path, id)")
    db.execute("CREATE INDEX versions_sha256 ON versions(sha256) WHERE sha256 IS NOT NULL")
    db.execute("CREATE TABLE versions_usage (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL)")
    db.execute("INSERT INTO versions_usage (id, bytes) VALUES (1, 0)")
    db.execute("CREATE TRIGGER blobs_added AFTER INSERT ON blobs BEGIN "
               "UPDATE versions_usage SET bytes = bytes + new.size WHERE id = 1; END")
    db.execute("CREATE TRIGGER blobs_removed AFTER DELETE ON blobs BEGIN "
               "UPDATE versions_usage SET bytes = bytes - old.size WHERE id = 1; END")


@migration
def m011_blob_refs(db: sqlite_utils.Database) -> None:
    # Each blob counts the versions that hold it (refs), so the budget can drop a blob the moment
    # its last version goes without an index on versions.sha256: that index cost every overwrite
    # a random B-tree insert (bench/fs.py, issue 24). Counted here once for the versions kept so far.
    db.execute("ALTER TABLE blobs ADD COLUMN refs INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE blobs SET refs = (SELECT count(*) FROM versions v WHERE v.sha256 = blobs.sha256)")
    db.execute("DROP INDEX versions_sha256")


@migration
def m012_content_blobs(db: sqlite_utils.Database) -> None:
    # A file's content moves into `blobs` too: a file row names its content by sha256, and a blob
    # counts the files holding it (`live`) and the kept versions holding it (`kept`, was `refs`).
    # An overwrite then copies nothing: the old blob stays where it is and the new version takes
    # over the file's reference (bench/fs.py, issue 24); `cp` copies no bytes either. The budget
    # counts the blobs some version holds (kept > 0), in versions_usage, kept by fs/versions.py
    # (triggers on every blob cost every write). FTS5 now reads text through the view file_texts;
    # its triggers re-index only when content changes (a rename no longer re-indexes the file).
    conn = db.conn
    for file_id, content in conn.execute(
            "SELECT id, content FROM files WHERE kind = 'file' AND sha256 IS NULL").fetchall():
        conn.execute("UPDATE files SET sha256 = ?, size = ? WHERE id = ?",
                     (hashlib.sha256(bytes(content or b"")).hexdigest(), len(content or b""), file_id))
    db.execute("DROP TRIGGER blobs_added")
    db.execute("DROP TRIGGER blobs_removed")
    db.execute("ALTER TABLE blobs RENAME COLUMN refs TO kept")
    db.execute("ALTER TABLE blobs ADD COLUMN live INTEGER NOT NULL DEFAULT 0")
    db.execute("INSERT INTO blobs (sha256, size, content, kept, live) "
               "SELECT sha256, length(coalesce(content, x'')), coalesce(content, x''), 0, count(*) FROM files "
               "WHERE kind = 'file' GROUP BY sha256 ON CONFLICT (sha256) DO UPDATE SET live = excluded.live")
    db["files"].disable_fts()
    db.execute("ALTER TABLE files DROP COLUMN text")
    db.execute("ALTER TABLE files DROP COLUMN content")
    db.execute("CREATE VIEW file_texts AS SELECT f.id, CAST(b.content AS TEXT) AS text "
               "FROM files f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.is_text = 1")
    db.execute(f"CREATE VIRTUAL TABLE files_fts USING fts5(text, content='file_texts', content_rowid='id', "
               f"tokenize='{FTS_TOKENIZER}')")
    text_of = "SELECT {row}.id, CAST(content AS TEXT) FROM blobs WHERE sha256 = {row}.sha256 AND {row}.is_text = 1"
    db.execute("CREATE TRIGGER files_ai AFTER INSERT ON files BEGIN "
               f"INSERT INTO files_fts (rowid, text) {text_of.format(row='new')}; END")
    db.execute("CREATE TRIGGER files_ad AFTER DELETE ON files BEGIN "
               f"INSERT INTO files_fts (files_fts, rowid, text) SELECT 'delete', * FROM ({text_of.format(row='old')}); END")
    db.execute("CREATE TRIGGER files_au AFTER UPDATE OF sha256, is_text ON files BEGIN "
               f"INSERT INTO files_fts (files_fts, rowid, text) SELECT 'delete', * FROM ({text_of.format(row='old')}); "
               f"INSERT INTO files_fts (rowid, text) {text_of.format(row='new')}; END")
    db.execute("INSERT INTO files_fts (files_fts) VALUES ('rebuild')")
    db.execute("UPDATE versions_usage SET bytes = (SELECT total(size) FROM blobs WHERE kept > 0) WHERE id = 1")


def known() -> list[str]:
    """The names of the migrations this code knows, in order."""
    return [function.__name__ for function in MIGRATIONS]


def schema_version() -> int:
    """The ``user_version`` of a database with every known migration applied."""
    return len(MIGRATIONS)


def helper():
    """sqlite-utils' ``Migrations`` set holding :data:`MIGRATIONS` (imports sqlite-utils)."""
    from sqlite_utils.migrations import Migrations

    migrations = Migrations(MIGRATION_SET)
    for function in MIGRATIONS:
        migrations(name=function.__name__)(function)
    return migrations


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def is_current(conn: sqlite3.Connection) -> bool:
    """True if the database is an llmos one at exactly this code's schema version (cheap)."""
    return (_pragma(conn, "user_version") == schema_version()
            and _pragma(conn, "application_id") == APPLICATION_ID)


def migrate(conn: sqlite3.Connection, where: str) -> list[str]:
    """Bring the schema up to date in one write transaction; return the names applied.

    Safe when several processes open a new database at once: the first takes
    the write lock and migrates, the others wait and then find nothing to do.
    Each migration runs in a savepoint of that transaction (sqlite-utils'
    ``atomic``), so a failing one leaves the database as it was.
    """
    import sqlite_utils

    db = sqlite_utils.Database(conn, execute_plugins=False)
    migrations = helper()
    conn.execute("BEGIN IMMEDIATE")
    try:
        _refuse_foreign_or_newer(db, migrations, where)
        pending = [m.name for m in migrations.pending(db)]
        migrations.apply(db)
        conn.execute(f"PRAGMA user_version = {schema_version()}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return pending


def _refuse_foreign_or_newer(db: "sqlite_utils.Database", migrations, where: str) -> None:
    version = _pragma(db.conn, "user_version")
    app_id = _pragma(db.conn, "application_id")
    if app_id not in (0, APPLICATION_ID):
        raise FsError(f"{where} is not an llmos database (application id {app_id:#x})")
    applied = [m.name for m in migrations.applied(db)]
    unknown = [name for name in applied if name not in known()]
    if version > schema_version() or unknown:
        raise FsError(f"{where} was written by a newer llmos (schema {max(version, len(applied))}, "
                      f"this llmos knows {schema_version()}"
                      f"{': unknown migration ' + unknown[0] if unknown else ''}): upgrade llmos to open it")
    if app_id == 0 and not applied:
        others = [name for name in db.table_names() if not name.startswith("sqlite_")]
        if others:
            raise FsError(f"{where} is not an llmos database (it has tables {', '.join(others[:5])}): "
                          "choose another --home")


def integrity_check(conn: sqlite3.Connection) -> str:
    """``PRAGMA integrity_check`` as one string ('ok' when the file is sound)."""
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(row[0]) for row in rows)
