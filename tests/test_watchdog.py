"""Time-outs and cancellation of syscalls: a driver that never returns cannot hang llmos.

The hanging driver is a real plugin file (tests/plugins/hanging.py) loaded from a
plugins folder; the model is the scripted FakeCpu and the router's encoder the
scripted TopicEncoder (tests/scripted_llmos.py), so that the kernel surely makes
the call.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_llmos
from llmos_shell.kernel import embed
from llmos_shell.errors import Cancelled
from llmos_shell.kernel.grammar import write_calls
from llmos_shell.kernel.loop import Events, Kernel
from llmos_shell.testing import FakeCpu, make_system
from llmos_shell.watchdog import SyscallTimeout, watch
from scripted_llmos import TopicEncoder

HANGING = Path(__file__).parent / "plugins" / "hanging.py"


def call(name: str, **arguments) -> str:
    return write_calls([{"name": name, "arguments": arguments}])


@pytest.fixture
def system(tmp_path, monkeypatch):
    # the router's encoder scripted too: these tests are about the call, not about choosing it
    monkeypatch.setattr(embed, "shared_encoder", lambda: TopicEncoder(["weather", "forecast"]))
    machine = make_system(tmp_path / "home", plugins=[], plugin_files=[HANGING], cpu=FakeCpu(), strict=True)
    machine.config.syscall_timeout = 0.5
    yield machine
    machine.close()


# --- the watchdog itself -----------------------------------------------------------------------

def test_a_call_that_returns_or_raises_in_time_is_passed_through():
    assert watch(lambda stop: 42, name="answer", timeout=1) == 42
    with pytest.raises(ZeroDivisionError):
        watch(lambda stop: 1 / 0, name="divide", timeout=1)


def test_a_call_past_its_time_out_is_abandoned_and_told_to_stop():
    finished = threading.Event()
    told: list[bool] = []

    def stubborn(stop):
        time.sleep(0.6)            # ignores ``stop`` while it sleeps
        told.append(stop.is_set())
        finished.set()
        return "too late"

    started = time.monotonic()
    with pytest.raises(SyscallTimeout, match=r"^stubborn timed out after 0\.2 s$"):
        watch(stubborn, name="stubborn", timeout=0.2)
    assert time.monotonic() - started < 0.45 and not finished.is_set()   # not waited on
    assert finished.wait(5) and told == [True]     # it finished later, its result dropped


def test_cancel_stops_waiting_at_once():
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled, match="^cancelled$"):
        watch(lambda stop: time.sleep(30), name="sleeper", timeout=None, cancel=cancel)
    assert time.monotonic() - started < 0.5


# --- in the kernel -----------------------------------------------------------------------------

def test_a_hanging_syscall_times_out_and_the_next_request_works(system):
    cpu = system.cpu
    cpu.enqueue(call("weather", city="Paris"), "I could not get the weather.")
    kernel = Kernel(system)
    process = kernel.spawn("chat")
    first = kernel.run(process, "What is the weather in Paris?")
    assert first.status in ("ok", "error"), first     # the turn ended: an answer about the failure
    [record] = first.syscalls
    assert (record.name, record.status, record.error) == ("weather", "error", "weather timed out after 0.5 s")
    assert 500 <= record.ms < 1500          # given up at its time-out, not waited on
    # the error went back into the context as the call's result, and into the audit log
    tool = [m["content"] for m in system.fs.messages(process.pid) if m["role"] == "tool"]
    assert tool == ["error: weather timed out after 0.5 s"]
    audit = system.fs.syscalls(process.pid)
    assert [(r["name"], r["status"], r["error"]) for r in audit] == [
        ("weather", "error", "weather timed out after 0.5 s")]

    cpu.replies[:] = ["Hello!"]
    second = kernel.run(process, "Hello")
    assert (second.status, second.output, second.syscalls) == ("ok", "Hello!", [])

    done = run_llmos("ps", "--json", home=system.config.home, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(row["pid"], row["status"]) for row in rows] == [(process.pid, "ok")]


def test_a_driver_declared_time_out_wins_over_the_setting(system):
    system.config.syscall_timeout = 60
    system.cpu.enqueue(call("forecast", city="Oslo"), "No forecast today.")
    kernel = Kernel(system)
    result = kernel.run(kernel.spawn("chat"), "What is the forecast for Oslo?")
    assert 1000 <= result.syscalls[0].ms < 2000
    # the call failed and nothing mended it: a failed task, the model's words kept
    assert result.syscalls[0].error == "forecast timed out after 1 s" and result.status == "error"


def test_a_timed_out_driver_sees_its_cancel_event(system):
    stopped = system.table.get("patient").function.__globals__["STOPPED"]
    stopped.clear()
    users_cancel = threading.Event()
    with pytest.raises(SyscallTimeout, match="^patient timed out after 0.5 s$"):
        system.call("patient", {"seconds": 30}, cancel=users_cancel)
    deadline = time.monotonic() + 2
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stopped == ["cancelled"]        # the driver stopped on its own instead of waiting 30 s
    assert not users_cancel.is_set()       # a time-out ends the call, not the user's turn
    assert system.call("patient", {"seconds": 0.01}) == "waited"


def test_cancel_during_a_hanging_syscall_ends_the_turn_promptly(system):
    system.config.syscall_timeout = 0       # no time-out: only the cancel can end it
    system.cpu.enqueue(call("weather", city="Rome"))
    kernel = Kernel(system)
    process = kernel.spawn("chat")
    cancel = threading.Event()
    pressed: list[float] = []

    def press() -> None:
        pressed.append(time.monotonic())
        cancel.set()

    class CancelSoonAfterStart(Events):
        def syscall_started(self, name, arguments):
            threading.Timer(0.3, press).start()

    result = kernel.run(process, "What is the weather in Rome?", cancel=cancel, events=CancelSoonAfterStart())
    assert time.monotonic() - pressed[0] < 0.5
    assert result.status == "interrupted"
    assert system.fs.get_process(process.pid)["status"] == "interrupted"
    system.cpu.enqueue("Still here.")
    assert kernel.run(process, "Are you there?").output == "Still here."


# --- llmos call --------------------------------------------------------------------------------

def test_llmos_call_of_a_hanging_syscall_fails_within_its_time_out(home):
    (home / "plugins").mkdir()
    (home / "plugins" / "hanging.py").write_text(HANGING.read_text())
    fast = {"LLMOS_TEST_SLOW_SECONDS": "0"}
    started = time.monotonic()
    quick = run_llmos("call", "slow_echo", '{"text": "hi"}', home=home, env=fast, timeout=120)
    baseline = time.monotonic() - started           # starting llmos, on this machine now
    assert quick.returncode == 0 and quick.stdout.strip() == "echo: hi", quick.stderr

    started = time.monotonic()
    hung = run_llmos("call", "weather", '{"city": "Paris"}', home=home,
                     env={**fast, "LLMOS_SYSCALL_TIMEOUT": "1"}, timeout=120)
    took = time.monotonic() - started
    assert assert_one_line_error(hung, 1) == "llmos: error: weather timed out after 1 s"
    assert took < baseline + 1 + 5, f"took {took:.1f} s (starting llmos: {baseline:.1f} s)"


def test_a_bad_time_out_setting_is_a_usage_error(home):
    done = run_llmos("ps", home=home, env={"LLMOS_SYSCALL_TIMEOUT": "soon"}, timeout=120)
    line = assert_one_line_error(done, 2)
    assert "LLMOS_SYSCALL_TIMEOUT: 'soon' is not a number of seconds" in line
