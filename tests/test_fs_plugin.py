"""The built-in file syscalls (plugins/files.py), called the way the kernel calls them."""

from __future__ import annotations

import json

import pytest

from llmos_shell.errors import Denied, FsError, UsageError
from llmos_shell.syscalls import ArgumentError
from llmos_shell.testing import make_system


@pytest.fixture
def system(tmp_path):
    system = make_system(tmp_path, plugins=["llmos_plugins.files"])
    yield system
    system.close()


def test_registered_with_capabilities(system):
    assert system.broken == {}
    caps = {s.name: set(s.capabilities) for s in system.table}
    assert caps == {
        "list_files": {"reads_fs"},
        "read_file": {"reads_fs"},
        "write_file": {"writes_fs"},
        "delete_file": {"writes_fs", "irreversible"},
        "search_files": {"reads_fs"},
    }
    schema = system.table.get("write_file").parameters
    assert schema["required"] == ["path", "content"]
    assert schema["properties"]["append"] == {"type": "boolean", "default": False,
                                              "description": schema["properties"]["append"]["description"]}
    assert "ctx" not in schema["properties"]
    assert all(s.description for s in system.table)
    statuses = system.driver_statuses()
    assert statuses[0].name == "files" and statuses[0].ok and "FTS5" in statuses[0].backend


def test_write_list_read_search_delete(system):
    assert system.call("write_file", {"path": "notes/todo.txt", "content": "buy milk\n"}) == {
        "path": "/notes/todo.txt", "size": 9, "mime": "text/plain", "appended": False,
        "done": "Saved /notes/todo.txt (9 bytes)."}
    system.call("write_file", {"path": "/notes/todo.txt", "content": "call mum\n", "append": True})
    assert system.call("read_file", {"path": "/notes/todo.txt"}) == "buy milk\ncall mum\n"
    listing = system.call("list_files", {})
    assert listing == {"path": "/", "entries": [{"name": "notes/", "kind": "dir"}], "listing": "notes/"}
    listing = system.call("list_files", {"path": "/notes"})
    assert listing["entries"] == [{"name": "todo.txt", "kind": "file", "size": 18, "mime": "text/plain"}]
    found = system.call("search_files", {"query": "milk"})
    assert found == {"query": "milk", "names": [],
                     "lines": [{"path": "/notes/todo.txt", "line": 1, "text": "buy milk"}],
                     "found": "/notes/todo.txt: buy milk"}
    assert system.call("search_files", {"query": "TODO"})["names"] == ["/notes/todo.txt"]
    with pytest.raises(Denied, match="approval policy"):  # irreversible: refused unless approved
        system.call("delete_file", {"path": "/notes"})
    with pytest.raises(FsError, match="directory not empty"):
        system.call("delete_file", {"path": "/notes"}, approve="auto")
    assert system.call("delete_file", {"path": "/notes", "recursive": True}, approve="auto") == {
        "deleted": "/notes", "removed": 2, "done": "Deleted /notes."}
    assert system.call("list_files", {})["entries"] == []
    json.dumps(found)


def test_long_files_are_cut_with_a_note(system):
    from llmos_plugins.files import MAX_READ_CHARS

    system.fs.write("/long.txt", "x" * (MAX_READ_CHARS * 3))
    text = system.call("read_file", {"path": "/long.txt"})
    assert text.startswith("x" * MAX_READ_CHARS)
    assert text.endswith(f"[characters 0-{MAX_READ_CHARS} of {MAX_READ_CHARS * 3} in /long.txt; "
                         f"read_file with offset={MAX_READ_CHARS} for more]")
    assert len(text) < MAX_READ_CHARS + 200
    last = system.call("read_file", {"path": "/long.txt", "offset": MAX_READ_CHARS * 2 + 10})
    assert last.endswith("; end of file]") and last.split("\n")[0] == "x" * (MAX_READ_CHARS - 10)
    assert system.call("read_file", {"path": "/long.txt", "offset": 10**9}).startswith("\n[characters")


def test_binary_files_are_described_not_returned(system):
    system.fs.write("/cat.png", b"\x89PNG\r\n\x1a\n" + bytes(1000))
    result = system.call("read_file", {"path": "/cat.png"})
    assert result == {"path": "/cat.png", "mime": "image/png", "size": 1008, "note": "binary file: content not shown"}
    assert system.call("read_file", {"path": "/"})["error"].startswith("is a directory")


def test_long_listings_and_lines_are_capped(system):
    from llmos_plugins.files import MAX_ENTRIES, MAX_LINE_CHARS, MAX_MATCHES

    with system.fs.transaction():
        for i in range(MAX_ENTRIES + 5):
            system.fs.write(f"/many/{i:04}.txt", f"needle {'y' * MAX_LINE_CHARS * 2}")
    listing = system.call("list_files", {"path": "/many"})
    assert len(listing["entries"]) == MAX_ENTRIES and "of 205 entries" in listing["note"]
    found = system.call("search_files", {"query": "needle"})
    assert len(found["lines"]) == MAX_MATCHES
    assert all(len(line["text"]) <= MAX_LINE_CHARS + 1 for line in found["lines"])


def test_bad_arguments_and_paths(system):
    with pytest.raises(ArgumentError):
        system.call("write_file", {"path": "/a"})
    with pytest.raises(UsageError):
        system.call("read_file", {"path": "/a\x00b"})
    with pytest.raises(FsError, match="no such file: /missing"):
        system.call("read_file", {"path": "/missing"})


def test_an_append_to_a_file_of_lines_is_a_line_of_its_own(system):
    system.call("write_file", {"path": "/notes/shop.txt", "content": "milk\nbread\n"})
    system.call("write_file", {"path": "/notes/shop.txt", "content": "eggs", "append": True})
    system.call("write_file", {"path": "/notes/shop.txt", "content": "tea", "append": True})
    assert system.fs.read_text("/notes/shop.txt") == "milk\nbread\neggs\ntea\n"
    system.call("write_file", {"path": "/notes/one.txt", "content": "hello"})
    system.call("write_file", {"path": "/notes/one.txt", "content": " world", "append": True})
    assert system.fs.read_text("/notes/one.txt") == "hello world"


@pytest.mark.parametrize("request_, said", [
    ("Add eggs to my shopping list in /notes/shopping.txt", {"append": True, "content": "eggs"}),
    ("please append 'tea' to /notes/shop.txt", {"append": True, "content": "tea"}),
    ("Write 'milk' at the end of /notes/shop.txt", {"append": True}),
    ("Write 'call the plumber' to /notes/todo.txt", {}),
    ("put tomatoes on my shopping list /lists/shop.txt", {"append": True, "content": "tomatoes"}),
    ("Add 'call the plumber' to /notes/todo.txt", {"append": True, "content": "call the plumber"}),
    ("Add today's date to /notes/log.txt", {"append": True}),          # the model works that out
    ("Append the summary to /notes/summaries.txt", {"append": True}),  # the step before writes it
    ("Put the report in /docs/report.txt", {}),
])
def test_append_is_read_from_the_request(request_, said):
    from llmos_plugins.files import adding_said

    assert adding_said(request_) == said
