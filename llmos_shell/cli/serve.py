"""`llmos serve`: the whole OS behind the OpenAI API.

Two models are served. ``llmos`` is the operating system: each request becomes a
process whose syscalls are the OS's drivers (run here, under the approval policy)
plus any ``tools`` the client declares. The CPU's own name (``llmos serve
--model M``) is the model alone: only the client's tools, none of the OS's.
Declared tools come back as ``tool_calls`` decoded under the kernel's grammar, so
their arguments always fit their schemas. ``tool_choice`` is honoured: ``none``
hides every tool, ``required`` or a named function makes the first step a call.

Every request is a process (``llmos ps``, its messages and syscalls in the
database), and processes wait in one run queue for the one CPU worker: the model
is never asked two things at once. Requests are checked before they queue;
errors are OpenAI-style JSON bodies (400 malformed, 401 token, 404 unknown model).

Safe by default (:mod:`llmos_shell.web`): a foreign ``Host`` (DNS rebinding) is 421, a
web page's ``Origin`` 403 unless ``--allow-origin`` names it, a body that is not
``application/json`` 415, one over ``--max-body-mb`` 413; bodies nested too deep, with
``NaN``, badly shaped message parts or a parameter llmos cannot honour are 400, naming
what is wrong. ``stop`` and ``response_format`` (``json_object``, ``json_schema``: the reply
is decoded under a grammar) are honoured. A client that goes away stops its process.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import click

from llmos_shell import web
from llmos_shell.errors import LlmosError, UsageError

log = logging.getLogger("llmos.serve")

OS_MODEL = "llmos"
DEFAULT_MAX_TOKENS = 512

_PART = {"type": "object", "required": ["type", "text"],
         "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [{"type": ["string", "null"]}, {"type": "array", "items": _PART}]},
        "tool_calls": {"type": ["array", "null"], "items": {
            "type": "object", "required": ["function"],
            "properties": {"function": {"type": "object", "required": ["name"],
                                        "properties": {"name": {"type": "string"},
                                                       "arguments": {"type": ["string", "object"]}}}}}},
    },
}
_FUNCTION = {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string", "minLength": 1}, "description": {"type": "string"},
                            "parameters": {"type": "object"}}}
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "tools": {"type": ["array", "null"], "items": {
            "type": "object", "required": ["type", "function"],
            "properties": {"type": {"const": "function"}, "function": _FUNCTION}}},
        "tool_choice": {"oneOf": [
            {"enum": ["none", "auto", "required", None]},
            {"type": "object", "required": ["type", "function"],
             "properties": {"type": {"const": "function"},
                            "function": {"type": "object", "required": ["name"],
                                         "properties": {"name": {"type": "string"}}}}}]},
        "parallel_tool_calls": {"type": ["boolean", "null"]},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {"type": ["object", "null"]},
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "seed": {"type": ["integer", "null"]},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 1},
        "stop": {"anyOf": [{"type": ["string", "null"]},
                           {"type": "array", "maxItems": 4, "items": {"type": "string", "minLength": 1}}]},
        "response_format": {"oneOf": [
            {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}}},
            {"type": "object", "required": ["type", "json_schema"],
             "properties": {"type": {"const": "json_schema"},
                            "json_schema": {"type": "object", "required": ["name"],
                                            "properties": {"name": {"type": "string"},
                                                           "schema": {"type": ["object", "boolean"]},
                                                           "strict": {"type": ["boolean", "null"]}}}}}]},
        # about the caller, not the completion: accepted and kept out of the way
        "user": {"type": ["string", "null"]},
        "metadata": {"type": ["object", "null"]},
        "store": {"type": ["boolean", "null"]},
    },
}
# Parameters the official clients may send at values that change nothing here; any other value is a 400.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "top_p": (1,), "frequency_penalty": (0,), "presence_penalty": (0,), "logprobs": (False,),
    "top_logprobs": (0,), "logit_bias": ({},), "modalities": (["text"],), "service_tier": ("auto", "default"),
}


class ApiError(Exception):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Chat:
    """A checked chat request."""

    model: str
    history: list[dict[str, Any]]          # earlier messages, as the process's memory holds them
    last: dict[str, Any]                   # the message to answer: user text or tool results
    system: str = ""
    functions: list[dict[str, Any]] = field(default_factory=list)
    forced: bool = False                   # tool_choice required or a named function
    hide_tools: bool = False               # tool_choice none
    parallel: bool = True
    stream: bool = False
    include_usage: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    reply_grammar: str | None = None       # response_format json_object / json_schema, as GBNF


@dataclass
class Outcome:
    pid: int
    turn: Any                              # the kernel's TurnResult
    queue_ms: float
    run_ms: float


def _text(content: Any) -> str:
    """A message's content as text (OpenAI allows a list of parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


