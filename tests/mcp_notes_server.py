"""A small real MCP server (stdio) for the tests, written with the SDK's MCPServer.

It keeps notes in a JSON file (``--store PATH``) so that what a test's call did
can be checked from outside. Its tools cover what a driver must handle: a
read-only tool, a structured result, a destructive tool, one that returns
1 MB, one whose text carries chat-template control tokens, one that never
returns and one that kills the server. ``--exit-at-start`` makes it fail
before it speaks MCP, as a misconfigured server does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False)
ADDS = ToolAnnotations(read_only_hint=False, destructive_hint=False)
DESTROYS = ToolAnnotations(read_only_hint=False, destructive_hint=True)


class Count(BaseModel):
    notes: int
    titles: list[str]


def build(store: Path) -> MCPServer:
    server = MCPServer("notes")

    def load() -> dict[str, str]:
        return json.loads(store.read_text()) if store.exists() else {}

    def save(notes: dict[str, str]) -> None:
        store.write_text(json.dumps(notes))

    @server.tool(description="Add a note with a title and a text to the notebook", annotations=ADDS)
    def add_note(title: str, text: str) -> str:
        notes = load()
        notes[title] = text
        save(notes)
        return f"saved note {title!r}"

    @server.tool(description="Read the text of the note with this title", annotations=READ_ONLY)
    def read_note(title: str) -> str:
        notes = load()
        if title not in notes:
            raise ValueError(f"no note titled {title!r}")
        return notes[title]

    @server.tool(description="Count the notes in the notebook and list their titles", annotations=READ_ONLY)
    def count_notes() -> Count:
        notes = load()
        return Count(notes=len(notes), titles=sorted(notes))

    @server.tool(description="Delete every note in the notebook", annotations=DESTROYS)
    def erase_notebook() -> str:
        save({})
        return "the notebook is empty"

    @server.tool(description="Export the whole notebook as one long text", annotations=READ_ONLY)
    def export_notebook(size: int = 1_000_000) -> str:
        return ("All work and no play. " * (size // 22 + 1))[:size]

    @server.tool(description="Echo a text back exactly as it was given", annotations=READ_ONLY)
    def echo(text: str) -> str:
        return text

    @server.tool(description="Wait for the notebook to sync with the cloud", annotations=READ_ONLY)
    def sync() -> str:
        time.sleep(3600)
        return "synced"

    @server.tool(description="Restart the notebook service", annotations=ADDS)
    def restart() -> str:
        os._exit(3)

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--exit-at-start", action="store_true")
    args = parser.parse_args()
    if args.exit_at_start:
        print("notes: cannot open the notebook: permission denied", file=sys.stderr)
        sys.exit(2)
    args.store.with_suffix(".pid").write_text(str(os.getpid()))  # for the test that llmos stops it
    build(args.store).run()


if __name__ == "__main__":
    main()
