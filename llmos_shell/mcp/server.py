"""``llmos mcp serve``: llmos as an MCP server, over stdio or Streamable HTTP on 127.0.0.1.

It offers:

* every syscall of the table as a tool, its parameters as the input schema, an
  irreversible one annotated ``destructiveHint``. A call goes through
  :meth:`System.call`, the one gate every syscall takes (llmos_shell.gate): arguments validated, the
  approval policy (``--approve``, default never) applied, the time-out kept, the
  call written to the audit log (``llmos log``). A refused or failed call is a
  tool result with ``isError``, so the client's model reads why;
* the SQLite filesystem as resources ``llmos://files/<path>`` (a template, and a
  listing of the files);
* the kernel as a tool ``ask``: a request run through the local model, which may
  call the syscalls itself (under the same approval policy).

A driver's progress reports (``ctx.progress``, see hookspecs) go to the client as
``notifications/progress`` when its ``tools/call`` carried a ``progressToken``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from typing import Any
from urllib.parse import quote, unquote

from llmos_shell import __version__, gate
from llmos_shell.errors import Denied, LlmosError

log = logging.getLogger("llmos.mcp.server")

URI_PREFIX = "llmos://files"
# what a refused destructive call tells the client's user (mcp serve has no --approve ask: no terminal)
DENIAL_ADVICE = "the operator of `llmos mcp serve` can start it with --approve auto to let it run"
PAGE = 200   # resources per page of resources/list
ASK = "ask"


def file_uri(path: str) -> str:
    return URI_PREFIX + quote(path)


def uri_path(uri: str) -> str | None:
    """``llmos://files/notes/a.txt`` -> ``/notes/a.txt``; None for a URI that is not a file's."""
    uri = str(uri)
    if not uri.startswith(URI_PREFIX):
        return None
    path = unquote(uri[len(URI_PREFIX):]) or "/"
    return path if path.startswith("/") else None


def annotations(syscall) -> dict[str, Any]:
    """MCP hints of a syscall (the reverse of the client's mapping)."""
    changes = syscall.capabilities & {"writes_fs", "irreversible", "audio_out"}
    read_only = "read_only" in syscall.capabilities or not changes
    return {"read_only_hint": read_only, "destructive_hint": syscall.irreversible,
            "open_world_hint": False}


def result_content(result: Any):
    """A syscall's result as MCP content, plus structured content for an object."""
    from mcp.types import TextContent

    from llmos_shell.kernel.loop import result_text

    if isinstance(result, dict):
        return [TextContent(text=json.dumps(result, ensure_ascii=False, default=str))], result
    if isinstance(result, list):
        return [TextContent(text=json.dumps(result, ensure_ascii=False, default=str))], {"result": result}
    return [TextContent(text=result_text(result))], None


