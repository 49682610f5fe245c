"""Connections to MCP servers, called synchronously from syscalls.

The SDK is asynchronous; llmos's syscalls run in the watchdog's worker threads.
One asyncio loop in a daemon thread of its own (:class:`EventLoop`) serves every
connection of this program. A :class:`Connection` is one server: started on the
first call (:meth:`Connection.start`), its session lives in one task from start
to close (the SDK's transports must be entered and left by the same task), and
calls are submitted to the loop from any thread and waited on with the caller's
cancel event, so a time-out or Ctrl-C cancels the MCP request (the SDK then
tells the server) instead of leaving it behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from llmos_shell import __version__
from llmos_shell.errors import Cancelled, LlmosError
from llmos_shell.mcp.config import ServerSpec
from llmos_shell.watchdog import POLL, SyscallTimeout, seconds

log = logging.getLogger("llmos.mcp")

T = TypeVar("T")


class McpError(LlmosError):
    """An MCP server that cannot be started or reached, or a tool that reports an error."""


class EventLoop:
    """One asyncio loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="llmos-mcp", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(self, make: Callable[[], Awaitable[T]], *, timeout: float | None, what: str,
            cancel: threading.Event | None = None) -> T:
        """Run ``make()`` on the loop and wait for it: its result, or SyscallTimeout after
        ``timeout`` seconds, or Cancelled once ``cancel`` is set (the coroutine is cancelled either way)."""
        future = asyncio.run_coroutine_threadsafe(_call(make), self._ensure())
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                wait = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
                try:
                    return future.result(wait)
                except concurrent.futures.TimeoutError:
                    pass
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                if deadline is not None and time.monotonic() >= deadline:
                    raise SyscallTimeout(f"{what} timed out after {seconds(timeout)}")
        finally:
            future.cancel()  # a no-op once it finished

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def one_line(error: BaseException) -> str:
    """The message of an error the SDK raises (often an exception group from a task group)."""
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED

    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, MCPError) and error.code == CONNECTION_CLOSED:
        return "the server closed the connection (it exited)"
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, (LlmosError, OSError)) else f"{type(error).__name__}: {text}"


