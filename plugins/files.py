"""The built-in file syscalls: the model's view of the SQLite filesystem.

Registered like any driver. Results are JSON-serialisable and short enough
for a small model's context: long files are cut with a note saying how to see
the rest, binary files are described (type, size), never returned as bytes.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from llmos_shell import DriverStatus, SyscallContext, hookimpl
from llmos_shell.toolkit import normalise_path as normalise

#: Most characters of a file that read_file returns.
MAX_READ_CHARS = 8000
#: Most entries list_files returns, and most matches search_files returns.
MAX_ENTRIES = 200
MAX_MATCHES = 20
#: Longest matching line search_files shows.
MAX_LINE_CHARS = 200


def list_files(ctx: SyscallContext, path: str = "/") -> dict[str, Any]:
    """List the files and folders in a directory of the llmos filesystem.

    Args:
        path: The directory to list, such as "/" or "/notes".
    """
    entries = ctx.fs.ls(path)
    shown = [{"name": e["name"] + ("/" if e["kind"] == "dir" else ""), "kind": e["kind"],
              **({"size": e["size"], "mime": e["mime"]} if e["kind"] == "file" else {})}
             for e in entries[:MAX_ENTRIES]]
    result: dict[str, Any] = {"path": ctx.fs.stat(path)["path"], "entries": shown,
                              "listing": "\n".join(e["name"] for e in shown) or "(empty folder)"}
    if len(entries) > MAX_ENTRIES:
        result["note"] = f"showing {MAX_ENTRIES} of {len(entries)} entries"
    return result


def read_file(ctx: SyscallContext, path: str, offset: int = 0) -> Any:
    """Read a text file of the llmos filesystem. Binary files (images, sound) are described, not shown.

    Args:
        path: The file to read, such as "/notes/todo.txt".
        offset: For long files: the character to start from (the reply says where the next part starts).
    """
    info = ctx.fs.stat(path)
    if info["kind"] == "dir":
        return {"path": info["path"], "error": "is a directory: use list_files"}
    if not info["text"]:
        return {"path": info["path"], "mime": info["mime"], "size": info["size"],
                "note": "binary file: content not shown"}
    text = ctx.fs.read_text(path)
    offset = max(0, offset)
    end = offset + MAX_READ_CHARS
    if offset == 0 and end >= len(text):
        return text
    note = (f"[characters {offset}-{min(end, len(text))} of {len(text)} in {info['path']}"
            + (f"; read_file with offset={end} for more]" if end < len(text) else "; end of file]"))
    return text[offset:end] + "\n" + note


def write_file(ctx: SyscallContext, path: str, content: str, append: bool = False) -> dict[str, Any]:
    """Write a text file in the llmos filesystem, creating folders as needed. Replaces an existing file unless append is true.

    Args:
        path: The file to write, such as "/notes/todo.txt".
        content: The text to write.
        append: Add to the end of the file instead of replacing it.
    """
    if append and content and ctx.fs.exists(path) and ctx.fs.stat(path)["text"]:
        content = _as_next_line(ctx.fs.read_text(path), content)
    info = ctx.fs.write(path, content, append=append)
    return {"path": info["path"], "size": info["size"], "mime": info["mime"], "appended": append,
            "done": f"{'Added to' if append else 'Saved'} {info['path']} ({info['size']} bytes)."}


# A request to add to a file rather than replace it: "Add eggs to ...", "append ...", "... at the end of",
# "put tomatoes on my shopping list".
ADDING = re.compile(r"(?i)^\W*(?:(?:please|pls|can you|could you|would you)\W+)?(?:add|append)\b"
                    r"|\bappend\b|\b(?:to|at) the (?:end|bottom) of\b|\bput\b.+\b(?:on|onto)\b.*\blist\b")
# What is added, when the request spells it out: quoted, or a few plain words between the verb and
# "to"/"on" ("Add eggs to my list": "eggs"). Words that point elsewhere ("the date", "today's
# weather", "it") are not the text itself: the model, or the step before, writes it.
_ADDED = re.compile(r"(?i)^\W*(?:(?:please|pls|can you|could you|would you)\W+)?(?:add|append|put)\s+"
                    r"(?P<what>.+?)\s+(?:to|on|onto|at the end of|at the bottom of)\s")
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"|“([^”]+)”")
_POINTING = re.compile(r"(?i)\b(?:the|a|an|my|your|this|that|these|those|it|them|its|their|some|today|"
                       r"tomorrow|yesterday|current|date|time|summary|result|answer|translation)\b|'s\b")
MOST_ADDED_WORDS = 4


def adding_said(request: str) -> dict[str, Any]:
    """write_file's ``append``, and what to add, as the request says them: "Add eggs to my list in
    ..." appends "eggs"; nothing otherwise (the model decides)."""
    if not ADDING.search(request):
        return {}
    said: dict[str, Any] = {"append": True}
    added = _ADDED.search(request)
    if added:
        what = added.group("what").strip()
        quoted = _QUOTED.fullmatch(what)
        if quoted:
            said["content"] = next(group for group in quoted.groups() if group)
        elif len(what.split()) <= MOST_ADDED_WORDS and not _POINTING.search(what) and "/" not in what:
            said["content"] = what
    return said