class LlmosMcp:
    """The MCP server of one System."""

    def __init__(self, system, *, approve: str = "never", ask: bool = True) -> None:
        self.system = system
        self.approve = approve
        self.ask = ask and system.cpu_status()[0] and ASK not in system.table
        self._queue = None                  # the run queue of ``ask`` requests, made on the first
        self._queue_lock = threading.Lock()
        if self.ask:  # load the model now, as the shell does: clients time out a first ``ask`` otherwise
            threading.Thread(target=self._warm_up, name="llmos-mcp-warm-up", daemon=True).start()

    @property
    def queue(self):
        """This server's run queue (kernel/scheduler.py), made by the first ``ask``."""
        from llmos_shell.kernel.scheduler import RunQueue

        with self._queue_lock:
            if self._queue is None:
                self._queue = RunQueue(self.system.fs)
            return self._queue

    def close(self) -> None:
        """Stop the ``ask`` requests still queued or running."""
        if self._queue is not None:
            self._queue.close()

    def _warm_up(self) -> None:
        try:
            self.system.cpu
        except LlmosError as error:
            log.warning("the model did not load: %s (ask will say so)", error)

    # --- tools ------------------------------------------------------------------------------

    def tools(self) -> list[Any]:
        from mcp.types import Tool, ToolAnnotations

        tools = [Tool(name=s.name, description=s.description, input_schema=s.parameters,
                      annotations=ToolAnnotations(**annotations(s)))
                 for s in self.system.table if not s.declared]
        if self.ask:
            tools.append(Tool(
                name=ASK, title="Ask llmos",
                description="Run a request through llmos's local model, which answers it and may call llmos's "
                            "drivers (translate, OCR, files...) on the way. Returns the reply.",
                input_schema={"type": "object", "properties": {
                    "request": {"type": "string", "description": "What to ask, as a user would type it."}},
                    "required": ["request"], "additionalProperties": False},
                annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)))
        return tools

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event, progress=None) -> Any:
        """Run one tool (blocking): the syscall's result, or raise (Denied, LlmosError...).
        ``progress(done, total, message)`` gets the driver's progress reports."""
        if name == ASK and self.ask:
            return self._ask(arguments, cancel, progress)
        return self.system.call(name, arguments, approve=self.approve, cancel=cancel, advice=DENIAL_ADVICE,
                                progress=progress)

    def _ask(self, arguments: dict[str, Any], cancel: threading.Event, progress=None) -> dict[str, Any]:
        from llmos_shell.errors import UsageError
        from llmos_shell.kernel.loop import Events, Kernel

        class Reports(Events):   # the syscalls' progress reports go on to the client; the rest is silent
            def progress(self, name: str, done: float, total: float | None, message: str | None) -> None:
                if progress is not None:
                    progress(done, total, f"{name}: {message}" if message else name)

        request = arguments.get("request")
        if not isinstance(request, str) or not request.strip():
            raise UsageError("ask: 'request' must be a non-empty string")
        kernel = Kernel(self.system, approve=self.approve)
        kernel.advice = DENIAL_ADVICE
        process = kernel.spawn("mcp ask")
        # through the run queue, as every request: one at a time on the CPU, `running` in `llmos ps`,
        # and stopped by `llmos kill PID` (the queue watches the process table)
        turn = self.queue.submit(process, request, kernel=kernel, cancel=cancel, events=Reports()).wait()
        if turn.status not in ("ok",):
            raise (Denied if turn.status == "denied" else LlmosError)(turn.error or turn.status)
        return {"reply": turn.output, "pid": process.pid,
                "syscalls": [{"name": r.name, "status": r.status} for r in turn.syscalls]}

    # --- the SDK's handlers -----------------------------------------------------------------

    def build(self):
        """The SDK's low-level Server, with this object's handlers (schemas are given as they are)."""
        import anyio
        import anyio.from_thread
        import anyio.lowlevel
        from mcp.server import Server
        from mcp.shared.exceptions import MCPError
        from mcp.types import (INVALID_PARAMS, BlobResourceContents, CallToolResult, ListResourcesResult,
                               ListResourceTemplatesResult, ListToolsResult, ReadResourceResult, Resource,
                               ResourceTemplate, TextContent, TextResourceContents)

        async def list_tools(ctx, params) -> ListToolsResult:
            return ListToolsResult(tools=self.tools())

        async def call_tool(ctx, params) -> CallToolResult:
            name, arguments = params.name, params.arguments or {}
            if name not in self.system.table and not (name == ASK and self.ask):
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
            cancel = threading.Event()
            loop = anyio.lowlevel.current_token()

            def progress(done: float, total: float | None, message: str | None) -> None:
                # on the syscall's thread (the watchdog's, not anyio's): hand the report to the event loop;
                # the SDK sends nothing unless the client's request carried a progressToken
                anyio.from_thread.run(ctx.session.report_progress, done, total, message, token=loop)

            try:
                result = await anyio.to_thread.run_sync(self.call, name, arguments, cancel, progress,
                                                        abandon_on_cancel=True)
            except anyio.get_cancelled_exc_class():
                cancel.set()   # the client cancelled: stop the syscall too
                raise
            except Exception as error:  # the client's model reads why, as with any tool
                if not isinstance(error, LlmosError):
                    log.exception("tool %s failed", name)
                return CallToolResult(content=[TextContent(text=gate.one_line(error))], is_error=True)
            content, structured = result_content(result)
            return CallToolResult(content=content, structured_content=structured)

        async def list_resources(ctx, params) -> ListResourcesResult:
            start = int(params.cursor) if params is not None and (params.cursor or "").isdigit() else 0
            files = await anyio.to_thread.run_sync(self._files)
            page = files[start:start + PAGE]
            return ListResourcesResult(
                resources=[Resource(uri=file_uri(f["path"]), name=f["path"], mime_type=f.get("mime") or None,
                                    size=f.get("size")) for f in page],
                next_cursor=str(start + PAGE) if start + PAGE < len(files) else None)

        async def list_templates(ctx, params) -> ListResourceTemplatesResult:
            return ListResourceTemplatesResult(resource_templates=[ResourceTemplate(
                uri_template=URI_PREFIX + "/{+path}", name="file",
                description="A file or folder of llmos's SQLite filesystem, by its path")])

        async def read_resource(ctx, params) -> ReadResourceResult:
            uri = str(params.uri)
            path = uri_path(uri)
            if path is None:
                raise MCPError(code=INVALID_PARAMS, message=f"not an llmos file URI: {uri} "
                                                            f"(expected {URI_PREFIX}/PATH)", data={"uri": uri})
            try:
                info, data = await anyio.to_thread.run_sync(self._read, path)
            except LlmosError as error:
                raise MCPError(code=INVALID_PARAMS, message=str(error), data={"uri": uri}) from None
            mime = info.get("mime") or "application/octet-stream"
            if info.get("text") or isinstance(data, str):
                text = data if isinstance(data, str) else data.decode("utf-8")
                return ReadResourceResult(contents=[TextResourceContents(uri=uri, mime_type=mime, text=text)])
            return ReadResourceResult(contents=[BlobResourceContents(
                uri=uri, mime_type=mime, blob=base64.b64encode(data).decode())])

        return Server("llmos", version=__version__,
                      instructions="llmos: a local LLM operating system. Its drivers are tools; its SQLite "
                                   f"filesystem is resources {URI_PREFIX}/PATH.",
                      on_list_tools=list_tools, on_call_tool=call_tool, on_list_resources=list_resources,
                      on_list_resource_templates=list_templates, on_read_resource=read_resource)

    def _files(self) -> list[dict[str, Any]]:
        return [f for f in self.system.fs.walk("/") if f["kind"] == "file"]

    def _read(self, path: str) -> tuple[dict[str, Any], Any]:
        fs = self.system.fs
        info = fs.stat(path)
        if info["kind"] == "dir":   # a folder reads as its listing, one entry a line
            listing = "\n".join(e["name"] + ("/" if e["kind"] == "dir" else "") for e in fs.ls(path))
            return {**info, "mime": "text/plain", "text": True}, listing
        return info, fs.read(path)


