"""The kernel's records: processes, messages (FTS5), the syscall audit log, snapshots."""

from __future__ import annotations

import json
import time

import pytest
from fs_fixtures import fs  # noqa: F401

from llmos_shell.errors import FsError, UsageError
from llmos_shell.fs.records import MAX_LOGGED_CHARS


def test_processes(fs):
    first = fs.create_process("shell", model="qwen2.5-coder-0.5b-instruct")
    child = fs.create_process("summarise report", model="smollm2-135m-instruct", parent=first)
    assert (first, child) == (1, 2)
    proc = fs.get_process(child)
    assert proc["parent"] == first and proc["name"] == "summarise report" and proc["status"] == "ready"
    assert proc["model"] == "smollm2-135m-instruct" and proc["ended"] is None
    assert proc["created"] == proc["updated"] and abs(proc["created"] - time.time()) < 5
    fs.set_process_status(child, "running")
    assert fs.get_process(child)["ended"] is None
    fs.set_process_status(child, "done")
    done = fs.get_process(child)
    assert done["status"] == "done" and done["ended"] is not None and done["updated"] >= done["created"]
    rows = fs.processes()
    assert [(r["pid"], r["messages"], r["syscalls"]) for r in rows] == [(1, 0, 0), (2, 0, 0)]
    with pytest.raises(FsError, match="no such process: 9"):
        fs.get_process(9)
    with pytest.raises(FsError, match="no such process: 9"):
        fs.set_process_status(9, "done")
    with pytest.raises(FsError, match="no such process: 9"):
        fs.create_process("orphan", parent=9)


def test_messages_in_order_with_seq_per_process(fs):
    a, b = fs.create_process("a"), fs.create_process("b")
    assert fs.add_message(a, "system", "You are llmos.") == 1
    assert fs.add_message(a, "user", "Translate 'hello' to Spanish", tokens=7) == 2
    assert fs.add_message(b, "user", "other process") == 1
    assert fs.add_message(a, "assistant", "hola", tokens=2) == 3
    messages = fs.messages(a)
    assert [(m["seq"], m["role"], m["content"], m["tokens"], m["swapped"]) for m in messages] == [
        (1, "system", "You are llmos.", 0, False),
        (2, "user", "Translate 'hello' to Spanish", 7, False),
        (3, "assistant", "hola", 2, False),
    ]
    assert fs.add_messages(b, [("assistant", "x", 1), {"role": "tool", "content": {"ok": True}}]) == [2, 3]
    assert fs.messages(b)[-1]["content"] == json.dumps({"ok": True})
    assert [r["messages"] for r in fs.processes()] == [3, 3]
    with pytest.raises(FsError, match="no such process: 99"):
        fs.add_message(99, "user", "nobody")


def test_search_messages(fs):
    a, b = fs.create_process("a"), fs.create_process("b")
    fs.add_message(a, "user", "Please summarise the quarterly budget report.")
    fs.add_message(a, "assistant", "The budget grew by ten percent.")
    fs.add_message(b, "user", "What is the weather in Paris?")
    found = fs.search_messages("budget")
    assert {(m["pid"], m["seq"]) for m in found} == {(a, 1), (a, 2)}
    assert all("[budget]" in m["snippet"] for m in found)
    assert found[0]["rank"] <= found[1]["rank"]
    assert [m["seq"] for m in fs.search_messages("summarising reports")] == [1]  # stemmed, all words
    assert fs.search_messages("paris", pid=a) == []
    assert [m["pid"] for m in fs.search_messages("paris", pid=b)] == [b]
    assert len(fs.search_messages("budget", limit=1)) == 1
    assert fs.search_messages('"unbalanced OR NOT') == []
    assert fs.search_messages("budget weather") == []
    assert {m["pid"] for m in fs.search_messages("budget weather", any_word=True)} == {a, b}
    with pytest.raises(UsageError):
        fs.search_messages("?!")


def test_mark_swapped(fs):
    pid = fs.create_process("p")
    for i in range(5):
        fs.add_message(pid, "user", f"message number {i} about elephants")
    assert fs.mark_swapped(pid, [1, 2, 3]) == 3
    assert fs.mark_swapped(pid, [1]) == 0  # already swapped
    assert [m["swapped"] for m in fs.messages(pid)] == [True, True, True, False, False]
    assert [m["seq"] for m in fs.messages(pid, include_swapped=False)] == [4, 5]
    assert sorted(m["seq"] for m in fs.search_messages("elephants", pid=pid, swapped=True)) == [1, 2, 3]
    assert fs.mark_swapped(pid, [3], swapped=False) == 1
    assert sorted(m["seq"] for m in fs.search_messages("elephants", swapped=False)) == [3, 4, 5]


def test_syscall_audit_log(fs):
    pid = fs.create_process("p")
    started = time.time()
    first = fs.record_syscall(pid, "read_file", {"path": "/a.txt"}, "ok", result="hello", started=started, ms=1.5)
    second = fs.record_syscall(pid, "delete_file", {"path": "/a.txt"}, "denied", error="approval policy: never",
                               started=started, ms=0.1)
    fs.record_syscall(None, "list_files", {}, "ok", result={"entries": [], "blob": b"\x00" * 10}, started=started, ms=2)
    assert (first, second) == (1, 2)
    log = fs.syscalls(pid=pid)
    assert [(r["name"], r["status"], r["arguments"], r["result"], r["error"]) for r in log] == [
        ("read_file", "ok", {"path": "/a.txt"}, "hello", None),
        ("delete_file", "denied", {"path": "/a.txt"}, None, "approval policy: never"),
    ]
    assert log[0]["started"] == started and log[0]["ms"] == 1.5
    everything = fs.syscalls()
    assert len(everything) == 3 and everything[2]["pid"] is None
    assert everything[2]["result"] == {"entries": [], "blob": "<10 bytes>"}
    assert [r["id"] for r in fs.syscalls(limit=2)] == [2, 3]
    assert fs.processes()[0]["syscalls"] == 2
    with pytest.raises(FsError, match="no such process: 42"):
        fs.record_syscall(42, "x", {}, "ok")


def test_huge_syscall_result_is_cut_but_valid_json(fs):
    fs.record_syscall(None, "read_file", {"path": "/big"}, "ok", result="x" * (MAX_LOGGED_CHARS * 2))
    result = fs.syscalls()[0]["result"]
    assert result["truncated"] is True and result["chars"] > MAX_LOGGED_CHARS

