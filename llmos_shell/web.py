"""What every HTTP face of llmos checks before a request reaches it (``llmos serve``, ``llmos mcp serve --http``).

A web page the user happens to visit can send requests to 127.0.0.1; llmos must not
do what it asks. :class:`Guard` is ASGI middleware that refuses, each with a 4xx
JSON error in the face's own shape:

* a ``Host`` that is not a name the server listens on (421): DNS rebinding, where
  ``evil.example`` resolves to 127.0.0.1 and the page reads the answers;
* an ``Origin`` that is neither the server's own nor one the operator allowed
  (``--allow-origin``) (403). Requests without an ``Origin`` (programs, not
  browsers) pass. Allowed origins get CORS headers and their preflight answered
  (Starlette's :class:`~starlette.middleware.cors.CORSMiddleware`);
* a ``POST`` whose body is not ``application/json`` (415): ``text/plain`` is what a
  page sends cross-site without a preflight;
* a body larger than ``max_body`` bytes (413), found before it is all read.

:func:`parse_json` then reads a body as JSON and refuses what ``json.loads`` lets
through: ``NaN``/``Infinity`` (and numbers too large for a float) and nesting
deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

DEFAULT_MAX_BODY = 4 * 1024 * 1024   # bytes
MAX_DEPTH = 64                        # nesting of objects and arrays in a request body
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("", "0.0.0.0", "::")

#: (status, message, code) -> (JSON body) of the face's own error shape
ErrorBody = Callable[[int, str, str], dict[str, Any]]


class BadBody(ValueError):
    """A request body that is not acceptable JSON (the message says why, in one line)."""


def openai_error(status: int, message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def jsonrpc_error(status: int, message: str, code: str) -> dict[str, Any]:
    """The MCP face's shape: a JSON-RPC error with no id (-32600, invalid request)."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message, "data": {"http": code}}}


def allowed_hosts(host: str) -> tuple[set[str], bool]:
    """The ``Host`` names a server listening on ``host`` answers to, and whether any IP literal is fine
    too (a server on every interface is reached by any of the machine's addresses)."""
    host = host.strip("[]").lower()
    names = {host}
    if host in WILDCARDS:
        return {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}, True
    if host in LOOPBACK_NAMES or _is_loopback(host):
        names |= {"localhost", "127.0.0.1"} if ":" not in host else {"localhost", "::1"}
        if host == "localhost":
            names.add("::1")
    else:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names, False


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None]:
    """``"[::1]:8000"`` -> ``("::1", 8000)``; ``"localhost"`` -> ``("localhost", None)``."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    if port and not port.isdigit():
        raise ValueError(value)
    return name.rstrip("."), int(port) if port else None


@dataclass
class Policy:
    """Who may talk to one server: the names it listens on, its port, the origins the operator allowed."""

    hosts: set[str]
    port: int | None                      # None: any (the server picks its port)
    any_ip: bool = False
    origins: tuple[str, ...] = ()
    max_body: int = DEFAULT_MAX_BODY

    @classmethod
    def listening_on(cls, host: str, port: int | None, *, origins: Iterable[str] = (),
                     max_body: int = DEFAULT_MAX_BODY) -> "Policy":
        names, any_ip = allowed_hosts(host)
        return cls(names, port or None, any_ip, tuple(o.rstrip("/").lower() for o in origins), max_body)

    def host_ok(self, value: str | None) -> bool:
        if not value:
            return False
        try:
            name, port = _split_host(value)
        except ValueError:
            return False
        if self.port is not None and (port or 80) != self.port:
            return False
        if name in self.hosts:
            return True
        if self.any_ip:
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False

    def origin_ok(self, origin: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins or "*" in self.origins:
            return True
        scheme, sep, rest = origin.partition("://")   # the server's own pages (same origin)
        return bool(sep) and scheme == "http" and self.host_ok(rest)


class Guard:
    """ASGI middleware applying a :class:`Policy` to every HTTP request (see the module's docstring)."""

    def __init__(self, app, policy: Policy, error_body: ErrorBody = openai_error) -> None:
        from starlette.middleware.cors import CORSMiddleware

        self.policy = policy
        self.error_body = error_body
        # Allowed origins: CORS headers on answers, preflight answered; the guard refused the others.
        self.app = CORSMiddleware(app, allow_origins=[o for o in policy.origins], allow_methods=["GET", "POST"],
                                  allow_headers=["*"], max_age=600) if policy.origins else app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host")
        if not self.policy.host_ok(host):
            await self._refuse(send, 421, f"Host {host!r} is not a name this server listens on "
                                          "(a web page reaching it through DNS rebinding?)", "misdirected_request")
            return
        origin = headers.get("origin")
        if origin is not None and not self.policy.origin_ok(origin):
            await self._refuse(send, 403, f"requests from the web page origin {origin!r} are refused; the "
                                          f"server's operator can allow it with --allow-origin {origin}",
                               "origin_not_allowed")
            return
        if scope["method"] == "POST":
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                await self._refuse(send, 415, f"the body must be JSON sent as 'Content-Type: application/json' "
                                              f"(got {media or 'no content type'!r})", "unsupported_media_type")
                return
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.policy.max_body:
                await self._refuse(send, 413, self._too_large(), "request_too_large")
                return
            body = await self._read_body(receive)
            if body is None:
                await self._refuse(send, 413, self._too_large(), "request_too_large")
                return
            if body is _GONE:
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.policy.max_body:,} bytes (llmos serve --max-body-mb)"

    async def _read_body(self, receive):
        """The whole body, None past ``max_body`` (reading stops there), or _GONE if the client left."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.policy.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, send, status: int, message: str, code: str) -> None:
        payload = json.dumps(self.error_body(status, message, code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


_GONE = object()


def _replay(body: bytes, receive) -> Callable[[], Awaitable[dict]]:
    """A ``receive`` that gives the body read already, then the client's own messages (its disconnect)."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadBody(f"the number {text} is too large for JSON")
    return value


def _no_constant(name: str) -> Any:
    raise BadBody(f"{name} is not a JSON number")


def parse_json(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The body as JSON, or :class:`BadBody`: not UTF-8 JSON, a non-finite number, nested too deep."""
    try:
        value = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadBody(f"the JSON is nested more than {max_depth} deep") from None
    except BadBody:
        raise
    except (ValueError, UnicodeDecodeError) as error:
        raise BadBody(f"the request body is not valid JSON ({error})") from None
    if depth(value) > max_depth:
        raise BadBody(f"the JSON is nested more than {max_depth} deep")
    return value


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
