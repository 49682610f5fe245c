"""SIGTERM and SIGINT end `llmos run` cleanly at any moment: the JSON line with status
`interrupted`, exit 1 (DESIGN.md), the process marked in the database, the partial reply kept.

The first tests run the real command line with a scripted CPU (tests/scripted_llmos.py) so the
signal lands exactly while the model loads (on a worker thread, the main thread waiting, as
LlamaCpu loads one) or while the reply streams; the last ones run the real small model.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmos_shell.config import TEST_MODEL

TESTS = Path(__file__).parent
REPO = TESTS.parent
WORDS = [f"word{i}" for i in range(600)]
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def task_file(folder: Path, request: str) -> Path:
    task = folder / "task.md"
    task.write_text("---\ndrivers: []\n---\n" + request + "\n")
    return task


def scripted(tmp_path: Path, script: dict, request: str = "Say many words.") -> tuple[subprocess.Popen, Path]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    child = subprocess.Popen([sys.executable, str(TESTS / "scripted_llmos.py"), str(path), "--home", str(home),
                              "run", "--json", str(task_file(tmp_path, request))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    return child, home


def real(tmp_path: Path, request: str) -> tuple[subprocess.Popen, Path]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    child = subprocess.Popen([sys.executable, "-m", "llmos_shell", "--home", str(home), "--model", TEST_MODEL,
                              "run", "--json", str(task_file(tmp_path, request))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    return child, home


def statuses(home: Path) -> list[str]:
    db = home / "llmos.db"
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return [row[0] for row in conn.execute("SELECT status FROM processes ORDER BY pid")]
        finally:
            conn.close()
    except sqlite3.OperationalError:   # created but not migrated yet
        return []


def wait_for(condition, child: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def stop(child: subprocess.Popen, signum: int, within: float) -> tuple[dict, str, float]:
    """Send the signal; the program must end within ``within`` seconds. Its JSON line, stderr, time taken."""
    sent = time.monotonic()
    child.send_signal(signum)
    try:
        out, err = child.communicate(timeout=within + 30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    took = time.monotonic() - sent
    assert child.returncode == 1, (child.returncode, out, err)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "Traceback" not in err, err
    assert took < within, f"took {took:.1f} s"
    return json.loads(lines[0]), err, took


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_the_model_loads(tmp_path, signum):
    child, home = scripted(tmp_path, {"replies": ["never said"], "load_seconds": 60})
    wait_for(lambda: (tmp_path / "loading").exists(), child)
    time.sleep(0.2)
    result, _err, _took = stop(child, signum, within=5)
    assert result["status"] == "interrupted" and result["error"] == "interrupted" and result["pid"] is None
    assert result["task"].endswith("task.md")
    assert statuses(home) == []   # no process was made: nothing left `ready` or `running`


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_the_reply_streams_keeps_the_partial_reply(tmp_path, signum):
    child, home = scripted(tmp_path, {"replies": [" ".join(WORDS)], "token_delay": 0.02})
    wait_for(lambda: statuses(home) == ["running"], child)
    time.sleep(1.0)   # some 50 words said
    result, _err, _took = stop(child, signum, within=5)
    assert result["status"] == "interrupted" and isinstance(result["pid"], int)
    said = result["output"].split()
    assert 5 < len(said) < len(WORDS) and said == WORDS[:len(said)]
    assert statuses(home) == ["interrupted"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_before_the_real_model_generates_does_not_wait(tmp_path, signum, small_model_path):
    # a long request: its prompt takes the CPU a while to read (the prefill cannot stop between tokens)
    text = " ".join(f"Sentence {i} says that the sky was blue on day {i}." for i in range(120))
    child, home = real(tmp_path, f"Summarise this text in one sentence: {text}")
    wait_for(lambda: statuses(home) == ["running"], child)
    result, _err, _took = stop(child, signum, within=5)
    assert result["status"] == "interrupted"
    assert statuses(home) == ["interrupted"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_the_real_model_generates(tmp_path, signum, small_model_path):
    child, home = real(tmp_path, "Write a very long story about a dragon who learns to bake bread, "
                                 "with many chapters.")
    wait_for(lambda: statuses(home) == ["running"], child)
    time.sleep(4.0)
    result, _err, _took = stop(child, signum, within=5)
    assert result["status"] == "interrupted" and result["output"].strip()
    assert statuses(home) == ["interrupted"]