class Service:
    """Chat requests in, processes run by the kernel on the one CPU worker, completions out."""

    def __init__(self, system, *, approve: str = "never", max_steps: int = 8, confirm: Callable | None = None) -> None:
        self.system = system
        self.approve = approve
        self.max_steps = max_steps
        self.confirm = confirm
        self.cpu_model = system.cpu.name        # loads the model now: a bad one fails before listening
        from llmos_shell.kernel.scheduler import RunQueue

        # The program's run queue (kernel/scheduler.py): one process at a time uses the CPU, and
        # `llmos kill PID` stops a client's process.
        self.queue = RunQueue(system.fs)
        self.created = int(time.time())

    def models(self) -> list[dict[str, Any]]:
        return [{"id": name, "object": "model", "created": self.created, "owned_by": "llmos"}
                for name in (OS_MODEL, self.cpu_model)]

    # --- checking -------------------------------------------------------------------------

    def check(self, body: Any) -> Chat:
        """The request as a :class:`Chat`, or ApiError 400/404 saying what is wrong with it."""
        import jsonschema

        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        for key, value in body.items():   # a parameter llmos would silently ignore is the client's to know
            if key in REQUEST_SCHEMA["properties"] or (key in NEUTRAL and (value is None or value in NEUTRAL[key])):
                continue
            usable = f" (only {json.dumps(NEUTRAL[key][0])} is)" if key in NEUTRAL else ""
            raise ApiError(400, f"{key}: this parameter is not supported by llmos serve{usable}", param=key,
                           code="unsupported_parameter")
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(REQUEST_SCHEMA).iter_errors(body))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            raise ApiError(400, f"{where or 'body'}: {error.message[:300]}", param=where or None)
        if body["model"] not in (OS_MODEL, self.cpu_model):
            raise ApiError(404, f"The model '{body['model']}' does not exist (served: {OS_MODEL}, "
                                f"{self.cpu_model})", param="model", code="model_not_found")
        messages = body["messages"]
        system = "\n\n".join(_text(m.get("content")) for m in messages if m["role"] in ("system", "developer"))
        rest = [m for m in messages if m["role"] not in ("system", "developer")]
        if not rest or rest[-1]["role"] not in ("user", "tool"):
            raise ApiError(400, "messages: the last message must be from the user or a tool", param="messages")
        functions = [t["function"] for t in body.get("tools") or []]
        self._check_functions(functions, body["model"])
        choice = body.get("tool_choice") or "auto"
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            functions = [f for f in functions if f["name"] == name]
            if not functions:
                raise ApiError(400, f"tool_choice: no tool named {name!r} among the tools", param="tool_choice")
        if choice == "required" and not functions and body["model"] != OS_MODEL:
            raise ApiError(400, "tool_choice: 'required' needs tools", param="tool_choice")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        stop = body.get("stop") or ()
        return Chat(stop=(stop,) if isinstance(stop, str) else tuple(stop),
                    reply_grammar=self._reply_grammar(body.get("response_format")),
                    model=body["model"], history=[self._remembered(m) for m in rest[:-1]], last=rest[-1],
                    system=system, functions=functions, forced=choice == "required" or isinstance(choice, dict),
                    hide_tools=choice == "none", parallel=body.get("parallel_tool_calls") is not False,
                    stream=bool(body.get("stream")),
                    include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                    max_tokens=min(max_tokens, self.system.cpu.n_ctx // 2),
                    temperature=float(body.get("temperature") or 0.0), seed=body.get("seed"))

    def _check_functions(self, functions: list[dict[str, Any]], model: str) -> None:
        from llmos_shell.syscalls import declared_syscall

        names = set()
        for index, spec in enumerate(functions):
            where = f"tools.{index}.function"
            if spec["name"] in names:
                raise ApiError(400, f"{where}: two tools are named {spec['name']!r}", param=where)
            if model == OS_MODEL and spec["name"] in self.system.table:
                raise ApiError(400, f"{where}: {spec['name']!r} is a syscall of llmos itself; rename the tool",
                               param=where)
            names.add(spec["name"])
            try:
                declared_syscall(spec)
            except Exception as error:  # a bad schema: the client's to fix
                text = (getattr(error, "message", None) or str(error)).splitlines()[0][:200]
                raise ApiError(400, f"{where}.parameters: not a valid JSON Schema ({text})", param=where) from None

    @staticmethod
    def _reply_grammar(response_format: dict[str, Any] | None) -> str | None:
        """``response_format`` as the grammar the reply is decoded under (None: plain text)."""
        import jsonschema

        from llmos_shell.kernel.grammar import value_grammar

        kind = (response_format or {}).get("type", "text")
        if kind == "text":
            return None
        schema = {"type": "object"}
        if kind == "json_schema":
            schema = response_format["json_schema"].get("schema", {"type": "object"})
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.exceptions.SchemaError as error:
                raise ApiError(400, f"response_format.json_schema.schema: not a valid JSON Schema "
                                    f"({error.message[:200]})", param="response_format") from None
        try:
            return value_grammar(schema)
        except Exception as error:
            log.info("response_format grammar failed", exc_info=True)
            raise ApiError(400, f"response_format: this schema cannot be decoded under a grammar "
                                f"({type(error).__name__}: {str(error)[:200]})", param="response_format") from None

    @staticmethod
    def _remembered(message: dict[str, Any]) -> dict[str, Any]:
        """An earlier message as the kernel keeps it: calls in its own call format."""
        from llmos_shell.kernel.grammar import write_calls

        content = _text(message.get("content"))
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                arguments = call["function"].get("arguments") or {}
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments or "{}")
                    except json.JSONDecodeError:
                        raise ApiError(400, "messages: a tool call's arguments are not JSON", param="messages") \
                            from None
                calls.append({"name": call["function"]["name"], "arguments": arguments})
            content = (content + "\n" if content else "") + write_calls(calls)
        return {"role": message["role"], "content": content}

    # --- running ----------------------------------------------------------------------------

    def submit(self, chat: Chat, on_token: Callable[[str], None], cancel: threading.Event) -> Future:
        """Spawn the chat's process and queue it for the CPU; a Future of its :class:`Outcome`."""
        from llmos_shell.kernel.loop import Events, Kernel

        service = self

        class ServeEvents(Events):
            def token(self, text: str) -> None:
                on_token(text)

            def confirm(self, syscall, arguments) -> bool:  # --approve ask: the server's operator decides
                return bool(service.confirm and service.confirm(syscall, arguments))

        kernel = Kernel(self.system, approve=self.approve, max_steps=self.max_steps, max_tokens=chat.max_tokens,
                        events=ServeEvents(), force_call=chat.forced, stop=chat.stop,
                        reply_grammar=chat.reply_grammar)
        functions = [] if chat.hide_tools else chat.functions
        if chat.model != OS_MODEL or chat.hide_tools:
            drivers: list[str] | None = []
        else:  # the OS's drivers, and the client's tools beside them
            drivers = sorted({s.driver for s in self.system.table}) if functions else None
        process = kernel.spawn(f"api:{chat.model}", functions=functions, drivers=drivers,
                               instructions=chat.system or None)
        try:
            process.parallel_calls = chat.parallel
            for message in chat.history:
                process.memory.add(message["role"], message["content"])
            # the last message is the user's request, or the results of the calls the client ran: then
            # the model answers from them (the engine's ResultsPlanner)
            role = "user" if chat.last["role"] == "user" else "tool"
            job = self.queue.submit(process, _text(chat.last.get("content")), kernel=kernel, cancel=cancel,
                                    seed=chat.seed, temperature=chat.temperature, role=role)
        except BaseException:   # never a process left `ready` that nothing will run
            kernel.finish(process, "error")
            raise
        outcome: Future = Future()

        def done(_future) -> None:
            error = job.future.exception()
            if error is not None:
                outcome.set_exception(error)
                return
            started = job.started if job.started is not None else job.ended
            outcome.set_result(Outcome(pid=process.pid, turn=job.result, queue_ms=1000 * (started - job.submitted),
                                       run_ms=1000 * (job.ended - started)))

        job.future.add_done_callback(done)
        return outcome

    def close(self) -> None:
        self.queue.close()


