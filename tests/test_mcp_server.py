"""`llmos mcp serve`, used by the SDK's own client over stdio and over Streamable HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from driver_fixtures import needs_binary, needs_module, text_image

mcp = pytest.importorskip("mcp")
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402
from mcp.types import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

def needs_backends(function):
    """translate's Apertium and ocr's Tesseract, installed by apt (see the Makefile)."""
    for mark in (pytest.mark.system, needs_binary("tesseract", "tesseract-ocr tesseract-ocr-eng"),
                 needs_module("pytesseract", "pytesseract"), needs_binary("apertium", "apertium apertium-eng-spa")):
        function = mark(function)
    return function


@pytest.fixture
def served_home(home):
    """A home whose filesystem holds a note and an image of a sign."""
    from llmos_shell.testing import make_system

    machine = make_system(home, plugins=[])
    machine.fs.write("/notes/todo.txt", "buy milk\ncall Ann\n")
    machine.fs.write("/inputs/sign.png", text_image("OPEN 24 HOURS"))
    machine.close()
    return home


def llmos_env(home: Path) -> dict[str, str]:
    # no model: `ask` is then not offered, and nothing loads one by surprise
    return {**os.environ, "LLMOS_HOME": str(home), "LLMOS_MODEL": "/nonexistent/no-model.gguf",
            "LLMOS_TRANSLATE_BACKEND": "apertium"}


def stdio_params(home: Path, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "llmos_shell", "mcp", "serve", *extra],
                                 env=llmos_env(home), cwd=str(REPO))


async def exercise(client: Client, home: Path) -> None:
    """What both transports must do."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"translate", "ocr", "read_file", "delete_file"} <= set(tools)
    assert tools["delete_file"].annotations.destructive_hint is True
    assert tools["read_file"].annotations.read_only_hint is True
    assert tools["translate"].input_schema["required"] == ["text", "target_lang"]
    assert "ask" not in tools   # no model here

    translated = await client.call_tool("translate", {"text": "good morning", "target_lang": "es"})
    assert not translated.is_error, translated.content
    assert translated.structured_content["translation"].lower().startswith("buenos d")

    ocr = await client.call_tool("ocr", {"path": "/inputs/sign.png"})
    assert not ocr.is_error, ocr.content
    assert "OPEN 24 HOURS" in ocr.structured_content["text"].upper()

    resources = await client.list_resources()
    assert "llmos://files/notes/todo.txt" in {str(r.uri) for r in resources.resources}
    read = await client.read_resource("llmos://files/notes/todo.txt")
    assert read.contents[0].text == "buy milk\ncall Ann\n"
    image = await client.read_resource("llmos://files/inputs/sign.png")
    assert image.contents[0].mime_type == "image/png" and image.contents[0].blob

    denied = await client.call_tool("delete_file", {"path": "/notes/todo.txt"})
    assert denied.is_error and "denied by the approval policy" in denied.content[0].text
    assert (await client.read_resource("llmos://files/notes/todo.txt")).contents[0].text  # still there

    bad_arguments = await client.call_tool("translate", {"text": 3})
    assert bad_arguments.is_error and "required property" in bad_arguments.content[0].text
    with pytest.raises(MCPError) as unknown:
        await client.call_tool("no_such_tool", {})
    assert unknown.value.code == INVALID_PARAMS
    with pytest.raises(MCPError) as missing:
        await client.read_resource("llmos://files/nowhere.txt")
    assert missing.value.code == INVALID_PARAMS and "no such file" in missing.value.message


@needs_backends
@pytest.mark.parametrize("mode", ["auto", "legacy"])   # the 2026 protocol, and the initialize handshake
def test_stdio_with_the_sdk_client(served_home, mode):
    async def main():
        async with Client(stdio_params(served_home), mode=mode) as client:
            await exercise(client, served_home)

    anyio.run(main)
    log = subprocess.run([sys.executable, "-m", "llmos_shell", "log", "--json"], capture_output=True, text=True,
                         env=llmos_env(served_home), cwd=str(REPO)).stdout
    rows = [json.loads(line) for line in log.splitlines()]
    assert {(r["name"], r["status"]) for r in rows} >= {("translate", "ok"), ("ocr", "ok"), ("delete_file", "denied")}


