"""``llmos mcp ...``: manage the MCP servers llmos uses, and serve llmos over MCP."""

from __future__ import annotations

import json
import socket

import click

from llmos_shell.errors import LlmosError, UsageError


@click.group("mcp")
def mcp_group() -> None:
    """MCP both ways: MCP servers as drivers ($LLMOS_HOME/mcp.json), and llmos as an MCP server."""


@mcp_group.command("add", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--url", help="A Streamable HTTP server instead of a command.")
@click.option("--env", "-e", "env", multiple=True, metavar="KEY=VALUE", help="Environment of the server (repeat).")
@click.option("--header", "headers", multiple=True, metavar="KEY=VALUE", help="HTTP header for --url (repeat).")
@click.option("--timeout", type=float, help="Seconds a tool call may take (default LLMOS_SYSCALL_TIMEOUT).")
@click.option("--force", is_flag=True, help="Replace a server of the same name.")
@click.option("--no-start", is_flag=True, help="Don't start it now to list its tools (it starts on first use).")
@click.pass_obj
def mcp_add(state, name: str, command: tuple[str, ...], url: str | None, env: tuple[str, ...],
            headers: tuple[str, ...], timeout: float | None, force: bool, no_start: bool) -> None:
    """Add MCP server NAME: `llmos mcp add time -- mcp-server-time --local-timezone UTC`.

    Its tools become syscalls NAME.TOOL. It is started once now to list them (the list is
    cached); afterwards it starts on the first call of one of its tools.
    """
    from llmos_shell.mcp import config
    from llmos_shell.mcp.drivers import bundled_driver_names, probe

    if bool(command) == bool(url):
        raise UsageError("give a command after -- (a stdio server) or --url (a Streamable HTTP server)")
    drivers = bundled_driver_names() | (set(state.system.plugins) - set(state.system.mcp.drivers))
    if name in drivers:   # its tools would be NAME.TOOL beside the driver NAME: one of them unusable
        raise UsageError(f"{name!r} is the name of a driver of llmos already: add it under another name, "
                         f"e.g. llmos mcp add {name}_graph -- ...")
    entry: dict = {"url": url} if url else {"command": command[0], "args": list(command[1:])}
    if env:
        entry["env"] = _pairs(env, "--env")
    if headers:
        entry["headers"] = _pairs(headers, "--header")
    if timeout is not None:
        entry["timeout"] = timeout
    spec = config.add(state.config.home, name, entry, replace=force)
    click.echo(f"{name}: added to {config.path_in(state.config.home)} ({spec.describe()})")
    if no_start:
        return
    try:
        tools = probe(state.config.home, spec)
    except LlmosError as error:
        raise LlmosError(f"{error} (it stays in mcp.json: fix it, or `llmos mcp remove {name}`)") from None
    names = ", ".join(f"{name}.{t['name']}" for t in tools)
    click.echo(f"{name}: {len(tools)} tool{'s' if len(tools) != 1 else ''}: {names}")


def _pairs(items: tuple[str, ...], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} takes KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


@mcp_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per server.")
@click.pass_obj
def mcp_list(state, as_json: bool) -> None:
    """The MCP servers of mcp.json, how they are reached, and their cached tools."""
    from llmos_shell.mcp import config
    from llmos_shell.mcp.drivers import ToolCache, bundled_driver_names

    bundled = bundled_driver_names()
    specs, errors = config.load(state.config.home)
    cache = ToolCache(state.config.home)
    rows = [{"name": s.name, "transport": s.transport, "target": s.describe().split(": ", 1)[1],
             "tools": [t["name"] for t in cache.get(s) or []], "error": None} for s in specs]
    rows += [{"name": n, "transport": None, "target": None, "tools": [], "error": e} for n, e in errors.items()]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        click.echo(f"no MCP servers in {config.path_in(state.config.home)} (llmos mcp add NAME -- COMMAND ...)")
    for row in sorted(rows, key=lambda r: r["name"]):
        if row["error"]:
            click.echo(f"{row['name']:<12} " + click.style("error", fg="red") + f" {row['error']}")
            continue
        tools = ", ".join(row["tools"]) if row["tools"] else "(tools not listed yet)"
        if row["name"] in bundled:
            tools += f"\n{'':<12} named {row['name']}_mcp: a bundled driver is called {row['name']}"
        click.echo(f"{row['name']:<12} {row['transport']:<6} {row['target']}\n{'':<12} tools: {tools}")


@mcp_group.command("remove")
@click.argument("name")
@click.pass_obj
def mcp_remove(state, name: str) -> None:
    """Remove MCP server NAME from mcp.json."""
    from llmos_shell.mcp import config
    from llmos_shell.mcp.drivers import ToolCache

    config.remove(state.config.home, name)
    ToolCache(state.config.home).forget(name)
    click.echo(f"{name}: removed")


@mcp_group.command("serve")
@click.option("--http", "port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Serve Streamable HTTP on 127.0.0.1:PORT (path /mcp) instead of stdio.")
@click.option("--approve", type=click.Choice(["auto", "never"]), default="never", show_default=True,
              help="Syscalls that cannot be undone (destructiveHint): run them, or refuse them.")
@click.option("--no-ask", is_flag=True, help="Don't offer the tool `ask` (a request run by the local model).")
@click.pass_obj
def mcp_serve(state, port: int | None, approve: str, no_ask: bool) -> None:
    """Serve llmos over MCP: the drivers' syscalls as tools, the filesystem as resources
    (llmos://files/PATH), and `ask`, the kernel with the local model, as a tool."""
    from llmos_shell.mcp.server import serve_http, serve_stdio

    if port is None:
        serve_stdio(state.system, approve=approve, ask=not no_ask)
        return
    with socket.socket() as probe_socket:  # a port in use is one line, not uvicorn's traceback
        try:
            probe_socket.bind(("127.0.0.1", port))
        except OSError as error:
            raise UsageError(f"cannot serve on 127.0.0.1:{port}: {error.strerror}") from None
    serve_http(state.system, port, approve=approve, ask=not no_ask)