def _as_next_line(existing: str, content: str) -> str:
    """What to append so that a file of lines stays one: a text added to "milk\nbread\n" is a line
    of its own ("eggs\n"), never glued to the last one ("breadeggs"). A text that starts with
    a space or a newline is added as written."""
    if not existing or content[:1].isspace():
        return content
    if not existing.endswith("\n"):
        content = "\n" + content
    return content if content.endswith("\n") or not existing.endswith("\n") else content + "\n"


def delete_file(ctx: SyscallContext, path: str, recursive: bool = False) -> dict[str, Any]:
    """Delete a file or an empty folder from the llmos filesystem. This cannot be undone.

    Args:
        path: The file or folder to delete.
        recursive: Also delete a folder that is not empty, with everything in it.
    """
    removed = ctx.fs.rm(path, recursive=recursive)
    return {"deleted": normalise(path), "removed": removed, "done": f"Deleted {normalise(path)}."}


def search_files(ctx: SyscallContext, query: str) -> dict[str, Any]:
    """Search the llmos filesystem: file names containing the query, and lines of text files containing its words.

    Args:
        query: Words to look for, or part of a file name.
    """
    found = ctx.fs.search(query, limit=MAX_MATCHES)
    lines = [{"path": m["path"], "line": m["line"],
              "text": m["text"] if len(m["text"]) <= MAX_LINE_CHARS else m["text"][:MAX_LINE_CHARS] + "…"}
             for m in found["lines"]]
    shown = [f"{p}" for p in found["names"]] + [f"{m['path']}: {m['text']}" for m in lines]
    return {"query": query, "names": found["names"], "lines": lines,
            "found": "\n".join(shown) or f"nothing matches {query!r}"}


@hookimpl
def register_syscalls(register) -> None:
    register(list_files, capabilities=["reads_fs"], reads=["inode/directory"], output="listing", examples=[
        "List the files in /photos", "What is in the folder /projects?", "Show me what's in /downloads",
        "ls /notes", "Which files do I have in /music?", "What files are there?",
    ])
    register(read_file, capabilities=["reads_fs"], reads=["text/*", "application/json"], examples=[
        "What is in /notes/todo.txt?", "Show me /docs/plan.md", "Open /letters/bank.txt and tell me what it says",
        "cat /etc/motd.txt", "What does /notes/meeting.txt say about the budget?",
        "How much flour does the recipe in /kitchen/bread.txt need?",
        "What is Anna's email address? It's in /data/people.csv", "Read the file /docs/notes.txt",
    ])
    register(write_file, capabilities=["writes_fs"], input="content", output="done", from_request=adding_said,
             examples=[
        "Write 'call the plumber' to /notes/todo.txt", "Save 'meeting at 3pm' in /notes/reminder.txt",
        "Create a file /notes/shopping.txt with eggs, milk and bread",
        "Add 'buy stamps' to the end of /notes/todo.txt", "Put the text 'hello world' into /tmp/hello.txt",
        "save it to /notes/result.txt", "and write it in /docs/answer.txt",
    ])
    register(delete_file, capabilities=["writes_fs", "irreversible"], output="done", examples=[
        "Delete /notes/old.txt", "Remove the file /photos/blurry.jpg", "rm /tmp/scratch.txt",
        "Get rid of /downloads/setup.log", "Erase the folder /old/backups",
    ])
    register(search_files, capabilities=["reads_fs"], output="found", examples=[
        "Find the file that mentions the dentist", "Which document talks about the lease?",
        "Search my files for 'passport'", "Where did I write about the holiday in Spain?",
        "Look for notes about the quarterly report", "Find my notes on the garden",
    ])


@hookimpl
def driver_status(system) -> DriverStatus:
    conn = sqlite3.connect(":memory:")
    try:
        options = {row[0] for row in conn.execute("PRAGMA compile_options")}
    finally:
        conn.close()
    if "ENABLE_FTS5" not in options:
        return DriverStatus("files", False, detail=f"SQLite {sqlite3.sqlite_version} lacks FTS5: search is unavailable")
    return DriverStatus("files", True, backend=f"SQLite {sqlite3.sqlite_version} (WAL, FTS5)")
