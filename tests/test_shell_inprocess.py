"""The shell driven in-process: prompt-toolkit's pipe input as the keyboard, a scripted CPU as the model.

The REPL runs in the test's main thread exactly as in a terminal (prompt-toolkit
sessions, key bindings, the worker thread for requests, Ctrl-C as a
KeyboardInterrupt in the main thread); a feeder thread types each line once the
output it waits for has appeared. The pseudo-terminal tests
(tests/test_shell_pty.py) drive the real program with the real model.
"""

from __future__ import annotations

import _thread
import io
import sys
import threading
import time

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from llmos_shell.kernel.grammar import write_calls
from llmos_shell.shell import Shell
from llmos_shell.shell.commands import COMMANDS, commands, flags, split
from llmos_shell.shell.completer import ShellCompleter
from llmos_shell.shell.keys import ends_with_backslash, join_continuations
from llmos_shell.shell.toolbar import toolbar
from llmos_shell.testing import FakeCpu, make_system

CTRL_D = "\x04"
ENTER = "\r"


def tool_call(name: str, **arguments) -> str:
    return write_calls([{"name": name, "arguments": arguments}])


class Screen(io.TextIOBase):
    """What the shell prints (its console), readable while it runs."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            self._parts.append(text)
            self._changed.notify_all()
        return len(text)

    def isatty(self) -> bool:
        return False

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self._parts)

    def wait_for(self, needle: str, start: int = 0, timeout: float = 10.0) -> int:
        """Wait until ``needle`` appears after offset ``start``; return the offset just after it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                text = "".join(self._parts)
                index = text.find(needle, start)
                if index >= 0:
                    return index + len(needle)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{needle!r} did not appear; the screen shows:\n{text[start:]}")
                self._changed.wait(left)


class Session:
    """A shell on a pipe: ``type`` a line, optionally after some output has appeared."""

    def __init__(self, system, approve: str = "ask", history=None) -> None:
        self.system = system
        self.screen = Screen()
        self.steps: list[tuple[str | None, object]] = []
        self.history = history or InMemoryHistory()
        self.approve = approve
        self.failure: BaseException | None = None
        self.shell: Shell | None = None

    def after(self, needle: str | None, keys) -> "Session":
        """Once ``needle`` has appeared (None: at once), type ``keys`` (text, or a callable to run)."""
        self.steps.append((needle, keys))
        return self

    def line(self, text: str, after: str | None = None) -> "Session":
        return self.after(after, text + ENTER)

    def run(self, timeout: float = 20.0) -> str:
        with create_pipe_input() as pipe:
            self.shell = Shell(self.system, input=pipe, output=DummyOutput(), stream=self.screen, color=False,
                               history=self.history, approve=self.approve)

            def feed() -> None:
                offset = 0
                try:
                    for needle, keys in self.steps:
                        if needle is not None:
                            offset = self.screen.wait_for(needle, offset, timeout)
                        time.sleep(0.05)
                        if callable(keys):
                            keys()
                        else:
                            pipe.send_text(keys)
                except BaseException as error:  # reported by the test, after the shell has exited
                    self.failure = error
                finally:
                    time.sleep(0.2)
                    pipe.send_text(CTRL_D)

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            code = self.shell.run()
            feeder.join(5)
        if self.failure is not None:
            raise self.failure
        assert code == 0
        return self.screen.text


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def system_with(home, *replies: str, cpu=None):
    return make_system(home, plugins=["llmos_plugins.files"], cpu=cpu or FakeCpu(replies))


# --- the registry and help -----------------------------------------------------------------

REQUIRED = ["help", "ls", "cd", "pwd", "cat", "write", "edit", "rm", "mkdir", "mv", "cp", "find", "grep",
            "import", "export", "ps", "kill", "log", "drivers", "models", "model", "call", "history", "clear",
            "exit", "approve"]


