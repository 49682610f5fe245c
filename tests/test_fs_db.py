"""Opening llmos.db: migrations from an empty file, re-opening, newer/foreign/corrupt files."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading

import pytest
from fs_fixtures import database_before, run_llmos

from llmos_shell.errors import FsError
from llmos_shell.fs import CorruptDatabase, Filesystem
from llmos_shell.fs import migrations as mig


def applied(path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT name, applied_at FROM _sqlite_migrations WHERE migration_set = 'llmos' "
                            "ORDER BY id").fetchall()
    finally:
        conn.close()


def test_migrations_are_numbered_and_unique():
    names = mig.known()
    assert len(set(names)) == len(names) == mig.schema_version() >= 6
    assert [int(name[1:4]) for name in names] == list(range(1, len(names) + 1))
    with pytest.raises(ValueError, match="should be named m"):
        mig.migration(lambda db: None)
    assert mig.known() == names


def test_migrate_from_an_empty_file(tmp_path):
    path = tmp_path / "llmos.db"
    path.write_bytes(b"")
    fs = Filesystem.open(path)
    try:
        assert fs.schema_version() == mig.schema_version()
        tables = set(fs.db.table_names())
        assert {"files", "files_fts", "processes", "messages", "messages_fts", "syscalls", "snapshots"} <= tables
        assert fs.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert fs.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert fs.ls("/") == [] and fs.stat("/")["kind"] == "dir"
        assert fs.integrity_check() == "ok"
    finally:
        fs.close()
    assert [name for name, _ in applied(path)] == mig.known()


def test_reopen_keeps_data_and_applies_nothing_twice(tmp_path):
    path = tmp_path / "llmos.db"
    with Filesystem.open(path) as fs:
        fs.write("/kept.txt", "still here")
        pid = fs.create_process("p")
        fs.add_message(pid, "user", "remember me")
    before = applied(path)
    for _ in range(2):
        with Filesystem.open(path) as fs:
            assert fs.read("/kept.txt") == b"still here"
            assert fs.search_messages("remember")[0]["content"] == "remember me"
    assert applied(path) == before


def test_upgrade_from_an_older_schema(tmp_path):
    """A database made by an older llmos (first two migrations) gets the rest, data intact."""
    path = tmp_path / "llmos.db"
    conn = database_before(path, "m003_processes")
    conn.execute("INSERT INTO files (path, parent, name, kind, content, is_text, mime, size, created, modified) "
                 "VALUES ('/old.txt', 1, 'old.txt', 'file', CAST('from the past' AS BLOB), 1, 'text/plain', 13, 0, 0)")
    conn.close()
    with Filesystem.open(path) as fs:
        assert fs.schema_version() == mig.schema_version()
        assert fs.read_text("/old.txt") == "from the past"
        assert fs.grep("past")[0]["path"] == "/old.txt"
        assert fs.create_process("new") == 1
    assert [name for name, _ in applied(path)] == mig.known()


def test_upgrade_moves_content_into_blobs_with_versions_and_search_intact(tmp_path):
    """A database of the schema before content blobs (m011), with files and kept versions."""
    path = tmp_path / "llmos.db"
    conn = database_before(path, "m012_content_blobs")
    # what llmos wrote at that schema: content in `files`, old content in `blobs` (refs), a version
    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    for name, data, is_text in (("a.txt", b"second words", 1), ("b.txt", b"second words", 1),
                                ("c.bin", b"\x00\x01", 0)):
        conn.execute("INSERT INTO files (path, parent, name, kind, content, is_text, mime, size, sha256, created, "
                     "modified) VALUES (?, 1, ?, 'file', ?, ?, 'text/plain', ?, ?, 0, 0)",
                     ("/" + name, name, data, is_text, len(data), sha(data)))
    conn.execute("INSERT INTO blobs (sha256, size, content, refs) VALUES (?, 11, ?, 1)",
                 (sha(b"first words"), b"first words"))
    conn.execute("INSERT INTO versions (path, sha256, size, mime, change, created) "
                 "VALUES ('/a.txt', ?, 11, 'text/plain', 'write', 0)", (sha(b"first words"),))
    conn.close()
    with Filesystem.open(path) as fs:
        assert fs.schema_version() == mig.schema_version()
        assert fs.read_text("/a.txt") == fs.read_text("/b.txt") == "second words"
        assert fs.read("/c.bin") == b"\x00\x01"
        assert [r["path"] for r in fs.grep("second")] == ["/a.txt", "/b.txt"] and fs.grep("first") == []
        assert fs.version_content("/a.txt") == b"first words"
        assert fs.versions_usage()["bytes"] == len("first words")
        live = dict(fs.conn.execute("SELECT CAST(content AS TEXT), live FROM blobs").fetchall())
        assert live == {"first words": 0, "second words": 2, "\x00\x01": 1}
        fs.restore("/a.txt")
        assert fs.read_text("/a.txt") == "first words" and fs.grep("first")[0]["path"] == "/a.txt"


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "llmos.db"
    Filesystem.open(path).close()

    def broken(db):
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    broken.__name__ = f"m{mig.schema_version() + 1:03d}_broken"
    monkeypatch.setattr(mig, "MIGRATIONS", list(mig.MIGRATIONS))
    mig.migration(broken)
    with pytest.raises(RuntimeError, match="migration bug"):
        Filesystem.open(path)
    monkeypatch.undo()
    with Filesystem.open(path) as fs:
        assert fs.schema_version() == mig.schema_version()
        assert "half_done" not in fs.db.table_names()
    assert [name for name, _ in applied(path)] == mig.known()


def test_database_from_a_newer_llmos_is_refused_untouched(tmp_path):
    path = tmp_path / "llmos.db"
    with Filesystem.open(path) as fs:
        fs.conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                        "VALUES ('llmos', 'm099_from_the_future', 'later')")
        fs.conn.execute("PRAGMA user_version = 99")
    with pytest.raises(FsError, match=r"newer llmos .*upgrade llmos"):
        Filesystem.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()


def test_unknown_applied_migration_alone_is_refused(tmp_path):
    path = tmp_path / "llmos.db"
    with Filesystem.open(path) as fs:
        fs.conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                        "VALUES ('llmos', 'm006_renamed_elsewhere', 'later')")
        fs.conn.execute("PRAGMA user_version = 0")
    with pytest.raises(FsError, match="unknown migration m006_renamed_elsewhere"):
        Filesystem.open(path)


def test_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(FsError, match="not an llmos database .*customers"):
        Filesystem.open(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    with pytest.raises(FsError, match="not an llmos database"):
        Filesystem.open(path)


@pytest.mark.parametrize("content", [
    b"this is not a database at all, just text\n" * 100,
    bytes(range(256)) * 64,
    b"SQLite format 3\x00" + b"\xff" * 4000,
])
def test_garbage_file_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "llmos.db"
    path.write_bytes(content)
    with pytest.raises(CorruptDatabase) as caught:
        Filesystem.open(path)
    message = str(caught.value)
    assert str(path) in message and "damaged or not an SQLite database" in message and "\n" not in message
    assert path.read_bytes() == content  # never "repaired" by overwriting


def test_damaged_pages_give_a_clear_error(tmp_path):
    path = tmp_path / "llmos.db"
    with Filesystem.open(path) as fs:
        with fs.transaction():
            for i in range(300):
                fs.write(f"/d{i % 7}/f{i}.txt", f"file number {i} " * 40)
        fs.checkpoint()
    size = path.stat().st_size
    page = 4096
    with open(path, "r+b") as handle:  # keep page 1 (header and schema root), wreck every other page
        for offset in range(page, size, page):
            handle.seek(offset)
            handle.write(b"\xa5" * page)
    with pytest.raises(CorruptDatabase, match="damaged"):
        fs = Filesystem.open(path)
        try:
            fs.walk("/")
            fs.grep("number")
        finally:
            fs.close()


def test_corrupt_database_on_the_command_line(tmp_path):
    (tmp_path / "llmos.db").write_bytes(b"garbage" * 1000)
    done = run_llmos(tmp_path, "fs", "ls")
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert stderr.startswith("llmos: error: ") and "damaged" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr


@pytest.mark.parametrize("attempt", range(5))
def test_concurrent_first_opens_migrate_once(tmp_path, attempt):
    """Four connections opening a new file at once: one migrates, none fails (WAL switch included)."""
    path = tmp_path / "llmos.db"
    errors, opened = [], []
    barrier = threading.Barrier(4)

    def opener():
        barrier.wait()
        try:
            fs = Filesystem.open(path)
            opened.append(fs)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for fs in opened:
        fs.write(f"/from-{id(fs)}", "x")
        fs.close()
    assert errors == [] and len(opened) == 4
    assert [name for name, _ in applied(path)] == mig.known()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FsError, match="cannot use .*unable to open"):
        Filesystem.open(tmp_path / "no" / "such" / "dir" / "llmos.db")


def test_memory_database_works():
    with Filesystem.open(":memory:") as fs:
        fs.write("/a", "b")
        assert fs.read("/a") == b"b"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write read-only files")
def test_read_only_file_is_a_clear_error(tmp_path):  # pragma: no cover - CI runs as root
    path = tmp_path / "llmos.db"
    Filesystem.open(path).close()
    path.chmod(0o444)
    with pytest.raises(FsError):
        with Filesystem.open(path) as fs:
            fs.write("/x", "y")