# --- OpenAI response shapes -----------------------------------------------------------------

def _tool_calls(turn) -> list[dict[str, Any]]:
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": r.name, "arguments": json.dumps(r.arguments, ensure_ascii=False)}}
            for r in turn.syscalls if r.status == "declared"]


def _finish_reason(turn, max_tokens: int) -> str:
    replies = [t for t in turn.timing if t["kind"] == "reply"]
    if turn.status == "ok" and replies and replies[-1]["decode_tokens"] >= max_tokens:
        return "length"  # the reply ran into the token limit
    return {"tool_calls": "tool_calls", "max_steps": "length"}.get(turn.status, "stop")


def _usage(turn) -> dict[str, Any]:
    usage = turn.usage
    return {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]}}


def _extension(outcome: Outcome) -> dict[str, Any]:
    """What llmos adds to a completion: the process, the syscalls it ran, the timing."""
    turn = outcome.turn
    return {"pid": outcome.pid, "status": turn.status, "error": turn.error,
            "syscalls": [r.as_dict() for r in turn.syscalls if r.status != "declared"],
            "timing": {"queue_ms": round(outcome.queue_ms, 1), "total_ms": round(outcome.run_ms, 1),
                       "turns": turn.timing}}


def _failed(outcome: Outcome) -> ApiError | None:
    turn = outcome.turn
    if turn.status == "error":
        return ApiError(500, turn.error or "the request failed", kind="server_error")
    if turn.status == "interrupted":
        return ApiError(500, "the request was cancelled", kind="server_error", code="cancelled")
    if turn.status == "killed":
        return ApiError(500, "the request's process was killed (`llmos kill`)", kind="server_error", code="killed")
    return None