def test_every_command_of_the_issue_is_registered_with_a_docstring():
    for name in REQUIRED:
        assert name in COMMANDS, name
    for entry in commands():
        assert entry.summary, f"{entry.name} has no docstring"
        assert entry.summary.endswith((".", ")")), entry.summary


def test_help_lists_the_commands_and_help_command_shows_one(home):
    out = Session(system_with(home)).line("help").line("help grep", after="Ctrl-D exits").run()
    for name in REQUIRED:
        assert f"\n  {name}" in out, name
    assert "grep [-E] [-i] PATTERN [PATH]" in out
    assert "-i ignores case" in out


def test_shell_words_and_flags():
    assert split('write "my notes/a b.txt" it\\\'s here') == ["write", "my notes/a b.txt", "it's", "here"]
    assert flags(["-r", "a", "--pid", "3", "-n", "5", "b"], "r", valued=("pid", "n")) == (
        {"r": True, "pid": "3", "n": "5"}, ["a", "b"])
    with pytest.raises(Exception, match="closing quotation"):
        split('cat "unclosed')


# --- file commands ----------------------------------------------------------------------------

def test_file_commands(home, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "report.txt").write_text("quarterly numbers are up\n")
    out_dir = tmp_path / "out"
    session = Session(system_with(home))
    (session.line("mkdir notes/old /inputs")
     .line('write notes/todo.txt "buy milk" and bread')
     .line("cd notes", after="wrote /notes/todo.txt")
     .line("pwd")
     .line("ls -l", after="/notes\n")
     .line("cat todo.txt", after="todo.txt\n")
     .line("cp todo.txt copy.txt", after="buy milk and bread\n")
     .line("mv copy.txt old/")
     .line("find '*.txt' /")
     .line("grep milk /", after="/notes/old/copy.txt\n")
     .line(f"import {host / 'report.txt'} /inputs", after="/notes/todo.txt:1: buy milk and bread")
     .line(f"export /inputs {out_dir}", after="imported /inputs")
     .line("rm old", after="exported")
     .line("rm -r old", after="directory not empty")
     .line("cd -")
     .line("ls"))
    out = session.run()
    assert "/notes\n" in out
    assert "todo.txt" in out and "old/" in out
    assert "/notes/old/copy.txt\n/notes/todo.txt\n" in out
    assert (out_dir / "inputs" / "report.txt").read_text() == "quarterly numbers are up\n"
    assert "error: directory not empty: /notes/old" in out
    fs = session.system.fs
    assert not fs.exists("/notes/old")
    assert fs.read_text("/notes/todo.txt") == "buy milk and bread\n"
    assert out.rstrip().endswith("inputs/  notes/")


