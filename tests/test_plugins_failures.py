"""Broken plugins never take the shell down: they are shown broken, the others keep working.

The plugins are real files under tests/plugins/, loaded from a plugins folder
exactly as a user's would be.
"""

from __future__ import annotations

import json

import pytest

from driver_fixtures import NO_MODEL, PLUGINS_DIR, run_llmos
from llmos_shell import hookspecs
from llmos_shell.drivers import driver_report
from llmos_shell.errors import UsageError
from llmos_shell.plugins import DEFAULT_PLUGINS
from llmos_shell.testing import make_system


@pytest.fixture
def machine(tmp_path):
    system = make_system(tmp_path, plugins=[], plugins_dir=PLUGINS_DIR, model=NO_MODEL)
    yield system
    system.close()


def test_the_good_plugin_works_next_to_the_broken_ones(machine):
    assert machine.call("shout", {"text": "hello"}) == "HELLO"
    machine.fs.write("/notes/todo.txt", "milk\neggs\nbread\n")
    assert machine.call("line_count", {"path": "/notes/todo.txt"}) == 3


def test_each_broken_plugin_is_recorded_with_its_error(machine):
    broken = machine.broken
    assert set(broken) == {"import_error", "bad_signature", "raises_at_registration", "untyped_syscall"}
    assert broken["import_error"] == "ModuleNotFoundError: No module named 'llmos_no_such_package_xyz'"
    assert broken["bad_signature"].startswith("PluginValidationError: Plugin 'bad_signature' for hook "
                                              "'register_syscalls'")
    assert broken["raises_at_registration"] == "RuntimeError: cannot find my configuration file"
    assert "parameter 'value' needs a type annotation" in broken["untyped_syscall"]


def test_a_plugin_that_raised_while_registering_leaves_no_syscall_behind(machine):
    assert "registered_first" not in machine.table
    assert "untyped" not in machine.table and "hello" not in machine.table
    with pytest.raises(UsageError, match="no syscall named 'registered_first'"):
        machine.call("registered_first", {"text": "x"})


def test_a_raising_syscall_raises_to_its_caller_and_the_rest_keep_working(machine):
    with pytest.raises(RuntimeError, match="the device is on fire"):
        machine.call("boom", {})
    assert machine.call("shout", {"text": "still here"}) == "STILL HERE"
    with pytest.raises(RuntimeError, match="again"):
        machine.call("boom", {"reason": "again"})


def test_the_driver_report_shows_broken_and_unavailable_plugins(machine):
    rows = {row["driver"]: row for row in driver_report(machine)}
    assert rows["good"] == {"driver": "good", "status": "ok", "backend": "python", "detail": "",
                            "syscalls": ["line_count", "shout"]}
    for name in ("import_error", "bad_signature", "raises_at_registration", "untyped_syscall"):
        assert rows[name]["status"] == "broken" and rows[name]["detail"]
    # its status probe raised: shown, not fatal
    assert rows["raising_syscall"]["status"] == "unavailable"
    assert "status probe crashed" in rows["raising_syscall"]["detail"]


def test_the_command_line_lists_broken_plugins_and_exits_0(tmp_path):
    done = run_llmos(tmp_path, "--plugins-dir", str(PLUGINS_DIR), "drivers", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["driver"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["import_error"]["status"] == "broken"
    assert rows["good"]["status"] == "ok"
    assert {"translate", "summarise", "vision", "speech", "files"} <= set(rows)


def test_llmos_call_of_a_raising_syscall_is_one_line_on_stderr(tmp_path):
    done = run_llmos(tmp_path, "--plugins-dir", str(PLUGINS_DIR), "call", "boom", '{"reason": "no disk"}')
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "no disk" in done.stderr
    ok = run_llmos(tmp_path, "--plugins-dir", str(PLUGINS_DIR), "call", "shout", '{"text": "fine"}')
    assert ok.returncode == 0 and ok.stdout.strip() == "FINE"


def test_llmos_trace_traces_every_hook_call(tmp_path):
    done = run_llmos(tmp_path, "--plugins-dir", str(PLUGINS_DIR), "call", "shout", '{"text": "x"}',
                     env={"LLMOS_TRACE": "1"})
    assert done.returncode == 0
    assert "call_syscall" in done.stderr and "shout" in done.stderr
    quiet = run_llmos(tmp_path, "--plugins-dir", str(PLUGINS_DIR), "call", "shout", '{"text": "x"}')
    assert "call_syscall" not in quiet.stderr


def test_strict_make_system_names_the_broken_plugins(tmp_path):
    with pytest.raises(AssertionError, match="import_error: ModuleNotFoundError"):
        make_system(tmp_path, plugins=[], plugin_files=[PLUGINS_DIR / "import_error.py", PLUGINS_DIR / "good.py"],
                    strict=True)


def test_plugin_files_are_copied_into_the_plugins_folder(tmp_path):
    system = make_system(tmp_path, plugins=[], plugin_files=[PLUGINS_DIR / "good.py"], strict=True)
    assert (tmp_path / "plugins" / "good.py").is_file()
    assert system.table.names() == ["line_count", "shout"]


def test_the_bundled_drivers_load_like_any_plugin(tmp_path):
    system = make_system(tmp_path, model=NO_MODEL, strict=True)
    assert set(system.plugins) == {name.rsplit(".", 1)[-1] for name in DEFAULT_PLUGINS}
    drivers = {s.driver for s in system.table}
    assert {"translate", "summarise", "vision", "speech"} <= drivers
    for syscall in system.table:  # every syscall is described to the model
        assert syscall.description and syscall.parameters["type"] == "object"
        for name, prop in syscall.parameters["properties"].items():
            assert prop.get("description"), f"{syscall.name}.{name} has no description"


def test_every_hook_is_documented_with_an_example():
    for name in hookspecs.HOOK_NAMES:
        doc = getattr(hookspecs, name).__doc__
        assert doc and "Example" in doc, name