def parse_failure(error: Exception):
    """The JSON-RPC error answering a line that is not JSON (-32700) or not a JSON-RPC message (-32600)."""
    from mcp.shared.message import SessionMessage
    from mcp.types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError

    kinds = {e.get("type") for e in getattr(error, "errors", lambda: [])()}
    code, what = (PARSE_ERROR, "Parse error") if "json_invalid" in kinds else (INVALID_REQUEST, "Invalid request")
    detail = " ".join(str(error).split())[:200]
    return SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=f"{what}: {detail}")))


def serve_stdio(system, *, approve: str = "never", ask: bool = True) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    served = LlmosMcp(system, approve=approve, ask=ask)
    server = served.build()

    async def main() -> None:
        # the SDK points fd 1 at stderr while it serves: a driver's stray print cannot corrupt the wire
        async with stdio_server() as (read_stream, write_stream):
            # The SDK's stdio transport drops a line it cannot parse; JSON-RPC wants an answer (id null).
            to_server, from_client = anyio.create_memory_object_stream(0)

            async def answer_bad_lines() -> None:
                async with to_server:
                    async for message in read_stream:
                        if isinstance(message, Exception):
                            await write_stream.send(parse_failure(message))
                        else:
                            await to_server.send(message)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(answer_bad_lines)
                await server.run(from_client, write_stream, server.create_initialization_options())
                tasks.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        served.close()


def serve_http(system, port: int, *, approve: str = "never", ask: bool = True, host: str = "127.0.0.1") -> None:
    import click
    import uvicorn

    from llmos_shell import web

    served = LlmosMcp(system, approve=approve, ask=ask)
    app = served.build().streamable_http_app(host=host)
    # the checks llmos serve makes (foreign Host or Origin, not JSON, too large), before the SDK's own
    app = web.Guard(app, web.Policy.listening_on(host, port), error_body=web.jsonrpc_error)
    click.echo(f"llmos: MCP server on http://{host}:{port}/mcp (approve: {approve}); Ctrl-C stops it", err=True)
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
    finally:
        served.close()