def _content(turn) -> str | None:
    if turn.status == "denied":
        return turn.error
    return turn.output or None if turn.status == "tool_calls" else turn.output


def completion(chat: Chat, outcome: Outcome, ident: str, created: int) -> dict[str, Any]:
    turn = outcome.turn
    message: dict[str, Any] = {"role": "assistant", "content": _content(turn)}
    calls = _tool_calls(turn)
    if calls:
        message["tool_calls"] = calls
    return {"id": ident, "object": "chat.completion", "created": created, "model": chat.model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(turn, chat.max_tokens), "logprobs": None}],
            "usage": _usage(turn), "llmos": _extension(outcome)}


def _chunk(chat: Chat, ident: str, created: int, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": chat.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


# --- HTTP -----------------------------------------------------------------------------------

def create_app(service: Service, token: str | None = None, policy: web.Policy | None = None):
    """The ASGI application: /v1/models and /v1/chat/completions, behind :class:`web.Guard`
    (``policy``: by default, a server on 127.0.0.1 with no origins allowed)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def error_response(error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    def authorise(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), token.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <token>'",
                           code="invalid_api_key")

    async def models(request: Request):
        try:
            authorise(request)
        except ApiError as error:
            return error_response(error)
        return JSONResponse({"object": "list", "data": service.models()})

    async def chat_completions(request: Request):
        try:
            authorise(request)
            try:
                body = web.parse_json(await request.body())
            except web.BadBody as error:
                raise ApiError(400, str(error)) from None
            chat = service.check(body)
        except ApiError as error:
            return error_response(error)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        if not chat.stream:
            future = service.submit(chat, lambda _piece: None, cancel)
            result = asyncio.ensure_future(asyncio.wrap_future(future))
            gone = asyncio.ensure_future(_disconnected(request))
            try:
                await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not result.done():   # the client went away: stop its process (it ends `interrupted`)
                    cancel.set()
                    return Response(status_code=499)
                outcome = result.result()
            except asyncio.CancelledError:  # the server is stopping: stop the process too
                cancel.set()
                raise
            except Exception as error:  # a bug: the log has the traceback, the client one line
                log.exception("chat completion failed")
                return error_response(ApiError(500, f"internal error: {type(error).__name__}: {error}",
                                               kind="server_error"))
            finally:
                gone.cancel()
            failed = _failed(outcome)
            return error_response(failed) if failed else JSONResponse(completion(chat, outcome, ident, created))

        pieces: asyncio.Queue = asyncio.Queue()

        def on_token(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        future = service.submit(chat, on_token, cancel)
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(pieces.put_nowait, None))

        async def events():
            try:
                yield _chunk(chat, ident, created, {"role": "assistant", "content": ""})
                while (piece := await pieces.get()) is not None:
                    yield _chunk(chat, ident, created, {"content": piece})
                try:
                    outcome = future.result()
                    failed = _failed(outcome)
                except Exception as error:
                    log.exception("chat completion failed")
                    failed = ApiError(500, f"internal error: {type(error).__name__}: {error}", kind="server_error")
                if failed:  # headers are sent: the error goes in the stream, as OpenAI's does
                    yield f"data: {json.dumps(failed.body())}\n\n"
                    return
                turn = outcome.turn
                if turn.status == "denied":
                    yield _chunk(chat, ident, created, {"content": turn.error})
                calls = _tool_calls(turn)
                if calls:
                    yield _chunk(chat, ident, created, {"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
                yield _chunk(chat, ident, created, {}, _finish_reason(turn, chat.max_tokens), llmos=_extension(outcome))
                if chat.include_usage:
                    body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": chat.model,
                            "choices": [], "usage": _usage(turn)}
                    yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()  # the client left early (or all is sent): a process still queued or running stops

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def http_error(request: Request, error: HTTPException):
        return error_response(ApiError(error.status_code, str(error.detail), code=str(error.status_code)))

    app = Starlette(routes=[Route("/v1/models", models, methods=["GET"]),
                            Route("/v1/chat/completions", chat_completions, methods=["POST"])],
                    exception_handlers={HTTPException: http_error})
    return web.Guard(app, policy or web.Policy.listening_on("127.0.0.1", None))


async def _disconnected(request) -> None:
    """Return once the client has gone (its body is read already: all that can come is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _terminal_confirm(lock: threading.Lock):
    """``--approve ask``: the operator at the server's terminal answers y/n (no terminal: no)."""
    def confirm(syscall, arguments) -> bool:
        if not sys.stdin.isatty():
            return False
        with lock:
            return click.confirm(f"a client asks for {syscall.name} "
                                 f"{json.dumps(arguments, ensure_ascii=False)}; it cannot be undone. Run it?",
                                 default=False, err=True)
    return confirm


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (another than 127.0.0.1 exposes llmos to the network: set a token).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", envvar="LLMOS_TOKEN", help="Bearer token clients must send. [env LLMOS_TOKEN]")
@click.option("--approve", type=click.Choice(["never", "ask", "auto"]), default="never", show_default=True,
              help="Irreversible syscalls of model llmos: never run, ask at this terminal, or auto.")
@click.option("--max-steps", type=click.IntRange(1, 100), default=8, show_default=True,
              help="Most CPU steps per request.")
@click.option("--allow-origin", "origins", multiple=True, metavar="ORIGIN",
              help="A web page origin (http://127.0.0.1:3000) allowed to call llmos from a browser (repeat). "
                   "Pages of any other origin are refused.")
@click.option("--max-body-mb", type=click.FloatRange(0.001, 1024), default=web.DEFAULT_MAX_BODY / 2**20,
              show_default=True, help="Largest request body, in MiB.")
@click.pass_obj
def serve_command(state, host: str, port: int, token: str | None, approve: str, max_steps: int,
                  origins: tuple[str, ...], max_body_mb: float) -> None:
    """Serve llmos over the OpenAI API: /v1/models and /v1/chat/completions (tools, streaming).

    Model `llmos` runs the OS's drivers here; the CPU's own model name chats with the client's
    tools only. Example: OPENAI_BASE_URL=http://127.0.0.1:8000/v1 with model "llmos".
    """
    import uvicorn

    if approve == "ask" and not sys.stdin.isatty():
        raise UsageError("--approve ask needs a terminal to ask at; use never or auto")
    if token is not None and not token.strip():
        raise UsageError("--token is empty: give a token clients must send, or leave the option out")
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if origin != "*" and (not sep or scheme not in ("http", "https") or not rest or "/" in rest.rstrip("/")):
            raise UsageError(f"--allow-origin {origin!r}: an origin is scheme://host[:port], "
                             "e.g. http://127.0.0.1:3000")
    try:  # before the model loads: a port in use is one line now, not a uvicorn log later
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as error:
        raise LlmosError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    service = Service(state.system, approve=approve, max_steps=max_steps,
                      confirm=_terminal_confirm(threading.Lock()))
    state.system.fs  # open the database now (migrations) rather than in the first request
    for note in getattr(state.system.cpu, "notes", []):
        click.echo(f"llmos serve: note: {note}", err=True)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo(f"llmos serve: warning: listening on {host} without a token (--token)", err=True)
    policy = web.Policy.listening_on(host, port, origins=origins, max_body=int(max_body_mb * 2**20))
    config = uvicorn.Config(create_app(service, token, policy), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    click.echo(f"llmos serve: http://{host}:{port}/v1 (models: {OS_MODEL}, {service.cpu_model}; "
               f"approve {approve}{'; token required' if token else ''}"
               f"{'; web pages allowed from ' + ', '.join(origins) if origins else ''})", err=True)
    try:
        server.run()
    finally:
        service.close()
