"""Each MCP server of ``mcp.json`` as a driver, each of its tools a syscall ``server.tool``.

When are servers started? The syscall table must list every tool before any is
called (``llmos drivers``, the decoding grammar, the router), but starting every
server on every run of llmos would cost seconds and child processes for nothing.
So a server's tool list is cached in ``$LLMOS_HOME/cache/mcp-tools.json``, keyed
by what starts it (command, args, env, url): a server is started to list its tools
only the first time it is seen (or after its entry changed), and otherwise on its
first call, when the cache is refreshed. A server that cannot start then is a
broken driver with its error; the others load as usual.

A tool's ``inputSchema`` is the syscall's parameters (the same grammar and
validation as any syscall); its annotations give capabilities: ``readOnlyHint``
is ``read_only``; otherwise ``destructiveHint`` (true by the spec's default, so
an unannotated tool counts as destructive) is ``irreversible``, and approval
applies. Results come back as text or, with ``structuredContent``, as that
object, with chat-template control tokens stripped and anything longer than a
syscall result's share of the context cut, with a note saying so; the result is
what the user is shown (``output="*"``). The host paths among the server's
arguments (``mcp-server-filesystem ~/data``) are its tools' ``places``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from llmos_shell.errors import LlmosError
from llmos_shell.hookspecs import DriverStatus, hookimpl
from llmos_shell.mcp import config as mcp_config
from llmos_shell.mcp.client import Connection, EventLoop, McpError
from llmos_shell.mcp.config import ServerSpec
from llmos_shell.kernel.memory import MAX_TOOL_CHARS, sanitise
from llmos_shell.kernel.places import places_in
from llmos_shell.syscalls import SyscallError

log = logging.getLogger("llmos.mcp")

CACHE_NAME = "mcp-tools.json"
# A result longer than this is cut: what the kernel keeps of one syscall result in the context.
RESULT_CHARS = MAX_TOOL_CHARS
TOOL_PART = re.compile(r"[^A-Za-z0-9_-]")


# --- a tool as a syscall ------------------------------------------------------------------------

def syscall_name(server: str, tool: str) -> str:
    """``server.tool``, the tool's name made a valid syscall name (MCP allows more characters)."""
    part = TOOL_PART.sub("_", tool)[:64] or "tool"
    return f"{server}.{part if re.match(r'[A-Za-z0-9_]', part) else '_' + part[:63]}"


def capabilities(annotations: dict[str, Any] | None) -> list[str]:
    """MCP tool annotations as llmos capabilities (hints, read with the spec's defaults)."""
    annotations = annotations or {}
    if annotations.get("readOnlyHint") is True:
        return ["read_only"]
    return ["irreversible"] if annotations.get("destructiveHint", True) is not False else []


def tool_record(tool: Any) -> dict[str, Any]:
    """What is kept of a ``mcp.types.Tool`` (JSON, the names of the wire format)."""
    data = tool.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {key: data[key] for key in ("name", "title", "description", "inputSchema", "annotations") if key in data}


def _describe(record: dict[str, Any]) -> str:
    title = record.get("title") or (record.get("annotations") or {}).get("title")
    text = " ".join((record.get("description") or "").split())
    if not text:
        text = title or record["name"].replace("_", " ").replace("-", " ")
    return text


