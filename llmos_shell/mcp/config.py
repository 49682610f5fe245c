"""``$LLMOS_HOME/mcp.json``: the MCP servers llmos loads as drivers.

The format is Claude Desktop's, so a user's existing file can be copied in::

    {"mcpServers": {
        "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
        "git":  {"command": "uvx", "args": ["mcp-server-git"], "env": {"GIT_PAGER": "cat"}},
        "docs": {"url": "http://127.0.0.1:9000/mcp", "headers": {"Authorization": "Bearer ..."}}
    }}

llmos also reads, per server, ``"timeout"`` (seconds a tool call may take; default
LLMOS_SYSCALL_TIMEOUT), ``"startup_timeout"`` (seconds to start and list tools;
default 30) and ``"cwd"``; other keys (``"disabled"``...) are kept as they are
and ``"disabled": true`` skips the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos_shell.errors import UsageError

FILE_NAME = "mcp.json"
DEFAULT_STARTUP_TIMEOUT = 30.0
# A server's name prefixes its syscalls ("time.get_current_time"): a syscall name's first part.
SERVER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class ServerSpec:
    """One entry of ``mcpServers``."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"

    def describe(self) -> str:
        """How it is reached, one line: ``stdio: mcp-server-time --local-timezone UTC``."""
        if self.url:
            return f"http: {self.url}"
        return "stdio: " + " ".join([self.command or "", *self.args]).strip()

    def fingerprint(self) -> str:
        """Changes whenever what is started changes: the cached tool list is then stale."""
        what = {"command": self.command, "args": list(self.args), "env": self.env, "cwd": self.cwd,
                "url": self.url}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def path_in(home: Path) -> Path:
    return Path(home) / FILE_NAME


def read_raw(home: Path) -> dict[str, Any]:
    """The whole file as JSON ({"mcpServers": {}} when there is none)."""
    path = path_in(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"mcpServers": {}}
    except OSError as error:
        raise UsageError(f"{path}: cannot read it ({error.strerror})") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.setdefault("mcpServers", {}), dict):
        raise UsageError(f'{path}: expected {{"mcpServers": {{"name": {{"command": ...}}}}}}')
    return data


def _strings(value: Any, what: str, where: str) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise UsageError(f"{where}: {what} must be {'a list' if what == 'args' else 'an object'} of strings")


def _seconds(entry: dict, key: str, default: float | None, where: str) -> float | None:
    value = entry.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UsageError(f"{where}: {key} must be a positive number of seconds")
    return float(value)


def parse_entry(name: str, entry: Any, where: str = FILE_NAME) -> ServerSpec:
    """One server entry, checked; a bad one raises UsageError naming it."""
    where = f"{where}: server {name!r}"
    if not SERVER_NAME.match(name):
        raise UsageError(f"{where}: a name is letters, digits and _ (it prefixes its tools' syscall names)")
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: expected an object with a command or a url")
    command, url = entry.get("command"), entry.get("url")
    if bool(command) == bool(url):
        raise UsageError(f"{where}: give either a command (stdio) or a url (Streamable HTTP)")
    if command is not None and not isinstance(command, str):
        raise UsageError(f"{where}: command must be a string")
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://", url)):
        raise UsageError(f"{where}: url must be an http:// or https:// address")
    return ServerSpec(
        name=name, command=command, url=url,
        args=_strings(entry.get("args", []), "args", where),
        env=_strings(entry.get("env", {}), "env", where),
        headers=_strings(entry.get("headers", {}), "headers", where),
        cwd=entry.get("cwd") if isinstance(entry.get("cwd"), str) else None,
        timeout=_seconds(entry, "timeout", None, where),
        startup_timeout=_seconds(entry, "startup_timeout", DEFAULT_STARTUP_TIMEOUT, where) or DEFAULT_STARTUP_TIMEOUT,
    )


def load(home: Path) -> tuple[list[ServerSpec], dict[str, str]]:
    """The enabled servers, and the entries that are wrong (name -> one-line error).

    A wrong entry does not stop the others loading: it shows as a broken driver."""
    data = read_raw(home)
    specs, errors = [], {}
    for name, entry in data["mcpServers"].items():
        if isinstance(entry, dict) and entry.get("disabled") is True:
            continue
        try:
            specs.append(parse_entry(name, entry, where=str(path_in(home))))
        except UsageError as error:
            errors[name] = str(error)
    return specs, errors


def _write(home: Path, data: dict[str, Any]) -> None:
    path = path_in(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")  # written whole, then renamed
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def add(home: Path, name: str, entry: dict[str, Any], *, replace: bool = False) -> ServerSpec:
    """Add (or with ``replace`` overwrite) one server; checked before anything is written."""
    spec = parse_entry(name, entry)
    data = read_raw(home)
    if name in data["mcpServers"] and not replace:
        raise UsageError(f"an MCP server named {name!r} is already in {path_in(home)} (--force replaces it)")
    data["mcpServers"][name] = entry
    _write(home, data)
    return spec


def remove(home: Path, name: str) -> None:
    data = read_raw(home)
    if name not in data["mcpServers"]:
        raise UsageError(f"no MCP server named {name!r} in {path_in(home)} (see `llmos mcp list`)")
    del data["mcpServers"][name]
    _write(home, data)
