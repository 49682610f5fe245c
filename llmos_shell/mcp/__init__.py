"""MCP both ways: any MCP server is a driver of llmos, and llmos is an MCP server.

* :mod:`~llmos_shell.mcp.config` — ``$LLMOS_HOME/mcp.json`` in Claude Desktop's
  ``mcpServers`` format (plus ``url`` for Streamable HTTP servers).
* :mod:`~llmos_shell.mcp.client` — one connection per server, run on a shared
  asyncio loop in a thread of its own, called from syscalls synchronously.
* :mod:`~llmos_shell.mcp.drivers` — each server a driver, each tool a syscall
  ``server.tool``, loaded with the other plugins.
* :mod:`~llmos_shell.mcp.server` — ``llmos mcp serve``: the syscall table as
  tools, the SQLite filesystem as resources, the kernel as a tool ``ask``.

This package is ``llmos_shell.mcp``; the SDK is the top-level ``mcp``: every
import here is absolute, so the two never meet.
"""
