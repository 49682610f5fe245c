"""`llmos fs ...`, `llmos ps` and `llmos log`, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os

from fs_fixtures import run_llmos

from llmos_shell.fs import Filesystem


def ok(done) -> str:
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_put_ls_cat_get_round_trip(tmp_path):
    home = tmp_path / "home"
    host = tmp_path / "host"
    (host / "docs").mkdir(parents=True)
    (host / "docs" / "a.txt").write_text("alpha beta\n")
    blob = bytes(range(256)) * 10
    (host / "docs" / "b.bin").write_bytes(blob)

    assert "2 file(s)" in ok(run_llmos(home, "fs", "put", str(host / "docs"), "/in"))
    assert ok(run_llmos(home, "fs", "ls", "/in")).split() == ["a.txt", "b.bin"]
    long_form = ok(run_llmos(home, "fs", "ls", "-l", "/in")).splitlines()
    assert long_form[0].startswith("-") and "text/plain" in long_form[0] and long_form[0].endswith("a.txt")
    assert "2.5K" in long_form[1] and "application/octet-stream" in long_form[1]
    entries = [json.loads(line) for line in ok(run_llmos(home, "fs", "ls", "--json", "/in")).splitlines()]
    assert [(e["name"], e["size"]) for e in entries] == [("a.txt", 11), ("b.bin", 2560)]
    assert run_llmos(home, "fs", "cat", "/in/b.bin").stdout == blob

    summary = json.loads(ok(run_llmos(home, "fs", "get", "--json", "/in", str(tmp_path / "out"))))
    assert summary["files"] == 2 and summary["path"] == str(tmp_path / "out")
    assert (tmp_path / "out" / "b.bin").read_bytes() == blob  # `out` did not exist: it is the copy of /in
    ok(run_llmos(home, "fs", "get", "/in/a.txt", cwd=tmp_path))  # default: the current directory
    assert (tmp_path / "a.txt").read_text() == "alpha beta\n"

    assert ok(run_llmos(home, "fs", "put", "-", "/stdin.txt", input=b"from a pipe")) .startswith("/stdin.txt")
    assert run_llmos(home, "fs", "cat", "/stdin.txt").stdout == b"from a pipe"


def test_get_follows_cp(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with Filesystem.open(home / "llmos.db") as fs:
        fs.write("/docs/b.bin", b"\x00\x01binary")
        fs.write("/docs/sub/c.txt", "c")
    out = tmp_path / "out"
    out.mkdir()
    # a destination that does not exist is the new file's path, not a folder to put it in
    ok(run_llmos(home, "fs", "get", "/docs/b.bin", str(out / "b.bin")))
    assert (out / "b.bin").is_file() and (out / "b.bin").read_bytes() == b"\x00\x01binary"
    ok(run_llmos(home, "fs", "get", "/docs/b.bin", str(out / "renamed.bin")))
    assert (out / "renamed.bin").read_bytes() == b"\x00\x01binary"
    # an existing folder receives it under its own name
    folder = out / "folder"
    folder.mkdir()
    ok(run_llmos(home, "fs", "get", "/docs/b.bin", str(folder)))
    assert sorted(os.listdir(folder)) == ["b.bin"]
    # a directory: into an existing folder, or as a new one
    ok(run_llmos(home, "fs", "get", "/docs", str(folder)))
    assert (folder / "docs" / "sub" / "c.txt").read_text() == "c"
    ok(run_llmos(home, "fs", "get", "/docs", str(out / "copy")))
    assert sorted(os.listdir(out / "copy")) == ["b.bin", "sub"]
    # over an existing file: replaced (refused with -n)
    ok(run_llmos(home, "fs", "get", "/docs/sub/c.txt", str(out / "b.bin")))
    assert (out / "b.bin").read_text() == "c"
    assert run_llmos(home, "fs", "get", "-n", "/docs/b.bin", str(out / "b.bin")).returncode == 1
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "home" not in p.parts)
    # the destination's directory must exist; nothing is created on the way
    missing = run_llmos(home, "fs", "get", "/docs/b.bin", str(out / "nope" / "b.bin"))
    assert missing.returncode == 1
    assert missing.stderr.decode() == (f"llmos: error: no such host directory: {out / 'nope'} "
                                       f"(to write {out / 'nope' / 'b.bin'}, create it first)\n")
    slash = run_llmos(home, "fs", "get", "/docs/b.bin", str(out / "newdir") + "/")
    assert slash.returncode == 1 and "no such host directory" in slash.stderr.decode()
    folder_over_file = run_llmos(home, "fs", "get", "/docs", str(out / "renamed.bin"))
    assert folder_over_file.returncode == 1 and folder_over_file.stderr.decode().count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "home" not in p.parts) == before


def test_put_follows_cp(tmp_path):
    home = tmp_path / "home"
    host = tmp_path / "report.txt"
    host.write_text("quarterly\n")
    (tmp_path / "tree" / "deep").mkdir(parents=True)
    (tmp_path / "tree" / "deep" / "x.md").write_text("x")
    ok(run_llmos(home, "fs", "mkdir", "/inputs"))
    # into an existing folder, under its own name
    assert ok(run_llmos(home, "fs", "put", str(host), "/inputs")).startswith("/inputs/report.txt:")
    # to a new path: that is the file's name
    assert ok(run_llmos(home, "fs", "put", str(host), "/inputs/renamed.txt")).startswith("/inputs/renamed.txt:")
    assert ok(run_llmos(home, "fs", "ls", "/inputs")).split() == ["renamed.txt", "report.txt"]
    assert run_llmos(home, "fs", "cat", "/inputs/renamed.txt").stdout == b"quarterly\n"
    # a folder: into an existing one, or as a new one
    ok(run_llmos(home, "fs", "put", str(tmp_path / "tree"), "/inputs"))
    ok(run_llmos(home, "fs", "put", str(tmp_path / "tree"), "/copy"))
    assert ok(run_llmos(home, "fs", "find", "*.md")).split() == ["/copy/deep/x.md", "/inputs/tree/deep/x.md"]
    # missing folders on the way are made (the tree is llmos's own: task inputs land like this)
    assert ok(run_llmos(home, "fs", "put", str(host), "/new/deep/report.txt")).startswith("/new/deep/report.txt:")
    ok(run_llmos(home, "fs", "put", "-", "/new/a.txt", input=b"x"))
    assert ok(run_llmos(home, "fs", "put", str(host), "/newdir/")).startswith("/newdir/report.txt:")
    assert ok(run_llmos(home, "fs", "ls", "/new")).split() == ["a.txt", "deep/"]
    not_dir = run_llmos(home, "fs", "put", str(host), "/inputs/report.txt/x.txt")
    assert not_dir.returncode == 1 and "not a directory: /inputs/report.txt" in not_dir.stderr.decode()
    over_file = run_llmos(home, "fs", "put", str(tmp_path / "tree"), "/inputs/report.txt")
    assert over_file.returncode == 1 and "not a directory" in over_file.stderr.decode()
    assert ok(run_llmos(home, "fs", "ls", "/")).split() == ["copy/", "inputs/", "new/", "newdir/"]


def test_mkdir_mv_cp_rm_find_grep(tmp_path):
    home = tmp_path
    assert run_llmos(home, "fs", "mkdir", "/a/b").returncode == 1  # no -p: the parent must exist
    ok(run_llmos(home, "fs", "mkdir", "-p", "/a/b", "/c"))
    with Filesystem.open(home / "llmos.db") as fs:
        fs.write("/a/b/note.md", "the quarterly report is late\nsecond line\n")
    ok(run_llmos(home, "fs", "cp", "/a", "/c"))
    ok(run_llmos(home, "fs", "mv", "/c/a/b/note.md", "/c/renamed.md"))
    assert ok(run_llmos(home, "fs", "find", "*.md")).split() == ["/a/b/note.md", "/c/renamed.md"]
    assert run_llmos(home, "fs", "find", "*.none").returncode == 1
    assert ok(run_llmos(home, "fs", "grep", "report", "/c")) == "/c/renamed.md:1:the quarterly report is late\n"
    assert ok(run_llmos(home, "fs", "grep", "-E", r"^sec\w+", "/a")) == "/a/b/note.md:2:second line\n"
    assert ok(run_llmos(home, "fs", "grep", "-l", "quarterly")).split() == ["/a/b/note.md", "/c/renamed.md"]
    matches = [json.loads(line) for line in ok(run_llmos(home, "fs", "grep", "--json", "late")).splitlines()]
    assert matches[0] == {"path": "/a/b/note.md", "line": 1, "text": "the quarterly report is late"}
    missing = run_llmos(home, "fs", "grep", "nothinglikethis")
    assert missing.returncode == 1 and missing.stdout == b"" and missing.stderr == b""

    not_empty = run_llmos(home, "fs", "rm", "/c")
    assert not_empty.returncode == 1
    assert not_empty.stderr.decode() == "llmos: error: directory not empty: /c (remove it recursively)\n"
    ok(run_llmos(home, "fs", "rm", "-r", "/c"))
    info = json.loads(ok(run_llmos(home, "fs", "stat", "--json", "/a/b/note.md")))
    assert info["kind"] == "file" and info["size"] == 41
    assert ok(run_llmos(home, "fs", "check")) == "ok\n"


def test_errors_are_one_line_with_exit_codes(tmp_path):
    missing = run_llmos(tmp_path, "fs", "cat", "/notes/a.txt")
    assert (missing.returncode, missing.stderr.decode()) == (1, "llmos: error: no such file: /notes/a.txt\n")
    bad_path = run_llmos(tmp_path, "fs", "ls", "/a\tb")
    assert bad_path.returncode == 2 and bad_path.stderr.decode().count("\n") == 1
    bad_regex = run_llmos(tmp_path, "fs", "grep", "-E", "(")
    assert bad_regex.returncode == 2 and "bad regular expression" in bad_regex.stderr.decode()
    no_host = run_llmos(tmp_path, "fs", "put", str(tmp_path / "nope"))
    assert no_host.returncode == 1 and "no such host file" in no_host.stderr.decode()
    assert b"Traceback" not in missing.stderr + bad_path.stderr + bad_regex.stderr + no_host.stderr


def test_ps_and_log(tmp_path):
    with Filesystem.open(tmp_path / "llmos.db") as fs:
        shell = fs.create_process("shell", model="qwen2.5-coder-0.5b-instruct")
        task = fs.create_process("task report.md", model="smollm2-135m-instruct", parent=shell)
        fs.add_message(task, "user", "summarise")
        fs.record_syscall(task, "read_file", {"path": "/report.md"}, "ok", result="text", ms=3.25)
        fs.record_syscall(shell, "delete_file", {"path": "/x"}, "denied", error="approval policy: never", ms=0.5)
        fs.set_process_status(task, "done")
    table = ok(run_llmos(tmp_path, "ps")).splitlines()
    assert table[0].split()[:3] == ["PID", "PARENT", "STATUS"]
    # PID PARENT STATUS CTX KV MSGS CALLS: no turn has run, so no context or KV figures yet
    assert table[2].split()[:7] == ["2", "1", "done", "-", "-", "1", "1"] and table[2].endswith("task report.md")
    rows = [json.loads(line) for line in ok(run_llmos(tmp_path, "ps", "--json")).splitlines()]
    assert [(r["pid"], r["status"], r["messages"]) for r in rows] == [(1, "ready", 0), (2, "done", 1)]

    log = ok(run_llmos(tmp_path, "log")).splitlines()
    assert len(log) == 2 and "read_file" in log[0] and "3.2 ms" in log[0]
    assert "denied" in log[1] and "error: approval policy: never" in log[1]
    entries = [json.loads(line) for line in ok(run_llmos(tmp_path, "log", "--json", "--pid", "2")).splitlines()]
    assert len(entries) == 1
    assert {k: entries[0][k] for k in ("pid", "name", "arguments", "status", "result", "ms")} == {
        "pid": 2, "name": "read_file", "arguments": {"path": "/report.md"}, "status": "ok", "result": "text",
        "ms": 3.25}
    unknown = run_llmos(tmp_path, "log", "--pid", "7")
    assert unknown.returncode == 1 and "no such process: 7" in unknown.stderr.decode()