class Connection:
    """One MCP server: started on demand, closed with llmos.

    ``error`` holds why the last start failed or why a running server went away
    (None while it works or before it was started)."""

    def __init__(self, spec: ServerSpec, loop: EventLoop, log_dir: Path) -> None:
        self.spec = spec
        self.loop = loop
        self.log_path = Path(log_dir) / f"{spec.name}.log"
        self.error: str | None = None
        self.tools: list[Any] = []   # as listed by the last start
        self._client: Any = None
        self._closing: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._log_offset = 0
        self._errlog: Any = None
        self._start_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._client is not None

    # --- starting and stopping --------------------------------------------------------------

    def start(self, cancel: threading.Event | None = None) -> list[Any]:
        """Start the server if it is not running; return its tools (``mcp.types.Tool``)."""
        with self._start_lock:
            if self.running:
                return self.loop.run(self._list_tools, timeout=self.spec.startup_timeout,
                                     what=f"{self.spec.name}: listing tools", cancel=cancel)
            try:
                tools = self.loop.run(self._open, timeout=self.spec.startup_timeout,
                                      what=f"MCP server {self.spec.name}: starting", cancel=cancel)
            except Cancelled:
                raise
            except BaseException as error:
                self.error = self._with_stderr(one_line(error))
                self.loop.run(self._abandon, timeout=10, what=f"{self.spec.name}: stopping")
                log.warning("MCP server %s failed to start: %s", self.spec.name, self.error)
                raise McpError(f"MCP server {self.spec.name} failed to start: {self.error}") from None
            self.error = None
            self.tools = tools
            return tools

    def _transport(self) -> Any:
        if self.spec.url:
            from mcp.client.streamable_http import streamable_http_client

            if not self.spec.headers:
                return self.spec.url
            import httpx2

            return streamable_http_client(self.spec.url, http_client=httpx2.AsyncClient(headers=self.spec.headers))
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        errlog = self._errlog = open(self.log_path, "a", encoding="utf-8")  # its stderr, kept for its errors
        self._log_offset = errlog.tell()
        params = StdioServerParameters(command=self.spec.command, args=list(self.spec.args),
                                       env=self.spec.env or None, cwd=self.spec.cwd)
        return stdio_client(params, errlog=errlog)

    async def _open(self) -> list[Any]:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future = loop.create_future()
        self._closing = asyncio.Event()
        self._task = loop.create_task(self._session(ready))
        try:
            return await ready
        except asyncio.CancelledError:
            self._task.cancel()
            raise

    async def _session(self, ready: asyncio.Future) -> None:
        """The server's whole session, in one task: enter, list the tools, wait for close, leave."""
        from mcp import Client
        from mcp.types import Implementation

        try:
            async with Client(self._transport(), client_info=Implementation(name="llmos", version=__version__)) as client:
                tools = await self._list_all(client)
                if ready.done():   # the start was given up meanwhile (its time-out)
                    return
                self._client = client
                ready.set_result(tools)
                await self._closing.wait()
        except BaseException as error:  # noqa: B902 - handed to the starter, or kept as why it went away
            if not ready.done():
                ready.set_exception(error if isinstance(error, Exception) else McpError(one_line(error)))
            elif not isinstance(error, asyncio.CancelledError):
                self.error = self._with_stderr(one_line(error))
                log.warning("MCP server %s went away: %s", self.spec.name, self.error)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self._client = None
            if self._errlog is not None:
                self._errlog.close()
                self._errlog = None

    async def _list_all(self, client: Any) -> list[Any]:
        tools, cursor = [], None
        for _ in range(100):  # a server whose pages never end cannot hang the start
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _list_tools(self) -> list[Any]:
        return await self._list_all(self._client)

    async def _abandon(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=8)

    async def _stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            # the SDK closes stdin, waits, then terminates the server's process tree
            done, _ = await asyncio.wait({task}, timeout=8)
            if not done:
                task.cancel()

    def close(self) -> None:
        if self._task is None:
            return
        try:
            self.loop.run(self._stop, timeout=10, what=f"{self.spec.name}: stopping")
        except (LlmosError, RuntimeError):
            log.warning("MCP server %s did not stop cleanly", self.spec.name, exc_info=True)
        self._client = None

    def _with_stderr(self, message: str) -> str:
        """The error, with the last line the server wrote to stderr in this run (often the reason)."""
        if self.spec.url:
            return message
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as stderr:
                stderr.seek(self._log_offset)
                lines = [line.strip() for line in stderr.read().splitlines() if line.strip()]
        except OSError:
            return message
        return f"{message} (its stderr: {lines[-1][:300]})" if lines else message

    # --- calls ------------------------------------------------------------------------------

    def call_tool(self, tool: str, arguments: dict[str, Any], *, timeout: float | None,
                  cancel: threading.Event | None = None) -> Any:
        """One ``tools/call``: the SDK's ``CallToolResult``. Starts the server if needed."""
        if not self.running:
            self.start(cancel=cancel)

        async def call() -> Any:
            client = self._client
            if client is None:
                raise McpError(f"MCP server {self.spec.name} is not running: {self.error or 'it stopped'}")
            return await client.call_tool(tool, arguments)

        try:
            return self.loop.run(call, timeout=timeout, what=f"{self.spec.name}.{tool}", cancel=cancel)
        except (Cancelled, SyscallTimeout, McpError):
            raise
        except Exception as error:
            from mcp.shared.exceptions import MCPError
            from mcp.types import CONNECTION_CLOSED

            message = one_line(error)
            if (isinstance(error, MCPError) and error.code == CONNECTION_CLOSED) or not self._alive():
                # the server exited (or crashed): end its session now; the next call starts it again
                self.error = self._with_stderr(message)
                self.close()
                raise McpError(f"MCP server {self.spec.name} went away: {self.error}") from None
            raise McpError(f"{self.spec.name}.{tool}: {message}") from None

    def _alive(self) -> bool:
        task = self._task
        return task is not None and not task.done() and self._client is not None