def test_stdio_answers_a_malformed_request_with_a_json_rpc_error(served_home):
    server = subprocess.Popen([sys.executable, "-m", "llmos_shell", "mcp", "serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=llmos_env(served_home),
                              cwd=str(REPO), text=True)
    try:
        server.stdin.write('{"jsonrpc": "2.0", "id": 1, "method": \n')   # cut off: not JSON
        server.stdin.write('{"id": 2, "params": {}}\n')                   # JSON, but not JSON-RPC
        server.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/teleport", "params": {}}) + "\n")
        server.stdin.flush()
        replies = [json.loads(server.stdout.readline()) for _ in range(3)]
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    assert replies[0]["error"]["code"] == PARSE_ERROR and replies[0]["id"] is None
    assert replies[1]["error"]["code"] == INVALID_REQUEST and replies[1]["id"] is None
    assert replies[2]["id"] == 3 and replies[2]["error"]["code"] == METHOD_NOT_FOUND
    assert server.returncode == 0   # stdin closed: it stops cleanly


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def http_server(served_home):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "llmos_shell", "mcp", "serve", "--http", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=llmos_env(served_home),
                              cwd=str(REPO), text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"llmos mcp serve --http exited: {server.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/mcp"
    server.terminate()
    server.wait(timeout=30)


@needs_backends
def test_streamable_http_with_the_sdk_client(http_server, served_home):
    async def main():
        async with Client(http_server) as client:
            await exercise(client, served_home)

    anyio.run(main)


@needs_backends
def test_llmos_uses_an_http_mcp_server_as_a_driver(http_server, tmp_path):
    """The other way round over HTTP: a second llmos takes the first one's tools by its url."""
    from llmos_shell.errors import Denied
    from llmos_shell.testing import make_system

    client_home = tmp_path / "client"
    client_home.mkdir()
    (client_home / "mcp.json").write_text(json.dumps({"mcpServers": {"remote": {"url": http_server}}}))
    machine = make_system(client_home, plugins=[], strict=True)
    try:
        assert {"remote.translate", "remote.ocr", "remote.delete_file"} <= set(machine.table.names())
        assert machine.table.get("remote.delete_file").irreversible         # destructiveHint, both ways
        assert "read_only" in machine.table.get("remote.read_file").capabilities
        result = machine.call("remote.translate", {"text": "good morning", "target_lang": "es"})
        assert result["translation"].lower().startswith("buenos d")
        with pytest.raises(Denied):
            machine.call("remote.delete_file", {"path": "/notes/todo.txt"})
    finally:
        machine.close()


def test_streamable_http_answers_malformed_json_with_a_json_rpc_error(http_server):
    import httpx2

    reply = httpx2.post(http_server, content=b'{"jsonrpc": "2.0", "id": 1, "method": ',
                        headers={"content-type": "application/json", "accept": "application/json, text/event-stream"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == PARSE_ERROR


def test_a_port_in_use_is_one_line(served_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "llmos_shell", "mcp", "serve", "--http", str(port)],
                                capture_output=True, text=True, env=llmos_env(served_home), cwd=str(REPO), timeout=60)
    assert result.returncode == 2 and f"cannot serve on 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.model
@pytest.mark.slow
def test_ask_runs_a_request_through_the_kernel(served_home):
    async def main():
        env = {**llmos_env(served_home)}
        env.pop("LLMOS_MODEL")   # the default model
        params = StdioServerParameters(command=sys.executable, args=["-m", "llmos_shell", "mcp", "serve"],
                                       env=env, cwd=str(REPO))
        async with Client(params) as client:
            assert "ask" in {tool.name for tool in (await client.list_tools()).tools}
            result = await client.call_tool("ask", {"request": "Translate 'thank you' into Spanish"},
                                            read_timeout_seconds=600)
            assert not result.is_error, result.content
            assert "gracias" in result.structured_content["reply"].lower()
            assert [c["name"] for c in result.structured_content["syscalls"]] == ["translate"]

    anyio.run(main)


def _running_ask(home: Path, deadline: float) -> int:
    """The pid of the `mcp ask` process once `llmos ps` shows it running."""
    from conftest import run_llmos

    while time.monotonic() < deadline:
        listing = run_llmos("ps", "--json", home=home)
        assert listing.returncode == 0, listing.stderr
        rows = [json.loads(line) for line in listing.stdout.splitlines()]
        running = [row["pid"] for row in rows if row["name"] == "mcp ask" and row["status"] == "running"]
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("`llmos ps` never showed the ask running")


def test_ask_is_a_process_ps_shows_running_and_llmos_kill_stops(tmp_path):
    """`ask` goes through the run queue like every request: `llmos ps` (another program) shows its
    process running, and `llmos kill PID` stops it within a token. The server is the real `llmos mcp
    serve` (tests/scripted_llmos.py swaps in a CPU that tells a story a word every 50 ms)."""
    from conftest import run_llmos

    home = tmp_path / "home"
    home.mkdir()
    script = tmp_path / "script.json"
    story = " ".join(f"word{i}" for i in range(400))   # 20 s at 50 ms a word
    script.write_text(json.dumps({"replies": [story], "token_delay": 0.05}), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "LLMOS_MODEL"}
    params = StdioServerParameters(command=sys.executable,
                                   args=[str(REPO / "tests" / "scripted_llmos.py"), str(script),
                                         "--home", str(home), "mcp", "serve"], env=env, cwd=str(REPO))
    outcome = {}

    async def main():
        async with Client(params) as client:
            assert "ask" in {tool.name for tool in (await client.list_tools()).tools}

            async def ask():
                outcome["result"] = await client.call_tool("ask", {"request": "Tell me a long story"},
                                                           read_timeout_seconds=120)
                outcome["ended"] = time.monotonic()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(ask)
                outcome["pid"] = await anyio.to_thread.run_sync(_running_ask, home, time.monotonic() + 60)
                killer = await anyio.to_thread.run_sync(lambda: run_llmos("kill", str(outcome["pid"]), home=home))
                assert killer.returncode == 0, killer.stderr
                outcome["killed"] = time.monotonic()

    anyio.run(main)
    result = outcome["result"]
    assert result.is_error and "killed" in result.content[0].text, result.content
    assert outcome["ended"] - outcome["killed"] < 10   # stopped, not told to its end (20 s)
    rows = [json.loads(line) for line in run_llmos("ps", "--json", home=home).stdout.splitlines()]
    assert [row["status"] for row in rows if row["pid"] == outcome["pid"]] == ["killed"]


def test_streamable_http_refuses_what_a_web_page_sends(http_server):
    """The same guard as `llmos serve` (llmos_shell/web.py), answered as JSON-RPC errors."""
    import httpx

    rpc = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    for extra, status in (({"host": "evil.example"}, 421), ({"origin": "http://evil.example"}, 403),
                          ({"content-type": "text/plain"}, 415)):
        reply = httpx.post(http_server, content=rpc, headers={**headers, **extra})
        assert reply.status_code == status, (extra, reply.text)
        assert reply.json()["error"]["code"] == -32600 and reply.json()["id"] is None
