"""A small real MCP server (stdio): an address book, for the tests and bench/data/os-tasks-mcp.json.

Its tools answer everyday questions that a bundled syscall could also seem to
serve ("What is Anna's email address?" reads like read_file's examples), so
routing must pick the tool that fits. The book is a JSON file (``--store``),
filled with three people when it does not exist yet.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False)
ADDS = ToolAnnotations(read_only_hint=False, destructive_hint=False)
SAMPLE = {
    "Anna Berg": {"phone": "+46 70 123 45 67", "email": "anna.berg@example.org"},
    "Luis Ortega": {"phone": "+34 612 345 678", "email": "luis@example.com"},
    "Mei Chen": {"phone": "+1 415 555 0199", "email": "mei.chen@example.net"},
}


def build(store: Path) -> MCPServer:
    server = MCPServer("contacts")

    def load() -> dict[str, dict[str, str]]:
        if not store.exists():
            store.write_text(json.dumps(SAMPLE))
        return json.loads(store.read_text())

    @server.tool(description="Look up a person's phone number and email address in the address book",
                 annotations=READ_ONLY)
    def find_contact(name: str) -> str:
        found = {who: card for who, card in load().items() if name.lower() in who.lower()}
        if not found:
            raise ValueError(f"nobody called {name!r} in the address book")
        return "\n".join(f"{who}: phone {card['phone']}, email {card['email']}" for who, card in found.items())

    @server.tool(description="List everyone in the address book", annotations=READ_ONLY)
    def list_contacts() -> str:
        return "\n".join(sorted(load()))

    @server.tool(description="Add a person with a phone number to the address book", annotations=ADDS)
    def add_contact(name: str, phone: str) -> str:
        book = load()
        book[name] = {"phone": phone, "email": ""}
        store.write_text(json.dumps(book))
        return f"added {name} ({phone})"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    build(parser.parse_args().store).run()


if __name__ == "__main__":
    main()
