"""Crash safety: a writer killed with SIGKILL at random moments loses nothing it acknowledged.

The child (tests/fs_helpers/crash_writer.py) writes files, appends,
replacements (whose old content must survive as a version) and messages in
a loop, printing an acknowledgement only after each commit. We kill it 50 times at random moments; after each kill the database passes
``PRAGMA integrity_check`` and holds every acknowledged write. A reader in
another connection runs the whole time and must never fail.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llmos_shell.fs import Filesystem

WRITER = Path(__file__).parent / "fs_helpers" / "crash_writer.py"
ROUNDS = 50


class Reader(threading.Thread):
    """Reads while the writer writes; records any failure."""

    def __init__(self, db: Path, acked_files: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.acked_files = acked_files
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.reads = 0

    def run(self) -> None:
        rng = random.Random(7)
        fs = Filesystem.open(self.db)
        try:
            while not self.stop.is_set():
                try:
                    fs.ls("/")
                    if fs.exists("/crash"):
                        fs.ls("/crash")
                    fs.processes()
                    fs.search_messages("message", limit=5)
                    if self.acked_files:
                        path, digest = self.acked_files[rng.randrange(len(self.acked_files))]
                        assert hashlib.sha256(fs.read(path)).hexdigest() == digest, path
                    self.reads += 1
                except BaseException as error:  # reported by the test
                    self.errors.append(error)
                    return
        finally:
            fs.close()


def kill_at_random(db: Path, round_no: int, rng: random.Random) -> list[str]:
    """Run the writer, SIGKILL it at a random moment, return its complete acknowledgement lines."""
    # Unbuffered: readline() then takes exactly the READY line. A buffered reader reads ahead, and
    # communicate() reads the pipe itself, so acknowledgements read ahead were lost, leaving a torn line.
    child = subprocess.Popen([sys.executable, str(WRITER), str(db), str(round_no), str(rng.randrange(1 << 30))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        if rng.random() < 0.1:
            time.sleep(rng.uniform(0, 0.3))  # maybe while it is still starting or opening
        else:
            first = child.stdout.readline()
            assert first.startswith(b"READY"), first + child.stderr.read()
            time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        rest, errors = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, errors.decode()
    text = rest.decode("utf-8", "replace")
    lines = text.split("\n")
    return [line for line in lines[:-1] if line and not line.startswith("READY")]  # the last piece may be cut


def check(db: Path, acks: list[str]) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    with Filesystem.open(db) as fs:
        for ack in acks:
            kind, rest = ack.split(" ", 1)
            if kind == "FILE":
                path, digest = rest.split(" ")
                assert fs.stat(path)["sha256"] == digest, ack
                assert hashlib.sha256(fs.read(path)).hexdigest() == digest, ack
            elif kind == "MSG":
                pid, seq, content = rest.split(" ", 2)
                stored = {m["seq"]: m["content"] for m in fs.messages(int(pid))}
                assert stored.get(int(seq)) == content, ack
            elif kind == "OVER":   # a crash loses neither the old version nor the new content
                path, old, new = rest.split(" ")
                kept = {v["sha256"] for v in fs.versions(path)}
                assert new == fs.stat(path)["sha256"] or new in kept, ack
                assert old == "-" or old in kept, ack
            elif kind == "APPEND":
                path, line = rest.split(" ", 1)
                assert line in fs.read_text(path).splitlines(), ack
            else:  # pragma: no cover
                raise AssertionError(f"unexpected line from the writer: {ack!r}")


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_write(tmp_path):
    db = tmp_path / "llmos.db"
    Filesystem.open(db).close()
    rng = random.Random(int(os.environ.get("LLMOS_CRASH_SEED", "20240501")))
    acked_files: list[tuple[str, str]] = []
    reader = Reader(db, acked_files)
    reader.start()
    all_acks: list[str] = []
    try:
        for round_no in range(ROUNDS):
            acks = kill_at_random(db, round_no, rng)
            check(db, acks)
            all_acks += acks
            acked_files += [tuple(a.split(" ")[1:3]) for a in acks if a.startswith("FILE ")]
            assert not reader.errors, f"reader failed in round {round_no}: {reader.errors[0]!r}"
    finally:
        reader.stop.set()
        reader.join(timeout=30)
    assert not reader.errors, f"reader failed: {reader.errors[0]!r}"
    assert reader.reads > 0
    assert len(all_acks) > ROUNDS  # the writer got real work done between kills
    check(db, all_acks)
