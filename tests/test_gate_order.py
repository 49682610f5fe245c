"""No plugin gets around the syscall gate, whatever the style or order of its `call_syscall`.

pluggy calls the most recently registered implementation first, and `tryfirst` moves one ahead;
the gate must not depend on either. The plugins are real files under tests/plugins/gate/:
wrappers new-style and old-style, with and without tryfirst, and plain implementations that
would replace the driver's function, with and without tryfirst.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_llmos
from llmos_shell.errors import Denied, UsageError
from llmos_shell.testing import make_system
from llmos_shell.watchdog import SyscallTimeout

GATE_PLUGINS = Path(__file__).parent / "plugins" / "gate"
NO_MODEL = "/nonexistent/no-model.gguf"


def system_with(home: Path, *names: str):
    files = [GATE_PLUGINS / "sleepy.py", *(GATE_PLUGINS / f"{name}.py" for name in names)]
    machine = make_system(home, plugins=[], plugin_files=files, model=NO_MODEL)
    machine.config.syscall_timeout = 1.0
    return machine


def audit(machine) -> list[tuple[str, str]]:
    return [(row["status"], row["error"] or "") for row in machine.fs.syscalls()]


@pytest.mark.parametrize("plugin", ["veto", "veto_tryfirst", "veto_old_style"])
def test_a_wrapper_runs_inside_validation_audit_and_time_out(tmp_path, plugin):
    machine = system_with(tmp_path / "home", plugin)
    try:
        assert not machine.broken, machine.broken
        seen = machine.pm.get_plugin(plugin).SEEN
        # unvalidated arguments never reach the wrapper, and the refusal is audited
        with pytest.raises(UsageError):
            machine.call("nap", {"seconds": "x"})
        assert seen == []
        # it sees the arguments as validated (the integer became the float the schema says)
        assert machine.call("nap", {"seconds": 0}) == "slept 0 s"
        assert seen == [{"seconds": 0}] and isinstance(seen[0]["seconds"], (int, float))
        # its veto is audited as a denial
        with pytest.raises(Denied, match="veto"):
            machine.call("nap", {"seconds": 13})
        # its own time counts against the call's time-out (1 s here; it sleeps 3 s)
        started = time.monotonic()
        with pytest.raises(SyscallTimeout):
            machine.call("nap", {"seconds": 99})
        assert time.monotonic() - started < 2.5
        statuses = audit(machine)
        assert [s for s, _ in statuses] == ["error", "ok", "denied", "error"]
        assert "seconds" in statuses[0][1] and "veto" in statuses[2][1] and "timed out" in statuses[3][1]
    finally:
        machine.close()


@pytest.mark.parametrize("plugin", ["replaces", "replaces_tryfirst"])
def test_a_plain_call_syscall_is_refused_at_load_and_replaces_nothing(tmp_path, plugin):
    machine = system_with(tmp_path / "home", plugin)
    try:
        assert "not a wrapper" in machine.broken[plugin] and "wrapper=True" in machine.broken[plugin]
        assert machine.pm.get_plugin(plugin) is None
        assert machine.call("nap", {"seconds": 0}) == "slept 0 s"     # the driver's own function ran
        with pytest.raises(SyscallTimeout):                            # and the time-out holds
            machine.call("nap", {"seconds": 5})
        assert [s for s, _ in audit(machine)] == ["ok", "error"]
    finally:
        machine.close()


def test_a_plain_call_syscall_registered_around_the_loader_is_not_run(tmp_path):
    """Even registered by hand after loading (not through the loader), it never takes a call."""
    import importlib.util

    machine = system_with(tmp_path / "home")
    try:
        spec = importlib.util.spec_from_file_location("llmos_test_replaces", GATE_PLUGINS / "replaces.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        machine.pm.register(module, name="sneaky")
        with pytest.raises(Exception, match="not a wrapper"):
            machine.call("nap", {"seconds": 0})
        assert module.CALLED == []
        assert [s for s, _ in audit(machine)] == ["error"]
    finally:
        machine.close()


def test_llmos_drivers_and_call_from_the_command_line(home):
    plugins = home / "plugins"
    plugins.mkdir()
    for name in ("sleepy", "replaces_tryfirst", "veto_tryfirst"):
        (plugins / f"{name}.py").write_text((GATE_PLUGINS / f"{name}.py").read_text())
    env = {"LLMOS_SYSCALL_TIMEOUT": "2", "LLMOS_MODEL": NO_MODEL}
    drivers = run_llmos("drivers", home=home, env=env)
    assert "replaces_tryfirst" in drivers.stdout and "not a wrapper" in drivers.stdout
    started = time.monotonic()
    slow = run_llmos("call", "nap", '{"seconds": 5}', home=home, env=env)
    assert "timed out after 2 s" in assert_one_line_error(slow, 1)
    assert time.monotonic() - started < 4.9
    vetoed = run_llmos("call", "nap", '{"seconds": 13}', home=home, env=env)
    assert "veto" in assert_one_line_error(vetoed, 3)
