"""SIGKILL of `llmos run` mid-task, 20 rounds: the database stays sound, the process is shown
crashed, and every message and syscall record committed before the kill is still there.

`llmos run` is the real command line (tests/scripted_llmos.py only swaps in a
scripted CPU and router encoder) running a task of several turns, each one a call of ``slow_echo``
(tests/plugins/hanging.py), which notes ``START <text>`` in a file before it
sleeps. Most rounds kill the program while call k sleeps, at a random moment of
it; some kill it at a random time from its start (loading, between turns,
anywhere). Two kinds of acknowledgement are checked after each kill:

* what a reader in another connection saw while the task ran (it sees only
  committed transactions): every such row must still be there, unchanged;
* call k had started, so the kernel had committed the user message of turns
  1..k and the audit records and replies of turns 1..k-1.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llmos_shell.fs import TERMINAL_STATUSES, Filesystem
from llmos_shell.kernel.grammar import write_calls

TESTS = Path(__file__).parent
ROUNDS = 20
TURNS = 6
SLOW = 0.3   # seconds each slow_echo sleeps


class Reader(threading.Thread):
    """Polls the database in its own connection, keeping every row it ever saw."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.messages: dict[tuple[int, int], tuple[str, str]] = {}
        self.syscalls: dict[int, tuple] = {}
        self.errors: list[BaseException] = []

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=10)
        try:
            while not self.stop.wait(0.01):
                for pid, seq, role, content in conn.execute("SELECT pid, seq, role, content FROM messages"):
                    self.messages[(pid, seq)] = (role, content)
                for row in conn.execute("SELECT id, pid, name, arguments, status, result FROM syscalls"):
                    self.syscalls[row[0]] = row[1:]
        except BaseException as error:  # reported by the test
            self.errors.append(error)
        finally:
            conn.close()


def texts(round_no: int) -> list[str]:
    return [f"round{round_no} turn{k}" for k in range(1, TURNS + 1)]


def write_task(folder: Path, round_no: int) -> tuple[Path, Path]:
    """The task file and the scripted CPU's replies: each turn calls slow_echo, then replies."""
    requests = [f"Echo {text}" for text in texts(round_no)]
    task = folder / f"task{round_no}.md"
    task.write_text("---\n" + json.dumps({"drivers": ["hanging"], "max_steps": 4, "turns": requests[1:]})
                    + "\n---\n" + requests[0] + "\n")
    replies = []
    for text in texts(round_no):
        replies += [write_calls([{"name": "slow_echo", "arguments": {"text": text}}]), f"Echoed {text}."]
    script = folder / f"replies{round_no}.json"
    script.write_text(json.dumps({"replies": replies, "topics": ["echo"]}))
    return task, script


def started_calls(ack: Path) -> list[str]:
    if not ack.exists():
        return []
    return [line[len("START "):] for line in ack.read_text().splitlines() if line.startswith("START ")]


def kill_round(home: Path, folder: Path, round_no: int, rng: random.Random) -> tuple[int, float]:
    """Run the task, SIGKILL it; return which call had started (0: killed by the clock) and when."""
    task, script = write_task(folder, round_no)
    ack = folder / f"ack{round_no}.txt"
    env = dict(os.environ, LLMOS_TEST_ACK_FILE=str(ack), LLMOS_TEST_SLOW_SECONDS=str(SLOW))
    child = subprocess.Popen([sys.executable, str(TESTS / "scripted_llmos.py"), str(script), "--home", str(home),
                              "run", str(task)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        if rng.random() < 0.25:           # anywhere: starting up, between turns, in a call
            target = 0
            time.sleep(rng.uniform(0.0, 3.0))
        else:                             # while call k sleeps
            target = rng.randint(1, TURNS - 1)
            while len(started_calls(ack)) < target:
                assert child.poll() is None, child.stderr.read().decode()
                assert time.monotonic() - started < 30, "the task never reached its call"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, SLOW * 0.8))
        child.send_signal(signal.SIGKILL)
        _, errors = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if target:
        assert child.returncode == -signal.SIGKILL, errors.decode()
    return target, time.monotonic() - started


def check(db: Path, task: str, round_no: int, target: int, calls: list[str], reader: Reader) -> str | None:
    """After one kill: integrity, the status shown, and every acknowledged record. Returns the status."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    with Filesystem.open(db) as fs:   # the next open marks the orphan
        [process] = [p for p in fs.processes() if p["name"] == task] or [None]
        if process is None:           # killed before the process was made
            assert target == 0 and not calls
            return None
        pid = process["pid"]
        if target:
            assert process["status"] == "crashed", process
        else:
            assert process["status"] in TERMINAL_STATUSES, process
        assert process["ended"] is not None
        messages = {(m["pid"], m["seq"]): (m["role"], m["content"]) for m in fs.messages(pid)}
        audit = fs.syscalls(pid)

    # 1. everything another connection saw committed
    for key, value in reader.messages.items():
        if key[0] == pid:
            assert messages.get(key) == value, (key, value)
    stored = {row["id"]: row for row in audit}
    for record_id, (record_pid, name, _arguments, status, _result) in reader.syscalls.items():
        if record_pid == pid:
            assert record_id in stored and (stored[record_id]["name"], stored[record_id]["status"]) == (name, status)

    # 2. call k had started: turns before it were committed in full, turn k's request too
    wanted = texts(round_no)
    assert calls == wanted[:len(calls)], calls
    said = [content for role, content in messages.values() if role == "user"]
    assert said[:len(calls)] == [f"Echo {text}" for text in calls], said
    done = [(row["name"], row["status"], row["result"]) for row in audit]
    assert done[:len(calls) - 1] == [("slow_echo", "ok", f"echo: {text}") for text in calls[:-1]], done
    replies = [content for role, content in messages.values() if role == "assistant" and content.startswith("Echoed")]
    assert replies[:len(calls) - 1] == [f"Echoed {text}." for text in calls[:-1]], replies
    return process["status"]


@pytest.mark.slow
def test_sigkill_of_llmos_run_mid_task(tmp_path):
    home = tmp_path / "home"
    (home / "plugins").mkdir(parents=True)
    shutil.copy(TESTS / "plugins" / "hanging.py", home / "plugins" / "hanging.py")
    db = home / "llmos.db"
    Filesystem.open(db).close()
    rng = random.Random(int(os.environ.get("LLMOS_CRASH_SEED", "15")))
    reader = Reader(db)
    reader.start()
    seen: dict[str, int] = {}
    started = time.monotonic()
    try:
        for round_no in range(ROUNDS):
            target, _ = kill_round(home, tmp_path, round_no, rng)
            calls = started_calls(tmp_path / f"ack{round_no}.txt")
            time.sleep(0.05)   # let the reader take one more look
            status = check(db, str(tmp_path / f"task{round_no}.md"), round_no, target, calls, reader)
            seen[str(status)] = seen.get(str(status), 0) + 1
            assert not reader.errors, reader.errors
    finally:
        reader.stop.set()
        reader.join(10)
    assert seen.get("crashed", 0) >= ROUNDS // 2, seen
    assert len(reader.messages) > ROUNDS * 2       # the runs got real work done between kills
    with Filesystem.open(db) as fs:
        assert not [p for p in fs.processes() if p["status"] in ("running", "ready")]
        assert fs.integrity_check() == "ok"
    print(f"{ROUNDS} rounds in {time.monotonic() - started:.1f} s: {seen}")
