"""No orphan processes: a process whose llmos program ended without finishing it is marked crashed.

Owners are other OS processes here (small Python children), since a program's own
processes are alive by definition. Each child opens the database, starts processes
and then waits, exits, or is killed.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from conftest import run_llmos
from fs_fixtures import database_before
from llmos_shell.fs import Filesystem, migrations

CHILD = """
import sys, time
from llmos_shell.fs import Filesystem
db, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fs = Filesystem.open(db)
pids = []
for i in range(count):
    pid = fs.create_process(f"child {i}", model="none")
    if i % 2 == 0:
        fs.set_process_status(pid, "running")
    fs.add_message(pid, "user", f"hello {i}")
    pids.append(pid)
finished = fs.create_process("finished", model="none")
fs.set_process_status(finished, "ok")
print(" ".join(map(str, pids + [finished])), flush=True)
if mode == "hold":
    time.sleep(600)
"""


def start_child(db, count: int = 3, mode: str = "hold") -> tuple[subprocess.Popen, list[int], int]:
    """A child llmos program that starts ``count`` processes (running or ready) and one that finished."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(count), mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line.strip(), child.stderr.read()
    *pids, finished = map(int, line.split())
    return child, pids, finished


def statuses(db) -> dict[int, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT pid, status FROM processes"))
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "home" / "llmos.db"
    path.parent.mkdir()
    Filesystem.open(path).close()
    return path


def test_a_killed_owners_processes_are_crashed_at_the_next_open(db):
    child, pids, finished = start_child(db)
    try:
        with Filesystem.open(db) as fs:        # the owner is alive: nothing changes
            assert [fs.get_process(pid)["status"] for pid in pids] == ["running", "ready", "running"]
            assert fs.get_process(pids[0])["owner_pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(list((db.parent / "run").glob("*.lock"))) == 1    # the dead owner's file is still there
    with Filesystem.open(db) as fs:
        rows = {pid: fs.get_process(pid) for pid in pids}
        assert {row["status"] for row in rows.values()} == {"crashed"}
        assert all(row["ended"] is not None for row in rows.values())
        assert fs.get_process(finished)["status"] == "ok"       # a final status is never changed
        assert [m["content"] for m in fs.messages(pids[1])] == ["hello 1"]
        assert fs.integrity_check() == "ok"
    assert list((db.parent / "run").glob("*.lock")) == []      # and the file went with them


def test_a_program_that_exits_without_finishing_leaves_crashed_processes(db):
    child, pids, _ = start_child(db, mode="exit")
    assert child.wait(30) == 0
    assert set(statuses(db)[pid] for pid in pids) <= {"running", "ready"}   # nobody has looked yet
    assert list((db.parent / "run").glob("*.lock")) == []                 # removed at exit
    done = run_llmos("ps", home=db.parent, timeout=120)                   # `llmos ps` opens the database
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("crashed") == len(pids)
    assert "running" not in done.stdout


def test_this_programs_own_processes_are_never_marked(db):
    with Filesystem.open(db) as fs:
        pid = fs.create_process("mine")
        fs.set_process_status(pid, "running")
        with Filesystem.open(db) as again:
            assert again.mark_crashed() == []
    with Filesystem.open(db) as fs:
        assert fs.get_process(pid)["status"] == "running"
        fs.set_process_status(pid, "ok")


def test_a_process_taken_over_by_a_live_program_is_its_own(db):
    child, pids, _ = start_child(db, count=1)
    with Filesystem.open(db) as fs:
        fs.set_process_status(pids[0], "running")          # this program runs it now
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert fs.mark_crashed() == []
        assert fs.get_process(pids[0])["status"] == "running"
        assert fs.get_process(pids[0])["owner_pid"] != child.pid
        fs.set_process_status(pids[0], "ok")


def test_many_programs_at_once_mark_only_the_dead_owners_processes(db):
    alive = [start_child(db) for _ in range(3)]
    dead = [start_child(db) for _ in range(3)]
    try:
        for child, _, _ in dead:
            child.send_signal(signal.SIGKILL)
            child.wait()
        marked: list[list[int]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def sweep() -> None:
            try:
                fs = Filesystem.open(db)   # (its own open sweeps too; mark_crashed again to race)
                start.wait()
                marked.append(fs.mark_crashed())
                fs.close()
            except BaseException as error:  # reported below
                errors.append(error)

        # six openers in three other programs and in threads of this one, all at once
        openers = [subprocess.Popen([sys.executable, "-c", "import sys\nfrom llmos_shell.fs import Filesystem\n"
                                     "Filesystem.open(sys.argv[1]).close()", str(db)]) for _ in range(3)]
        threads = [threading.Thread(target=sweep) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert [opener.wait(60) for opener in openers] == [0, 0, 0]
        assert not errors, errors
        now = statuses(db)
        for _, pids, finished in dead:
            assert [now[pid] for pid in pids] == ["crashed"] * 3 and now[finished] == "ok"
        for _, pids, finished in alive:
            assert [now[pid] for pid in pids] == ["running", "ready", "running"] and now[finished] == "ok"
        with Filesystem.open(db) as fs:
            assert fs.integrity_check() == "ok"
    finally:
        for child, _, _ in alive:
            child.kill()
            child.wait()


def test_unfinished_processes_from_before_owners_were_recorded_are_crashed_by_the_upgrade(tmp_path):
    path = tmp_path / "llmos.db"
    conn = database_before(path, "m007_process_owners")
    conn.execute(f"PRAGMA application_id = {migrations.APPLICATION_ID}")
    for name, status in (("old run", "running"), ("old task", "ready"), ("old done", "ok")):
        conn.execute("INSERT INTO processes (name, status, created, updated) VALUES (?, ?, 0, 0)", (name, status))
    conn.close()
    with Filesystem.open(path) as fs:
        assert [(p["name"], p["status"]) for p in fs.processes()] == [
            ("old run", "crashed"), ("old task", "crashed"), ("old done", "ok")]
        assert fs.schema_version() == migrations.schema_version()
