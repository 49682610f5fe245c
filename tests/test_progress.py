"""``ctx.progress``: a driver says how far a long call has got; the gate hands it to whoever made the
call, the kernel to its events, and the shell and ``llmos call`` draw it. (The MCP server's
notifications are tested with the summarise driver, in tests/test_driver_summarise.py.)"""

from __future__ import annotations

import io
import time
from pathlib import Path

from llmos_shell.hookspecs import SyscallContext
from llmos_shell.kernel.grammar import write_calls
from llmos_shell.kernel.loop import Events, Kernel
from llmos_shell.testing import FakeCpu, make_system

PLUGIN = Path(__file__).parent / "plugins" / "progress.py"
COUNTED = [(0, 3, "counting 1 of 3"), (1, 3, "counting 2 of 3"), (2, 3, "counting 3 of 3"), (3, 3, "done")]


class Terminal(io.StringIO):
    """What a terminal would have shown: text, with isatty() true so bars and spinners draw."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def test_a_call_with_nobody_listening_reports_to_nothing_and_a_broken_display_never_fails_it(caplog):
    SyscallContext().progress(1, 2, "half")

    def broken(done, total, message):
        raise RuntimeError("the terminal went away")

    SyscallContext(on_progress=broken).progress(1, 2, "half")
    assert "progress display failed" in caplog.text


def test_the_gate_hands_the_drivers_reports_to_the_caller(tmp_path):
    system = make_system(tmp_path, plugins=[], plugin_files=[PLUGIN], strict=True)
    reports: list[tuple] = []
    assert system.call("count_up", {"to": 3}, progress=lambda *report: reports.append(report)) == 3
    assert reports == COUNTED
    assert system.call("count_up", {"to": 2}) == 2   # nobody listening: the same call works
    system.close()


def test_the_kernel_passes_a_syscalls_reports_to_its_events(tmp_path):
    cpu = FakeCpu([write_calls([{"name": "count_up", "arguments": {"to": 3}}]), "Counted to 3."])
    system = make_system(tmp_path, plugins=[], plugin_files=[PLUGIN], cpu=cpu, strict=True)
    reports: list[tuple] = []

    class Collect(Events):
        def progress(self, name, done, total, message):
            reports.append((name, done, total, message))

    kernel = Kernel(system)
    result = kernel.run(kernel.spawn("t"), "count up to 3", events=Collect())
    assert result.status == "ok", result.error
    assert reports == [("count_up", *report) for report in COUNTED]
    system.close()


def test_the_shell_draws_a_bar_while_the_call_runs():
    from llmos_shell.shell.console import Console
    from llmos_shell.shell.runner import Worker

    screen = Terminal()
    worker = Worker(Console(screen), confirm=lambda syscall, arguments: False)
    events = worker.events()

    def work() -> str:
        events.progress("summarise", 1, 2, "writing the summary from 37 of 213 sentences")
        time.sleep(0.5)   # the main thread's spinner draws every 0.1 s
        return "done"

    assert worker.run(work) == "done"
    shown = screen.getvalue()
    assert "summarise ██████░░░░░░  50% · writing the summary from 37 of 213 sentences…" in shown
    assert shown.endswith("\r\x1b[K")   # and gone when the call ended


def test_llmos_call_draws_a_tqdm_bar_on_a_terminal_and_nothing_on_a_pipe():
    from llmos_shell.cli.commands import ProgressBar

    screen = Terminal()
    bar = ProgressBar("summarise", screen)
    bar(0, 2, "choosing among 213 sentences")
    bar(1, 2, "writing the summary\x1b[31m")   # a driver's text: no terminal controls get through
    bar(2, 2, "done")
    bar.close()
    shown = screen.getvalue()
    assert "summarise: choosing among 213 sentences" in shown and " 50%" in shown and "100%" in shown
    assert "writing the summary\\x1b[31m" in shown and "\x1b[31m" not in shown

    pipe = io.StringIO()
    bar = ProgressBar("summarise", pipe)
    bar(1, 2, "writing")
    bar.close()
    assert pipe.getvalue() == ""
