#!/usr/bin/env python3
"""Start an MCP server on host files made for one eval case (bench/data/os-tasks-mcp.json).

    mcp_fixture.py [--home DIR] [--file PATH=TEXT]... -- COMMAND [ARGS...]

The os_tasks runner only writes mcp.json; the host folders a server is given
must exist before it starts. This makes them, then runs the server in its
place (same stdin/stdout, so it speaks MCP to llmos directly). MCP servers
inherit only a few environment variables (PATH, HOME...), not PYTHONPATH, so
the cases start it by name: run the eval with this folder on PATH
(``PATH=$PWD/bench:$PATH``).

* ``--home DIR``: the server's ``$HOME`` (made fresh, relative to the current
  directory, i.e. the case's temporary root), so "~/data" in a request is a
  folder of this case and never the real home;
* ``--file PATH=TEXT``: a file to write first (``~`` is that home, a relative
  path the current directory; an absolute path must lie in /tmp/llmos-mcp-eval,
  which is emptied of an earlier run's files first; a PATH ending in / is a
  folder; ``\\n`` in TEXT is a newline);
* in COMMAND and ARGS, ``~`` is that home and ``{repo}`` this repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where a case's absolute host paths live (requests name them as they are): emptied per case.
EVAL_ROOT = Path("/tmp/llmos-mcp-eval")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        sys.exit("mcp_fixture: usage: mcp_fixture.py [--home DIR] [--file PATH=TEXT]... -- COMMAND ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="mcp_fixture")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--file", action="append", default=[])
    return parser.parse_args(argv[:split]), argv[split + 1:]


def expand(text: str, home: Path) -> str:
    text = text.replace("{repo}", str(REPO))
    return str(home) + text[1:] if text == "~" or text.startswith("~/") else text


def write_files(specs: list[str], home: Path) -> None:
    if any(spec.startswith("/") for spec in specs):
        shutil.rmtree(EVAL_ROOT, ignore_errors=True)
    for spec in specs:
        name, _, text = spec.partition("=")
        path = Path(expand(name, home))
        if name.startswith("/") and EVAL_ROOT not in path.parents:
            sys.exit(f"mcp_fixture: {name}: host files go in ~ or {EVAL_ROOT}")
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("\\n", "\n"))


def main(argv: list[str]) -> None:
    options, command = parse(argv)
    home = Path(os.environ.get("HOME", "/"))
    if options.home is not None:
        home = options.home.resolve()
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        os.environ["HOME"] = str(home)
    write_files(options.file, home)
    command = [expand(part, home) for part in command]
    program = shutil.which(command[0]) or command[0]
    os.execvp(program, command)


if __name__ == "__main__":
    main(sys.argv[1:])
