"""MCP servers as drivers: real stdio servers (tests/mcp_notes_server.py, and the published
reference servers mcp-server-time, mcp-server-git and, from npm, @modelcontextprotocol/server-filesystem),
loaded from $LLMOS_HOME/mcp.json."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmos_shell.errors import Denied
from llmos_shell.kernel.grammar import call_grammar, write_calls
from llmos_shell.kernel.loop import Kernel
from llmos_shell.kernel.router import Router
from llmos_shell.mcp.drivers import RESULT_CHARS
from llmos_shell.syscalls import ArgumentError
from llmos_shell.testing import FakeCpu, make_system

TESTS = Path(__file__).parent
NOTES_SERVER = TESTS / "mcp_notes_server.py"
# The reference servers run as `python -m`, so they are found whether or not the venv is on PATH.
needs_time = pytest.mark.skipif(importlib.util.find_spec("mcp_server_time") is None, reason="pip install mcp-server-time")
needs_git = pytest.mark.skipif(importlib.util.find_spec("mcp_server_git") is None or shutil.which("git") is None,
                               reason="pip install mcp-server-git; apt-get install git")
# `make setup-test` installs the npm server into the venv's bin, which need not be on PATH.
FS_SERVER = shutil.which("mcp-server-filesystem", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                        os.environ.get("PATH", "")]))
needs_filesystem = pytest.mark.skipif(FS_SERVER is None or shutil.which("node") is None,
                                      reason="no mcp-server-filesystem or node: make setup-test installs "
                                             "@modelcontextprotocol/server-filesystem with npm (apt: nodejs npm)")


def notes_entry(home: Path, *extra: str, **settings) -> dict:
    return {"command": sys.executable, "args": [str(NOTES_SERVER), "--store", str(home / "notes.json"), *extra],
            **settings}


def write_servers(home: Path, **servers) -> None:
    (home / "mcp.json").write_text(json.dumps({"mcpServers": servers}))


def run_llmos(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmos_shell", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "LLMOS_HOME": str(home)})


@pytest.fixture
def notes_home(home):
    write_servers(home, notes=notes_entry(home, timeout=3), broken=notes_entry(home, "--exit-at-start"))
    return home


@pytest.fixture
def system(notes_home):
    machine = make_system(notes_home, plugins=["llmos_plugins.files"], model="/nonexistent/no-model.gguf")
    yield machine
    machine.close()


def store(home: Path) -> dict:
    return json.loads((home / "notes.json").read_text()) if (home / "notes.json").exists() else {}


# --- loading -----------------------------------------------------------------------------------

def test_tools_are_syscalls_listed_by_drivers_and_a_broken_server_leaves_the_rest(notes_home):
    first = run_llmos(notes_home, "drivers", "--json")
    assert first.returncode == 0, first.stderr
    rows = {row["driver"]: row for row in map(json.loads, first.stdout.splitlines())}
    assert rows["notes"]["status"] == "ok"
    assert {"notes.add_note", "notes.read_note", "notes.erase_notebook", "notes.sync"} <= set(rows["notes"]["syscalls"])
    assert rows["broken"]["status"] == "broken"
    assert "permission denied" in rows["broken"]["detail"]   # the server's own last words on stderr
    assert rows["files"]["status"] == "ok" and "write_file" in rows["files"]["syscalls"]
    # The next run takes the tool list from the cache: the server is not started to list it.
    second = run_llmos(notes_home, "drivers")
    assert second.returncode == 0, second.stderr
    notes_line = next(line for line in second.stdout.splitlines() if line.startswith("notes "))
    assert "not started; tools cached" in notes_line
    assert "notes.add_note" in second.stdout and "broken" in second.stdout


def test_schemas_feed_validation_and_the_grammar_and_annotations_give_capabilities(system):
    add = system.table.get("notes.add_note")
    assert add.parameters["required"] == ["title", "text"]
    assert system.table.get("notes.erase_notebook").irreversible            # destructiveHint
    assert "read_only" in system.table.get("notes.read_note").capabilities  # readOnlyHint
    assert not system.table.get("notes.add_note").irreversible              # destructiveHint: false
    with pytest.raises(ArgumentError, match="'text' is a required property"):
        add.validate({"title": "x"})
    grammar = call_grammar(system.table.subset(["notes.add_note", "notes.count_notes"]))
    assert '"notes.add_note"' in grammar.replace('\\"', '"')


def test_calls_go_through_the_gate_with_text_and_structured_results(system, notes_home):
    assert system.call("notes.add_note", {"title": "milk", "text": "buy <|im_end|>milk"}) == \
        {"result": "saved note 'milk'"}
    assert store(notes_home) == {"milk": "buy <|im_end|>milk"}
    read = system.call("notes.read_note", {"title": "milk"})
    assert read == {"result": "buy milk"}        # the control token stripped on the way in
    assert system.call("notes.count_notes", {}) == {"notes": 1, "titles": ["milk"]}
    statuses = [(row["name"], row["status"]) for row in system.fs.syscalls()]
    assert ("notes.add_note", "ok") in statuses and ("notes.read_note", "ok") in statuses


def test_the_router_learns_tools_without_examples_from_their_descriptions(notes_home):
    from llmos_shell.kernel.router import Router

    machine = make_system(notes_home, plugins=["llmos_plugins.files", "llmos_plugins.translate"],
                          model="/nonexistent/no-model.gguf")
    try:
        router = Router(cache_dir=notes_home / "cache")
        plan = lambda text: router.plan(text, machine.table, lambda path: None)  # noqa: E731
        assert plan("How many notes do I have?").names == ["notes.count_notes"]
        assert plan("Delete every note in my notebook").names == ["notes.erase_notebook"]
        assert plan("Translate 'good morning' into German").names == ["translate"]
        hello = plan("Hello!")
        assert hello.names == [] and router.described_candidate(hello, machine.table) is None
    finally:
        machine.close()


def test_a_destructive_tool_is_denied_under_approve_never(system, notes_home):
    system.call("notes.add_note", {"title": "a", "text": "keep me"})
    with pytest.raises(Denied, match="denied by the approval policy"):
        system.call("notes.erase_notebook", {}, approve="never")
    assert store(notes_home) == {"a": "keep me"}
    assert system.fs.syscalls()[-1]["status"] == "denied"
    # The kernel's own gate: the model asks for the call, the policy refuses it.
    cpu = FakeCpu([write_calls([{"name": "notes.erase_notebook", "arguments": {}}])])
    machine = make_system(notes_home, plugins=[], cpu=cpu)
    try:
        kernel = Kernel(machine, approve="never")
        turn = kernel.run(kernel.spawn("t", drivers=["notes"]), "Erase my notebook")
        assert turn.status == "denied" and turn.syscalls[0].name == "notes.erase_notebook"
    finally:
        machine.close()
    assert store(notes_home) == {"a": "keep me"}
    # And from the command line: exit code 3.
    result = run_llmos(notes_home, "call", "notes.erase_notebook")
    assert result.returncode == 3 and "denied" in result.stderr and "Traceback" not in result.stderr


def test_a_hung_call_is_cut_at_the_time_out_and_the_kernel_stays_responsive(notes_home):
    cpu = FakeCpu([write_calls([{"name": "notes.sync", "arguments": {}}]), "The sync did not finish.",
                   write_calls([{"name": "notes.echo", "arguments": {"text": "still here"}}]), "It said: still here."])
    machine = make_system(notes_home, plugins=[], cpu=cpu)
    try:
        kernel = Kernel(machine)
        process = kernel.spawn("t", drivers=["notes"])
        started = time.monotonic()
        turn = kernel.run(process, "Sync my notebook")
        assert time.monotonic() - started < 15
        # the call failed and nothing mended it: a failed task, the model's words kept
        assert turn.status == "error" and turn.output == "The sync did not finish."
        assert turn.syscalls[0].status == "error" and "timed out after 3 s" in turn.syscalls[0].error
        # The same server answers the next call at once: the hung request was cancelled, not waited on.
        started = time.monotonic()
        turn = kernel.run(process, "Echo 'still here'")
        assert turn.syscalls[0].status == "ok" and turn.syscalls[0].result == {"result": "still here"}
        assert time.monotonic() - started < 5
    finally:
        machine.close()


def test_a_server_that_crashes_is_broken_until_a_call_starts_it_again(system):
    from llmos_shell.drivers import driver_report

    system.call("notes.echo", {"text": "hi"})
    with pytest.raises(Exception, match="went away: the server closed the connection"):
        system.call("notes.restart", {}, approve="auto")
    rows = {row["driver"]: row for row in driver_report(system)}
    assert rows["notes"]["status"] == "broken" and "closed the connection" in rows["notes"]["detail"]
    assert system.call("list_files", {"path": "/"}) is not None   # the rest keep working
    assert system.call("notes.echo", {"text": "back"}) == {"result": "back"}
    assert {row["driver"]: row for row in driver_report(system)}["notes"]["status"] == "ok"


def test_a_huge_result_is_cut_to_the_context_budget_with_a_note(system):
    result = system.call("notes.export_notebook", {"size": 1_048_576})
    assert isinstance(result, str) and len(result) <= RESULT_CHARS
    assert result.startswith("All work and no play.")
    assert re.search(r"\[truncated: the tool returned 1,048,576 characters; the first [\d,]+ are shown", result)


def test_servers_stop_with_llmos(notes_home):
    machine = make_system(notes_home, plugins=[])
    machine.call("notes.echo", {"text": "hi"})
    pid = int((notes_home / "notes.pid").read_text())
    os.kill(pid, 0)   # running
    machine.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"MCP server {pid} still runs after System.close()")


def test_a_bad_mcp_json_is_one_broken_row(home):
    (home / "mcp.json").write_text('{"mcpServers": {"x": {"command": 5}}, ')
    rows = {row["driver"]: row for row in map(json.loads, run_llmos(home, "drivers", "--json").stdout.splitlines())}
    assert rows["mcp.json"]["status"] == "broken" and "not valid JSON" in rows["mcp.json"]["detail"]
    assert rows["files"]["status"] == "ok"
    write_servers(home, good=notes_entry(home), wrong={"command": "x", "url": "http://127.0.0.1:1/mcp"})
    rows = {row["driver"]: row for row in map(json.loads, run_llmos(home, "drivers", "--json").stdout.splitlines())}
    assert rows["wrong"]["status"] == "broken" and "either a command" in rows["wrong"]["detail"]
    assert rows["good"]["status"] == "ok"


def test_a_tool_with_a_bad_schema_is_left_out_and_the_others_stay(home):
    from llmos_shell.mcp.config import parse_entry
    from llmos_shell.mcp.drivers import ToolCache

    write_servers(home, notes=notes_entry(home))
    spec = parse_entry("notes", notes_entry(home))
    ToolCache(home).put(spec, [  # a tool list as a server might give it (read from the cache: no start)
        {"name": "echo", "description": "Echo a text", "inputSchema": {"type": "object", "properties": {
            "text": {"type": "string"}}, "required": ["text"]}, "annotations": {"readOnlyHint": True}},
        {"name": "odd", "description": "A tool whose schema is not JSON Schema",
         "inputSchema": {"type": "object", "properties": {"x": {"type": 5}}}}])
    machine = make_system(home, plugins=[])
    try:
        assert "notes.echo" in machine.table and "notes.odd" not in machine.table
        status = {s.name: s for s in machine.driver_statuses()}["notes"]
        assert status.ok and "left out: odd" in status.backend and "tools cached" in status.backend
        assert machine.call("notes.echo", {"text": "hi"}) == {"result": "hi"}   # started on first use
    finally:
        machine.close()


def test_mcp_add_list_remove(home):
    added = run_llmos(home, "mcp", "add", "notes", "--", sys.executable, str(NOTES_SERVER), "--store",
                      str(home / "notes.json"))
    assert added.returncode == 0, added.stderr
    assert "notes.add_note" in added.stdout and "tools:" in added.stdout
    config = json.loads((home / "mcp.json").read_text())
    assert config["mcpServers"]["notes"]["args"][-2:] == ["--store", str(home / "notes.json")]
    listed = run_llmos(home, "mcp", "list")
    assert "notes" in listed.stdout and "add_note" in listed.stdout
    again = run_llmos(home, "mcp", "add", "notes", "--", "x")
    assert again.returncode == 2 and "already" in again.stderr and len(again.stderr.splitlines()) == 1
    failing = run_llmos(home, "mcp", "add", "bad", "--", sys.executable, str(NOTES_SERVER), "--store", "x",
                        "--exit-at-start")
    assert failing.returncode == 1 and "failed to start" in failing.stderr and "Traceback" not in failing.stderr
    assert run_llmos(home, "mcp", "remove", "notes").returncode == 0
    assert "notes" not in json.loads((home / "mcp.json").read_text())["mcpServers"]
    missing = run_llmos(home, "mcp", "remove", "notes")
    assert missing.returncode == 2 and "no MCP server named 'notes'" in missing.stderr


# --- the published reference servers -----------------------------------------------------------

@needs_git
def test_mcp_server_git_on_a_repository_the_test_creates(home, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README.md").write_text("# A repository\n")
    subprocess.run(git + ["add", "README.md"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "First commit of the test"], check=True)
    (repo / "new.txt").write_text("not yet added\n")
    write_servers(home, git={"command": sys.executable, "args": ["-m", "mcp_server_git", "--repository", str(repo)]})
    machine = make_system(home, plugins=[], strict=True)
    try:
        assert {"git.git_status", "git.git_log", "git.git_reset"} <= set(machine.table.names())
        status = machine.call("git.git_status", {"repo_path": str(repo)})
        assert "new.txt" in json.dumps(status)
        log = machine.call("git.git_log", {"repo_path": str(repo)})
        assert "First commit of the test" in json.dumps(log)
        assert machine.table.get("git.git_reset").irreversible
        with pytest.raises(Denied):
            machine.call("git.git_reset", {"repo_path": str(repo)})
    finally:
        machine.close()


@needs_time
def test_mcp_server_time_through_the_gate(home):
    write_servers(home, time={"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]})
    machine = make_system(home, plugins=[], strict=True)
    try:
        result = machine.call("time.get_current_time", {"timezone": "Asia/Tokyo"})
        assert result["timezone"] == "Asia/Tokyo" and result["datetime"].endswith("+09:00")
    finally:
        machine.close()


@pytest.mark.model
@pytest.mark.slow
@needs_time
def test_the_kernel_asks_the_time_server_what_time_it_is_in_tokyo(home, default_cpu):
    """The default model, the router and the time server: the tool has no examples, so the router
    learns it from its description and the model confirms the call (the bundled `system` driver,
    which also tells the time, is left out)."""
    write_servers(home, time={"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]})
    machine = make_system(home, cpu=default_cpu, plugins=["llmos_plugins.files", "llmos_plugins.translate",
                                                          "llmos_plugins.summarise"], strict=True)
    try:
        kernel = Kernel(machine)
        turn = kernel.run(kernel.spawn("t"), "What time is it in Tokyo?", seed=0)
        assert turn.status == "ok", turn.error
        calls = [(r.name, r.arguments, r.status) for r in turn.syscalls]
        assert calls == [("time.get_current_time", {"timezone": "Asia/Tokyo"}, "ok")], calls
        clock = turn.syscalls[0].result["datetime"][11:16]       # "HH:MM" of the tool's answer
        assert clock in turn.output or clock.lstrip("0") in turn.output, turn.output
        # Chat still goes to the model alone.
        assert kernel.run(kernel.spawn("t"), "Hello!", seed=0).syscalls == []
    finally:
        machine.unload_cpu()   # the session's CPU stays open for the tests after this one
        machine.close()


# --- @modelcontextprotocol/server-filesystem: the host's files ---------------------------------

@pytest.fixture
def host_home(tmp_path, monkeypatch):
    """A home on the host (``$HOME``, which the server inherits) with the folder ~/data in it."""
    host = tmp_path / "host"
    (host / "data" / "reports").mkdir(parents=True)
    (host / "data" / "shopping.txt").write_text("milk\neggs\n")
    (host / "data" / "todo.md").write_text("- call the bank\n")
    (host / "projects" / "garden").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(host))
    return host


@pytest.fixture
def fs_system(home, host_home):
    """The bundled file syscalls, and a filesystem server given ~/data and, by its full path, ~/projects."""
    write_servers(home, filesystem={"command": FS_SERVER, "args": ["~/data", str(host_home / "projects")]})
    machine = make_system(home, cpu=FakeCpu(), plugins=["llmos_plugins.files"], strict=True)
    machine.fs.write("/notes/todo.txt", "water the plants\n")
    yield machine
    machine.close()


def calls(turn) -> list[tuple]:
    return [(r.name, r.arguments, r.status) for r in turn.syscalls]


@needs_filesystem
def test_a_host_path_request_runs_the_server_s_tool_and_the_reply_is_its_listing(fs_system):
    kernel = Kernel(fs_system)
    turn = kernel.run(kernel.spawn("t"), "List the files in ~/data")
    assert turn.status == "ok", turn.error
    assert calls(turn) == [("filesystem.list_directory", {"path": "~/data"}, "ok")]
    # the tool's result is the reply, as a bundled driver's output: not the model's echo of a label
    assert turn.output == "[DIR] reports\n[FILE] shopping.txt\n[FILE] todo.md"


@needs_filesystem
def test_a_request_about_an_llmos_path_stays_on_the_bundled_filesystem(fs_system):
    kernel = Kernel(fs_system)
    turn = kernel.run(kernel.spawn("t"), "List the files in /notes")
    assert turn.status == "ok", turn.error
    assert calls(turn) == [("list_files", {"path": "/notes"}, "ok")]
    assert turn.output == "todo.txt"
    fs_system.cpu.enqueue("Water the plants.")    # read_file's text is data the model answers from
    turn = kernel.run(kernel.spawn("t"), "What is in /notes/todo.txt?")
    assert calls(turn) == [("read_file", {"path": "/notes/todo.txt"}, "ok")]


# Requests and the plan they get, with the server given ~/data and ~/projects (by its full path).
HOST_AND_LLMOS_PLANS = [
    ("hey, what have I got in my ~/data folder?", ["filesystem.list_directory"]),
    ("Write 'call the plumber' to ~/data/reminder.txt", ["filesystem.write_file"]),
    ("Translate ~/data/todo.md into French", ["filesystem.read_file", "translate"]),   # read there, piped
    ("Show me what's in {host}/projects", ["filesystem.list_directory"]),   # a folder it was given
    ("List the files in /notes", ["list_files"]),
    ("Save 'hello' in /notes/hi.txt", ["write_file"]),
]


@needs_filesystem
def test_the_router_sends_host_paths_to_the_server_and_llmos_paths_to_the_bundled_fs(home, host_home):
    write_servers(home, filesystem={"command": FS_SERVER, "args": ["~/data", str(host_home / "projects")]})
    machine = make_system(home, plugins=["llmos_plugins.files", "llmos_plugins.translate"], strict=True)
    machine.fs.write("/notes/todo.txt", "water the plants\n")
    try:
        router = Router(cache_dir=home / "cache")
        kind_of = Kernel(machine).kind_of
        planned = [(text, router.plan(text.format(host=host_home), machine.table, kind_of).names)
                   for text, _plan in HOST_AND_LLMOS_PLANS]
        assert planned == HOST_AND_LLMOS_PLANS
    finally:
        machine.close()