def test_edit_runs_the_editor_and_writes_back(home, tmp_path, monkeypatch):
    script = tmp_path / "editor.py"
    script.write_text("import sys\nwith open(sys.argv[1], 'a') as f:\n    f.write('added by the editor\\n')\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.delenv("VISUAL", raising=False)
    session = Session(system_with(home)).line("write a.txt first line").line("edit a.txt", after="wrote")
    session.line("edit new.txt", after="wrote /a.txt (")
    out = session.run()
    assert session.system.fs.read_text("/a.txt") == "first line\nadded by the editor\n"
    assert session.system.fs.read_text("/new.txt") == "added by the editor\n"
    assert "wrote /new.txt" in out


def test_errors_are_one_red_line_and_tracebacks_go_to_the_log(home, monkeypatch):
    from llmos_shell.config import setup_logging
    from llmos_shell.shell import commands as registry

    def broken(shell, args):
        raise RuntimeError("something deep broke")

    monkeypatch.setattr(registry.COMMANDS["pwd"], "function", broken)
    system = system_with(home)
    setup_logging(system.config)
    out = Session(system).line("cat /nope").line("pwd", after="error:").line('cat "unclosed', after="internal").run()
    assert "error: no such file: /nope\n" in out
    assert "error: internal error: RuntimeError: something deep broke (details in" in out
    assert "error: no closing quotation" in out
    assert "Traceback" not in out
    assert "RuntimeError: something deep broke" in (home / "llmos.log").read_text()


# --- requests to the model -----------------------------------------------------------------------

def test_a_request_streams_the_reply_and_keeps_the_conversation(home):
    cpu = FakeCpu(["Paris is the capital.", "Madrid, as I said after Paris."])
    session = Session(system_with(home, cpu=cpu))
    out = session.line("What is the capital of France?").line("And Spain?", after="capital.").run()
    assert "Paris is the capital.\n" in out
    assert "Madrid, as I said after Paris.\n" in out
    assert "What is the capital of France?" in cpu.prompts[-1]   # the context is kept across requests
    messages = session.system.fs.messages(session.shell.process.pid)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_a_syscall_shows_as_it_happens_and_an_irreversible_one_asks_first(home):
    # the kernel shows delete_file's declared output; the model is only asked for the path
    system = system_with(home, tool_call("delete_file", path="/a.txt"), tool_call("delete_file", path="/b.txt"))
    system.fs.write("/a.txt", "a")
    system.fs.write("/b.txt", "b")
    session = Session(system)
    (session.line("delete a.txt")
     .after("* delete_file {\"path\": \"/a.txt\"}", "y" + ENTER)
     .line("delete b.txt", after="Deleted /a.txt.")
     .after("* delete_file {\"path\": \"/b.txt\"}", "n" + ENTER))
    out = session.run()
    assert not system.fs.exists("/a.txt")
    assert system.fs.exists("/b.txt")
    assert "Deleted /a.txt." in out
    assert "! denied" in out and "delete_file was denied by the approval policy (ask)" in out
    assert "Deleted /b.txt." not in out
    statuses = [(row["name"], row["status"]) for row in system.fs.syscalls()]
    assert statuses == [("delete_file", "ok"), ("delete_file", "denied")]


def test_approve_never_refuses_without_asking_and_auto_runs(home):
    system = system_with(home, tool_call("delete_file", path="/a.txt"), tool_call("delete_file", path="/a.txt"))
    system.fs.write("/a.txt", "a")
    session = Session(system)
    (session.line("approve never").line("delete a.txt", after="approval policy: never")
     .line("approve auto", after="denied by the approval policy (never)")
     .line("delete a.txt", after="approval policy: auto"))
    out = session.run()
    assert "Deleted /a.txt." in out
    assert not system.fs.exists("/a.txt")
    assert "[y/N]" not in out


def test_call_goes_through_the_same_approval(home):
    system = system_with(home)
    system.fs.write("/a.txt", "a")
    system.fs.write("/b.txt", "b")
    session = Session(system)
    (session.line('call write_file {"path": "/c.txt", "content": "see"}')
     .line('call delete_file {"path": "/a.txt"}', after="/c.txt")
     .after(None, "y" + ENTER)
     .line('call delete_file {"path": "/b.txt"}', after="deleted")
     .after(None, "n" + ENTER)
     .line("call delete_file {oops", after="denied: delete_file was denied by the approval policy (ask)")
     .line("call nope {}", after="not valid JSON")
     .line("log", after="no syscall named 'nope'"))
    out = session.run()
    assert system.fs.read_text("/c.txt") == "see"
    assert not system.fs.exists("/a.txt") and system.fs.exists("/b.txt")
    log_part = out[out.rindex("WHEN"):]
    assert "write_file" in log_part and "denied" in log_part


def test_ctrl_c_cancels_the_request_keeps_the_partial_turn_and_the_next_one_works(home):
    story = " ".join(f"word{i}" for i in range(400))
    cpu = FakeCpu([f"Once upon a time {story}", "Hello again."], token_delay=0.05)  # one word every 50 ms
    session = Session(system_with(home, cpu=cpu))
    pressed = {}

    def ctrl_c() -> None:
        pressed["at"] = time.monotonic()
        _thread.interrupt_main()   # what the terminal's SIGINT does

    (session.line("Tell me a long story.")
     .after("word5 ", ctrl_c)
     .after("[interrupted]", lambda: pressed.setdefault("back", time.monotonic()))
     .line("Say hello."))
    out = session.run()
    assert pressed["back"] - pressed["at"] < 1.0     # back at the prompt within a second
    assert "word399" not in out
    assert "Hello again." in out
    memory = session.shell.process.memory.messages
    partial = [m["content"] for m in memory if m["role"] == "assistant"][0]
    assert partial.startswith("Once upon a time word0") and partial.endswith("[interrupted]")
    assert "[interrupted]" in cpu.prompts[-1]   # the next request sees the interrupted turn
    assert session.system.fs.get_process(session.shell.process.pid)["status"] == "exited"


def test_multi_line_input_with_a_trailing_backslash(home):
    cpu = FakeCpu(["Two lines received."])
    session = Session(system_with(home, cpu=cpu))
    session.after(None, "first line \\" + ENTER).after(None, "second line" + ENTER)
    session.after("received.", "write m.txt one \\" + ENTER + "two" + ENTER)
    session.run()
    assert "first line \nsecond line" in cpu.prompts[0]
    assert session.system.fs.read_text("/m.txt") == "one two\n"


def test_join_continuations():
    assert ends_with_backslash("a \\") and not ends_with_backslash("a \\\\")
    assert join_continuations("a \\\nb") == "a \nb"
    assert join_continuations("a\nb") == "a\nb"


def test_a_model_that_cannot_load_gives_one_line_and_files_still_work(home):
    system = make_system(home, plugins=["llmos_plugins.files"], model=str(home / "missing.gguf"))
    session = Session(system)
    session.line("write a.txt still works").line("tell me something", after="wrote")
    out = session.run()
    assert system.fs.read_text("/a.txt") == "still works\n"
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors and all("missing.gguf" in line or "missing" in line for line in errors)
    assert any(line.startswith("error: no model:") for line in errors)


def test_model_switch_closes_the_old_cpu_and_keeps_the_conversation(home, monkeypatch):
    first, second = FakeCpu(["one"]), FakeCpu(["two"])
    closed = []
    first.close = lambda: closed.append("first")
    system = system_with(home, cpu=first)
    monkeypatch.setattr("llmos_shell.cpu.models.load_cpu", lambda config, model=None: second)
    session = Session(system)
    session.line("hello").line("model smollm2-135m-instruct", after="one").line("again", after="background")
    session.line("model nonsense-model", after="two")
    out = session.run()
    assert closed == ["first"]
    assert system.config.model == "smollm2-135m-instruct"
    assert "hello" in second.prompts[0]
    assert "error: unknown model 'nonsense-model'" in out


# --- completion, toolbar, history ------------------------------------------------------------------

def completions(shell, text: str) -> list[str]:
    document = Document(text, len(text))
    return [c.text for c in ShellCompleter(shell).get_completions(document, CompleteEvent(completion_requested=True))]


def test_completion_of_commands_paths_syscalls_models(home, tmp_path):
    system = system_with(home)
    system.fs.write("/notes/a b.txt", "x")
    system.fs.write("/notes/alpha.txt", "x")
    system.fs.mkdir("/nothing")
    (tmp_path / "hostfile.txt").write_text("x")
    shell = Shell(system, output=DummyOutput(), stream=Screen(), history=InMemoryHistory())
    shell.new_process()
    assert completions(shell, "mk") == ["mkdir"]
    assert set(completions(shell, "h")) == {"help", "history"}
    assert completions(shell, "cat no") == ["notes/", "nothing/"]
    assert completions(shell, "cat notes/a") == ["'notes/a b.txt'", "notes/alpha.txt"]
    assert completions(shell, "cd /no") == ["/notes/", "/nothing/"]
    shell.cwd = "/notes"
    assert completions(shell, "rm al") == ["alpha.txt"]
    assert completions(shell, "summarise /notes/al") == ["/notes/alpha.txt"]
    assert completions(shell, "call delete_f") == ["delete_file"]
    assert completions(shell, "call delete_file ") == ['{"path": ""}']
    assert completions(shell, "model smol") == ["smollm2-135m-instruct"]
    assert completions(shell, "approve a") == ["ask", "auto"]
    assert completions(shell, "help gr") == ["grep"]
    assert completions(shell, f"import {tmp_path}/hostf") == [f"{tmp_path}/hostfile.txt"]


def test_toolbar_shows_model_context_cwd_and_pid(home):
    system = system_with(home)
    shell = Shell(system, output=DummyOutput(), stream=Screen(), history=InMemoryHistory())
    shell.new_process()
    shell.cwd = "/notes"
    text = "".join(fragment for _, fragment in toolbar(shell))
    assert "model fake ready" in text
    assert f"ctx {shell.context_tokens}/2048" in text and shell.context_tokens > 0
    assert "cwd /notes" in text
    assert f"pid {shell.process.pid}" in text
    assert "approve ask" in text


def test_history_command_and_file_history_across_sessions(home):
    from prompt_toolkit.history import FileHistory

    system = system_with(home)
    system.config.ensure_home()
    first = Session(system, history=FileHistory(str(system.config.history_path)))
    first.line("write h.txt from the first session").run()
    second = Session(system, history=FileHistory(str(system.config.history_path)))
    second.after(None, "\x1b[A" + ENTER)   # Up: the line of the first session
    second.line("history", after="wrote /h.txt")
    out = second.run()
    assert out.count("wrote /h.txt") == 1
    assert "write h.txt from the first session" in out


# --- processes, drivers, models ------------------------------------------------------------------

def test_ps_kill_drivers_models_and_model(home):
    system = system_with(home)
    other = system.fs.create_process("a task", model="fake")
    session = Session(system)
    (session.line("ps")
     .line(f"kill {other}", after="a task")
     .line(f"kill {other + 1}", after=f"killed {other}")
     .line("drivers", after="this shell's conversation")
     .line("models", after="files")
     .line("model", after="smollm2-135m-instruct")
     .line("clear", after="(ready)"))
    out = session.run()
    assert "PID" in out and f"{other + 1}*" in out and "shell" in out
    assert system.fs.get_process(other)["status"] == "killed"
    assert f"error: pid {other + 1} is this shell's conversation: use `reset` or `exit`" in out
    assert "syscalls: delete_file, list_files, read_file, search_files, write_file" in out
    assert "qwen2.5-coder-0.5b-instruct" in out
    assert "fake (ready)" in out or "qwen2.5-coder-0.5b-instruct (ready)" in out


def test_reset_starts_a_new_conversation(home):
    cpu = FakeCpu(["First answer.", "Fresh answer."])
    session = Session(system_with(home, cpu=cpu))
    session.line("Hello! My favourite fruit is the banana.").line("reset", after="First answer.").line("what word?", after="new conversation")
    out = session.run()
    assert "new conversation: pid 2" in out
    assert "banana" not in cpu.prompts[-1]


def test_piped_standard_input_runs_lines_as_a_script(home):
    import subprocess

    script = 'write a.txt piped\ncat a.txt\ncall delete_file {"path": "/a.txt"}\nn\ncat /nope\nls\n'
    result = subprocess.run([sys.executable, "-m", "llmos_shell", "--home", str(home), "--model",
                             str(home / "none.gguf")], input=script, capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines() == [
        "wrote /a.txt (6B)",
        "piped",
        'delete_file {"path": "/a.txt", "recursive": false} cannot be undone. Run it? [y/N] n',
        "denied: delete_file was denied by the approval policy (ask)",
        "error: no such file: /nope",
        "a.txt",
    ]
    assert result.returncode == 1          # a line failed
    assert result.stderr == ""
