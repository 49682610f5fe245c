"""An MCP server named like one of llmos's drivers: `memory`, as server-memory's own README names it.

A copied Claude Desktop mcp.json just works (the server's driver is namespaced `memory_mcp` and
says so); `llmos mcp add memory` is refused with the fix. The server is the real stdio test
server (tests/mcp_notes_server.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_shell.errors import Denied
from llmos_shell.testing import make_system

TESTS = Path(__file__).parent
NOTES_SERVER = TESTS / "mcp_notes_server.py"
NO_MODEL = "/nonexistent/no-model.gguf"


def llmos(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmos_shell", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "LLMOS_MODEL": NO_MODEL})


def claude_desktop_file(home: Path) -> None:
    entry = {"command": sys.executable, "args": [str(NOTES_SERVER), "--store", str(home / "notes.json")]}
    (home / "mcp.json").write_text(json.dumps({"mcpServers": {"memory": entry}}))


def test_a_copied_mcp_json_with_a_drivers_name_just_works(home):
    claude_desktop_file(home)
    machine = make_system(home, model=NO_MODEL)
    try:
        assert not {name for name in machine.broken if "memory" in name}, machine.broken
        assert "memory_mcp.echo" in machine.table and "recall" in machine.table   # both usable
        assert machine.call("memory_mcp.echo", {"text": "hi"}) == {"result": "hi"}
        status = {s.name: s for s in machine.driver_statuses()}["memory_mcp"]
        assert status.ok and "'memory' in mcp.json, named memory_mcp here" in status.backend
    finally:
        machine.close()
    listed = llmos(home, "mcp", "list")
    assert listed.returncode == 0 and "named memory_mcp" in listed.stdout
    drivers = llmos(home, "drivers")
    assert "memory_mcp" in drivers.stdout and "named memory_mcp here" in drivers.stdout


def test_mcp_add_refuses_a_drivers_name_with_the_fix(home):
    added = llmos(home, "mcp", "add", "memory", "--", sys.executable, str(NOTES_SERVER), "--store",
                  str(home / "notes.json"))
    assert added.returncode == 2 and len(added.stderr.strip().splitlines()) == 1, added.stderr
    assert "add it under another name, e.g. llmos mcp add memory_graph" in added.stderr
    assert not (home / "mcp.json").exists() or "memory" not in json.loads((home / "mcp.json").read_text())["mcpServers"]
    fixed = llmos(home, "mcp", "add", "memory_graph", "--", sys.executable, str(NOTES_SERVER), "--store",
                  str(home / "notes.json"))
    assert fixed.returncode == 0 and "memory_graph.echo" in fixed.stdout, fixed.stderr


def test_mcp_serve_denials_do_not_suggest_approve_ask(home):
    from llmos_shell.mcp.server import LlmosMcp

    machine = make_system(home, plugins=["llmos_plugins.files"], model=NO_MODEL)
    try:
        machine.fs.write("/notes/keep.txt", "keep")
        server = LlmosMcp(machine, ask=False)
        import threading

        with pytest.raises(Denied) as denied:
            server.call("delete_file", {"path": "/notes/keep.txt"}, threading.Event())
        assert "--approve ask" not in str(denied.value) and "--approve auto" in str(denied.value)
        assert machine.fs.exists("/notes/keep.txt")
    finally:
        machine.close()