def to_text(result: Any) -> Any:
    """A ``CallToolResult`` as a syscall result: its structured content, else its text.

    A tool error raises McpError with the tool's text (it goes back to the model as the call's error)."""
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            size = len(base64.b64decode(block.data, validate=False)) if block.data else 0
            parts.append(f"[{kind} {block.mime_type}, {size} bytes]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        elif kind == "resource":
            inner = block.resource
            parts.append(getattr(inner, "text", None) or f"[resource {inner.uri}, {inner.mime_type or 'binary'}]")
    text = "\n".join(parts)
    if result.is_error:
        raise McpError(_clip(sanitise(text or "the tool reported an error"))[:500])
    value = result.structured_content
    if value is None:
        return _clip(sanitise(text))
    value = _clean(value)
    size = len(json.dumps(value, ensure_ascii=False, default=str))
    if size > RESULT_CHARS:  # as text, cut like any other
        return _clip(sanitise(text) or json.dumps(value, ensure_ascii=False, default=str))
    return value if isinstance(value, dict) else {"result": value}


def _clean(value: Any) -> Any:
    """Every string of a structured result without chat-template control tokens."""
    if isinstance(value, str):
        return sanitise(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {sanitise(str(k)): _clean(v) for k, v in value.items()}
    return value


def _clip(text: str) -> str:
    """Cut to the context budget of one result, saying how much was left out."""
    if len(text) <= RESULT_CHARS:
        return text
    keep = RESULT_CHARS - 160
    cut = text[:keep]
    return (f"{cut}\n[truncated: the tool returned {len(text):,} characters; the first {keep:,} are shown "
            "(the rest does not fit the context)]")


# --- the driver of one server -------------------------------------------------------------------

class ToolCache:
    """``$LLMOS_HOME/cache/mcp-tools.json``: each server's tools, by the fingerprint of its entry."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "cache" / CACHE_NAME
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, spec: ServerSpec) -> list[dict[str, Any]] | None:
        entry = self._read().get(spec.name)
        if isinstance(entry, dict) and entry.get("fingerprint") == spec.fingerprint():
            tools = entry.get("tools")
            return tools if isinstance(tools, list) else None
        return None

    def put(self, spec: ServerSpec, tools: list[dict[str, Any]]) -> None:
        with self._lock:
            data = self._read()
            data[spec.name] = {"fingerprint": spec.fingerprint(), "tools": tools}
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                partial = self.path.with_suffix(f".{os.getpid()}.tmp")
                partial.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
                os.replace(partial, self.path)
            except OSError:
                log.warning("cannot cache the tools of MCP server %s in %s", spec.name, self.path, exc_info=True)

    def forget(self, name: str) -> None:
        with self._lock:
            data = self._read()
            if data.pop(name, None) is not None:
                self.path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


class ServerDriver:
    """The pluggy plugin of one MCP server (registered under the server's name)."""

    def __init__(self, spec: ServerSpec, connection: Connection, cache: ToolCache,
                 default_timeout: float | None = None) -> None:
        self.spec = spec
        self.connection = connection
        self.cache = cache
        # A call is cut here, after the server has started (its start has a time-out of its own).
        self.call_timeout = spec.timeout or default_timeout or None
        self.cached = False   # the tool list came from the cache: the server has not run yet
        self.skipped: dict[str, str] = {}   # tools that are no syscall (tool name -> why)
        self.renamed_from: str | None = None   # its name in mcp.json, when a driver had that name already
        self.broken: dict[str, str] = {}   # the System's broken-driver list, given by McpHub.load

    def tools(self) -> list[dict[str, Any]]:
        """The server's tools: from the cache, else by starting it (which may raise McpError)."""
        tools = self.cache.get(self.spec)
        if tools is not None:
            self.cached = True
            return tools
        tools = [tool_record(t) for t in self.connection.start()]
        self.cache.put(self.spec, tools)
        return tools

    @hookimpl
    def register_syscalls(self, register) -> None:
        for record in self.tools():
            try:
                # output "*": the user sees the tool's result, as a bundled driver's output; places:
                # the host folders it was given, so that a request about them comes here
                register(self._caller(record["name"]), name=syscall_name(self.spec.name, record["name"]),
                         description=_describe(record),
                         parameters=record.get("inputSchema") or {"type": "object", "properties": {}},
                         capabilities=capabilities(record.get("annotations")), timeout=self._watchdog_timeout(),
                         output="*", places=places_in(self.spec.args))
            except SyscallError as error:  # one tool with a bad schema: the server's other tools still work
                log.warning("MCP server %s: tool %s left out: %s", self.spec.name, record.get("name"), error)
                self.skipped[record["name"]] = str(error)

    def _watchdog_timeout(self) -> float | None:
        """The kernel's watchdog is the backstop: a first call may also have to start the server."""
        return None if self.call_timeout is None else self.call_timeout + self.spec.startup_timeout

    def _caller(self, tool: str):
        def call_tool(ctx=None, **arguments: Any) -> Any:
            cancel = ctx.cancel if ctx is not None else None
            fresh = not self.connection.running
            try:
                result = self.connection.call_tool(tool, arguments, timeout=self.call_timeout, cancel=cancel)
            except McpError:
                self._mark()
                raise
            if fresh:  # it just started: keep its current tool list for the next run of llmos
                self.cache.put(self.spec, [tool_record(t) for t in self.connection.tools])
            self._mark()
            return to_text(result)
        return call_tool

    def _mark(self) -> None:
        """A server that went away shows as broken until a call starts it again."""
        if self.connection.error and not self.connection.running:
            self.broken[self.spec.name] = self.connection.error
        else:
            self.broken.pop(self.spec.name, None)

    @hookimpl
    def driver_status(self, system) -> DriverStatus:
        how = f"mcp {self.spec.describe()}"
        missing = self.spec.command and shutil.which(self.spec.command) is None and not os.path.isfile(self.spec.command)
        if missing and not self.connection.running:
            return DriverStatus(self.spec.name, False, detail=f"{how}: command {self.spec.command!r} not found "
                                                              "(install it, or fix mcp.json)")
        state = "running" if self.connection.running else \
            f"not started{'; tools cached' if self.cached else ''}"
        if self.skipped:
            state += f"; left out: {', '.join(f'{n} ({e})' for n, e in self.skipped.items())}"
        if self.renamed_from:
            state += (f"; {self.renamed_from!r} in mcp.json, named {self.spec.name} here: a driver is called "
                      f"{self.renamed_from} already")
        return DriverStatus(self.spec.name, True, backend=f"{how} ({state})")


# --- all of them ----------------------------------------------------------------------------------

class McpHub:
    """The MCP servers of one System: their drivers, the event loop they share, shutdown."""

    def __init__(self, config) -> None:
        self.config = config
        self.home = Path(config.home)
        self.loop = EventLoop()
        self.cache = ToolCache(self.home)
        self.drivers: dict[str, ServerDriver] = {}

    def load(self, loader) -> None:
        """Register a plugin per server of mcp.json with the plugin loader (before it registers
        syscalls). A wrong file or entry, or a name another driver has, is a broken driver."""
        try:
            specs, errors = mcp_config.load(self.home)
        except LlmosError as error:
            loader.broken["mcp.json"] = str(error)
            return
        for name, error in errors.items():
            loader.broken[name] = error
        in_file = {spec.name for spec in specs}
        for spec in specs:
            taken = lambda name: name in loader.loaded or loader.pm.get_plugin(name) is not None  # noqa: E731
            renamed_from = None
            if taken(spec.name):   # a copied Claude Desktop file names its server "memory": namespace it
                renamed_from = spec.name
                spec = dataclasses.replace(spec, name=free_name(spec.name, lambda n: taken(n) or n in in_file))
                log.warning("MCP server %r: a driver of that name is loaded already; its tools are %s.TOOL",
                            renamed_from, spec.name)
            connection = Connection(spec, self.loop, self.home / "mcp-logs")
            driver = ServerDriver(spec, connection, self.cache, default_timeout=self.config.syscall_timeout)
            driver.renamed_from = renamed_from
            driver.broken = loader.broken
            self.drivers[spec.name] = driver
            loader.load_plugin(spec.name, driver)

    def close(self) -> None:
        for driver in self.drivers.values():
            driver.connection.close()
        self.loop.close()


def free_name(name: str, taken) -> str:
    """The name an MCP server's driver gets when a driver has ``name`` already: ``memory`` ->
    ``memory_mcp`` (``memory_mcp2``... if that is taken too)."""
    for candidate in (f"{name}_mcp", *(f"{name}_mcp{n}" for n in range(2, 1000))):
        if not taken(candidate):
            return candidate
    raise LlmosError(f"MCP server {name!r}: no free name for it")


def bundled_driver_names() -> set[str]:
    """The names of the drivers that ship with llmos (``memory``, ``files``...)."""
    from llmos_shell.plugins import DEFAULT_PLUGINS

    return {name.rsplit(".", 1)[-1] for name in DEFAULT_PLUGINS}


def probe(home: Path, spec: ServerSpec) -> list[dict[str, Any]]:
    """Start one server, list its tools, cache them and stop it (``llmos mcp add``)."""
    loop = EventLoop()
    connection = Connection(spec, loop, Path(home) / "mcp-logs")
    try:
        tools = [tool_record(t) for t in connection.start()]
    finally:
        connection.close()
        loop.close()
    ToolCache(home).put(spec, tools)
    return tools


__all__ = ["McpHub", "ServerDriver", "capabilities", "syscall_name", "to_text", "probe"]
