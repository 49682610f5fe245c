"""Background requests in the real shell through a pseudo-terminal: `&`, `jobs`, `fg`, `wait`, `kill`.

The shell is tests/scripted_llmos.py (the real shell, kernel, run queue and database; a scripted
CPU that streams a word every 30 ms), so a "long story" takes seconds and can be caught mid-way.
Every request says "story" or "zebra": scripted topics no driver's examples share, so the router
sends them all to the model to answer.
"""

from __future__ import annotations

import json
import time

import pytest

pexpect = pytest.importorskip("pexpect")

from conftest import run_llmos  # noqa: E402
from test_shell_hang_pty import ScriptedTerminal  # noqa: E402
from test_shell_pty import CTRL_C, REPLY_STARTS, Terminal, small_model  # noqa: E402,F401 (a fixture)

STORY = " ".join(f"story{i}" for i in range(300))    # 9 s at 30 ms a word


def shell(tmp_path, replies):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": replies, "token_delay": 0.03, "topics": ["story", "zebra"]}))
    term = ScriptedTerminal(tmp_path / "home", script)
    term.ready()
    return term


def test_background_jobs_fg_kill_and_wait(tmp_path):
    term = shell(tmp_path, [STORY, STORY, "The answer is 42.", "A quick reply."])

    term.line("Tell me a long story &")
    term.expect(r"\[1\] pid 2")
    term.expect(r"jobs (\x1b\[[0-9;]*m)*1")               # the toolbar counts it
    term.ready()                                         # the prompt is back at once
    term.line("jobs")
    term.expect(r"\[1\]\s+running\s+2\s+Tell me a long story")
    term.line("fg 1")
    term.expect(r"story\d+ story\d+")                    # what it printed so far, then the rest as it comes
    time.sleep(0.3)
    pressed = time.monotonic()
    term.keys(CTRL_C)                                    # Ctrl-C stops the job in the foreground
    term.text("[interrupted]", timeout=5)
    assert time.monotonic() - pressed < 2
    term.ready()

    term.line("Tell me another long story &")
    term.expect(r"\[2\] pid 3")
    term.ready()
    time.sleep(0.5)
    term.line("kill %2")
    term.expect(r"killed 3\r")
    term.ready()
    term.line("ps")
    term.expect(r"2\s+interrupted\s")
    term.expect(r"3\s+killed\s")

    term.line("What is the zebra answer? &")
    term.expect(r"\[3\] pid 4")
    term.expect(r"\[3\] done · pid 4 · What is the zebra answer\?")   # said above the prompt, with the reply
    term.text("The answer is 42.")
    term.line("wait")                                    # nothing left to wait for
    term.ready()
    term.line("jobs")
    term.text("no background jobs")
    term.line("Hello zebra")                                   # the conversation itself still works
    term.text("A quick reply.")
    term.ready()
    assert term.exit() == 0


def test_a_request_waits_for_the_cpu_behind_a_background_job(tmp_path):
    term = shell(tmp_path, [STORY, "never shown", "Back to you."])
    term.line("Tell me a long story &")
    term.expect(r"\[1\] pid 2")
    term.ready()
    term.line("Hello zebra")
    term.text("waiting for the CPU (1 ahead", timeout=5)
    pressed = time.monotonic()
    term.keys(CTRL_C)                                    # leaves the queue at once, not after the story
    term.text("[interrupted]", timeout=5)
    assert time.monotonic() - pressed < 2
    term.ready()
    term.line("wait")
    term.expect(r"\[1\] done · pid 2")                    # waited for the story to end
    term.ready()
    term.line("ps")
    term.expect(r"2\s+ok\s")
    term.line("Hi again zebra")
    term.text("never shown")                             # the scripted CPU's next reply: the queue moved on
    term.ready()
    assert term.exit() == 0


def test_exit_kills_background_jobs(tmp_path):
    term = shell(tmp_path, [STORY])
    term.line("Tell me a long story &")
    term.expect(r"\[1\] pid 2")
    term.ready()
    assert term.exit() == 0
    listing = run_llmos("ps", home=tmp_path / "home")
    assert "killed" in listing.stdout.splitlines()[2]


def test_a_long_story_is_killed_from_another_program(tmp_path, small_model):
    """The real small model tells a story in one shell; `llmos kill 1` from a second program on the
    same home stops it at once: the shell says so, `ps` shows it killed, and the shell goes on."""
    home = tmp_path / "home"
    term = Terminal(home, "--model", small_model, timeout=120)
    term.ready()
    term.line("Tell me a very long story about a dragon who learns to sing, with many chapters.")
    term.expect(REPLY_STARTS, timeout=120)              # the story has started
    killed_at = time.monotonic()
    killer = run_llmos("kill", "1", home=home)
    assert killer.returncode == 0, killer.stderr
    term.text("[killed]", timeout=15)
    stopped_after = time.monotonic() - killed_at
    term.ready()
    term.line("ps")
    term.expect(r"1\*\s+killed\s")
    term.line("pwd")                                    # the shell goes on
    term.expect(r"/\r\n")
    assert term.exit() == 0
    assert stopped_after < 10, stopped_after            # `llmos kill` itself starts a Python: ~1-3 s of it
