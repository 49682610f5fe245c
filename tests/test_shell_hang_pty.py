"""Ctrl-C during a hanging syscall, in the real shell in a pseudo-terminal (pexpect).

The shell runs with scripted models (tests/scripted_llmos.py) and the hanging
driver (tests/plugins/hanging.py): "weather" sleeps an hour and ignores
cancellation, the time-out is the default 60 s, so only Ctrl-C can end the
wait. Both ways a syscall runs are tried: a request the kernel routes to it, and
the shell's `call` command.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from test_shell_pty import CTRL_C, Terminal

pexpect = pytest.importorskip("pexpect")

TESTS = Path(__file__).parent
WEATHER_CALL = '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'


class ScriptedTerminal(Terminal):
    """The shell of tests/scripted_llmos.py (scripted CPU and router) in a 40x120 pty."""

    def __init__(self, home: Path, script: Path, timeout: float = 30) -> None:
        env = dict(os.environ, TERM="xterm")
        for variable in ("PROMPT_TOOLKIT_NO_CPR", "LLMOS_MODEL", "LLMOS_PLUGINS_DIR", "NO_COLOR",
                         "LLMOS_SYSCALL_TIMEOUT"):
            env.pop(variable, None)
        self.transcript = home.parent / f"{home.name}-pty.txt"
        self.child = pexpect.spawn(sys.executable, [str(TESTS / "scripted_llmos.py"), str(script), "--home", str(home)],
                                   env=env, dimensions=(40, 120), encoding="utf-8", timeout=timeout)
        self.child.logfile_read = self.transcript.open("a", encoding="utf-8")


def test_ctrl_c_during_a_hanging_syscall_returns_to_the_prompt(tmp_path):
    home = tmp_path / "home"
    (home / "plugins").mkdir(parents=True)
    shutil.copy(TESTS / "plugins" / "hanging.py", home / "plugins" / "hanging.py")
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": [WEATHER_CALL, "Hello there, still here."], "topics": ["weather"]}))
    term = ScriptedTerminal(home, script)
    term.ready()

    term.line("What is the weather in Paris?")
    term.expect(r"weather .*Paris")                  # the syscall has started ...
    time.sleep(0.5)                                  # ... and hangs
    pressed = time.monotonic()
    term.keys(CTRL_C)
    term.text("[interrupted]", timeout=5)
    term.ready(timeout=5)
    through_kernel = time.monotonic() - pressed

    term.line("Hello")                               # the shell and the model still work
    term.text("Hello there, still here.")
    term.ready()

    term.line('call weather {"city": "Rome"}')       # the same through the `call` command
    term.expect(r"running weather|weather")
    time.sleep(0.5)
    pressed = time.monotonic()
    term.keys(CTRL_C)
    term.text("cancelled", timeout=5)
    term.ready(timeout=5)
    through_call = time.monotonic() - pressed

    term.line("pwd")
    term.expect(r"/\r\n")
    term.line("ps")
    term.expect(r"1\*\s+ok\s")                          # the conversation ended its turns: nothing left running
    assert term.exit() == 0
    assert through_kernel < 2.0, f"Ctrl-C took {through_kernel:.1f} s"
    assert through_call < 2.0, f"Ctrl-C took {through_call:.1f} s"
    transcript = term.transcript.read_text()
    assert "Traceback" not in transcript
