"""Versions: every change to a file's content keeps the previous content (fs/versions.py)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmos_shell.cli.app import cli
from llmos_shell.config import Config
from llmos_shell.errors import FsError
from llmos_shell.fs import Filesystem
from llmos_shell.fs.versions import acting
from llmos_shell.system import System
from llmos_plugins.files import _as_next_line
from conftest import assert_one_line_error, run_llmos


@pytest.fixture
def fs():
    filesystem = Filesystem.open(":memory:")
    yield filesystem
    filesystem.close()


def contents(fs, path):
    return [fs.version_content(path, v["version"]) for v in fs.versions(path)]


def test_every_kind_of_change_keeps_what_it_replaced(fs):
    with acting(42):
        fs.write("/a.txt", "one")
        fs.write("/a.txt", "two")
        fs.write("/a.txt", "+", append=True)
        fs.write("/b.txt", "bee")
        fs.cp("/a.txt", "/b.txt")          # cp over a file
        fs.write("/c.txt", "sea")
        fs.mv("/c.txt", "/b.txt")          # mv over a file
        fs.mkdir("/d/e")
        fs.write("/d/e/f.txt", b"\x00\x01binary")
        fs.rm("/d", recursive=True)
        fs.rm("/a.txt")
    assert contents(fs, "/a.txt") == [b"one", b"two", b"two+"]
    assert [v["change"] for v in fs.versions("/a.txt")] == ["write", "append", "delete"]
    assert contents(fs, "/b.txt") == [b"bee", b"two+"]
    assert contents(fs, "/c.txt") == [b"sea"]            # moved away: still listed where it was
    assert contents(fs, "/d/e/f.txt") == [b"\x00\x01binary"]
    assert {v["pid"] for v in fs.versions("/a.txt")} == {42}
    assert len({v["request"] for v in fs.versions("/a.txt")}) == 1


def test_unchanged_content_keeps_no_version_and_equal_content_is_stored_once(fs):
    fs.write("/a.txt", "same")
    fs.write("/a.txt", "same")
    assert fs.versions("/a.txt") == []
    fs.write("/a.txt", "other")
    fs.write("/b.txt", "same")
    fs.write("/b.txt", "x")
    assert len(fs.versions("/a.txt")) == len(fs.versions("/b.txt")) == 1
    # every distinct content once, files' and versions' alike: "same" (two versions), "other", "x"
    blobs = dict(fs.conn.execute("SELECT CAST(content AS TEXT), kept FROM blobs").fetchall())
    assert blobs == {"same": 2, "other": 0, "x": 0}
    assert fs.versions_usage()["bytes"] == 4


def test_a_copy_or_an_overwrite_copies_no_bytes(fs):
    fs.write("/big.bin", b"\x00" * 100_000)
    fs.cp("/big.bin", "/copy.bin")
    fs.write("/big.bin", b"\x01" * 100_000)      # the old content stays where it was: now a version's
    assert fs.conn.execute("SELECT count(*), sum(size) FROM blobs").fetchone() == (2, 200_000)
    assert fs.read("/copy.bin") == b"\x00" * 100_000
    fs.rm("/copy.bin")
    fs.restore("/big.bin", fs.versions("/big.bin")[0]["version"])
    assert fs.read("/big.bin") == b"\x00" * 100_000
    assert fs.conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 2


def test_without_versions_content_no_file_holds_is_gone(tmp_path):
    from llmos_shell.fs import Filesystem

    fs = Filesystem.open(tmp_path / "off.db", versions_mb=0)
    fs.write("/a.txt", "one")
    fs.cp("/a.txt", "/b.txt")
    fs.write("/a.txt", "two")
    fs.rm("/b.txt")
    assert [r[0] for r in fs.conn.execute("SELECT CAST(content AS TEXT) FROM blobs")] == ["two"]
    assert fs.grep("one") == [] and fs.grep("two")[0]["path"] == "/a.txt"
    fs.close()


def test_restore_is_itself_a_change_and_brings_back_deleted_files(fs):
    fs.write("/n/t.txt", "v1")
    fs.write("/n/t.txt", "v2")
    fs.rm("/n", recursive=True)
    assert not fs.exists("/n/t.txt")
    first, second = fs.versions("/n/t.txt")
    fs.restore("/n/t.txt", first["version"])
    assert fs.read_text("/n/t.txt") == "v1"
    fs.restore("/n/t.txt")                        # the newest: what it held before the restore... none
    assert fs.read_text("/n/t.txt") == "v2"
    assert contents(fs, "/n/t.txt")[-1] == b"v1"  # the restore kept what it replaced
    with pytest.raises(FsError, match="no version 999"):
        fs.restore("/n/t.txt", 999)
    with pytest.raises(FsError, match="no earlier versions"):
        fs.restore("/never.txt")


def test_undo_reverts_the_last_request_then_the_one_before(fs):
    fs.write("/keep.txt", "original")
    with acting(1):
        fs.write("/keep.txt", "changed once")
    with acting(1):
        fs.write("/keep.txt", "changed twice")
        fs.write("/keep.txt", "and again", append=True)
        fs.write("/new.txt", "made by the request")
        fs.mv("/keep.txt", "/moved.txt")
    undone = fs.undo([1])
    assert {(c["path"], c["action"]) for c in undone["reverted"]} == {
        ("/keep.txt", "restored"), ("/new.txt", "removed"), ("/moved.txt", "removed")}
    assert fs.read_text("/keep.txt") == "changed once"
    assert not fs.exists("/new.txt") and not fs.exists("/moved.txt")
    fs.undo([1])
    assert fs.read_text("/keep.txt") == "original"
    assert fs.undo([1]) is None                  # the undos themselves are not undone
    assert fs.undo([2]) is None
    assert contents(fs, "/new.txt") == [b"made by the request"]   # nothing is lost, even by undo


def test_budget_drops_the_oldest_and_is_never_exceeded(tmp_path):
    fs = Filesystem.open(tmp_path / "llmos.db", versions_mb=1000 / (1 << 20))   # 1000 bytes
    try:
        for i in range(40):
            fs.write("/log.txt", f"{i:03d}" * 30)          # 90 bytes each
            assert fs.versions_usage()["bytes"] <= 1000
        kept = contents(fs, "/log.txt")
        assert len(kept) == 11
        assert kept == [f"{i:03d}".encode() * 30 for i in range(28, 39)]   # the newest ones
        big = fs.write("/big.bin", b"x" * 5000)
        fs.write("/big.bin", b"y")                          # a version bigger than the budget: not kept
        assert fs.versions_usage()["bytes"] <= 1000 and big["size"] == 5000
        assert fs.conn.execute("SELECT count(*) FROM blobs WHERE kept > 0").fetchone()[0] == len(
            fs.conn.execute("SELECT DISTINCT sha256 FROM versions WHERE sha256 IS NOT NULL").fetchall())
    finally:
        fs.close()


def test_a_budget_of_zero_keeps_nothing(tmp_path):
    with Filesystem.open(tmp_path / "llmos.db", versions_mb=0) as fs:
        with acting(3):
            fs.write("/a.txt", "1")
            fs.write("/a.txt", "2")
            fs.rm("/a.txt")
        assert fs.versions("/a.txt") == [] and fs.undo() is None


def test_versions_are_kept_in_the_same_transaction_as_the_change(fs):
    fs.write("/a.txt", "before")
    with pytest.raises(RuntimeError):
        with fs.transaction():
            fs.write("/a.txt", "after")
            raise RuntimeError("crash")
    assert fs.read_text("/a.txt") == "before" and fs.versions("/a.txt") == []


# --- the CLI -------------------------------------------------------------------------------------

def llmos(home: Path, *args: str, input: bytes | None = None):
    result = CliRunner().invoke(cli, ["--home", str(home), *args], input=input, catch_exceptions=False)
    return result


def test_cli_versions_and_restore(tmp_path):
    home = tmp_path / "home"
    assert llmos(home, "fs", "put", "-", "/notes/todo.txt", input=b"buy milk\n").exit_code == 0
    assert llmos(home, "fs", "put", "-", "/notes/todo.txt", input=b"nothing left\n").exit_code == 0
    assert llmos(home, "fs", "rm", "/notes/todo.txt").exit_code == 0
    listed = llmos(home, "fs", "versions", "/notes/todo.txt")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "SIZE", "REPLACED"] and len(lines) == 3
    assert "write" in lines[1] and "delete" in lines[2]
    first = lines[1].split()[0]
    restored = llmos(home, "fs", "restore", "/notes/todo.txt", "--version", first)
    assert restored.exit_code == 0 and "restored /notes/todo.txt" in restored.output
    assert llmos(home, "fs", "cat", "/notes/todo.txt").output == "buy milk\n"
    assert llmos(home, "fs", "restore", "/notes/todo.txt").exit_code == 0     # the newest: before the restore
    assert llmos(home, "fs", "cat", "/notes/todo.txt").output == "nothing left\n"
    missing = run_llmos("fs", "restore", "/notes/todo.txt", "--version", "77", home=home)
    assert "no version 77" in assert_one_line_error(missing, 1)


# --- the property: any sequence of changes, any path, restores to the exact earlier bytes --------------

NAMES = ["/h/f0.txt", "/h/f1.txt", "/h/f2.txt", "/h/sub/g.txt"]
data = st.binary(min_size=0, max_size=40)
ops = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), data),
    st.tuples(st.just("append"), st.sampled_from(NAMES), data),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("mv"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("cp"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("rm -r"), st.just("/h/sub")),
)
# Through what each change goes: the Filesystem, a syscall through the gate, or `llmos fs`.
routes = st.sampled_from(["fs", "fs", "syscall", "cli"])


class Model:
    """What each path holds now, and what it held before each change."""

    def __init__(self) -> None:
        self.now: dict[str, bytes] = {}
        self.history: dict[str, list[bytes]] = {}

    def replaced(self, path: str, new: bytes | None) -> None:
        old = self.now.get(path)
        if old is not None and old != new:
            self.history.setdefault(path, []).append(old)

    def apply(self, op: tuple) -> None:
        kind, path = op[0], op[1]
        if kind == "write":
            self.replaced(path, op[2])
            self.now[path] = op[2]
        elif kind == "append":
            new = self.now.get(path, b"") + op[2]
            self.replaced(path, new)
            self.now[path] = new
        elif kind == "delete":
            self.replaced(path, None)
            self.now.pop(path, None)
        elif kind == "rm -r":
            for name in [n for n in self.now if n.startswith(path + "/")]:
                self.replaced(name, None)
                del self.now[name]
        elif kind == "mv":
            self.history.setdefault(path, []).append(self.now[path])   # the move keeps the source's
            if op[2] in self.now:
                self.history.setdefault(op[2], []).append(self.now[op[2]])
            self.now[op[2]] = self.now.pop(path)
        elif kind == "cp":
            self.replaced(op[2], self.now[path])
            self.now[op[2]] = self.now[path]


def possible(op: tuple, model: Model, fs) -> bool:
    if op[0] in ("delete", "mv", "cp") and op[1] not in model.now:
        return False
    if op[0] in ("mv", "cp") and (op[1] == op[2] or not fs.is_dir(op[2].rsplit("/", 1)[0])):
        return False
    if op[0] == "rm -r" and not any(n.startswith("/h/sub/") for n in model.now):
        return False
    return True


def run(op: tuple, route: str, system: System, home: Path) -> None:
    fs = system.fs
    kind = op[0]
    if route == "syscall" and kind in ("write", "append", "delete"):
        # text only through write_file: it takes a string
        if kind == "delete":
            system.call("delete_file", {"path": op[1]}, approve="auto")
            return
        text = op[2].decode("utf-8")   # as_written made it UTF-8
        system.call("write_file", {"path": op[1], "content": text, "append": kind == "append"}, approve="auto")
        return
    if route == "cli" and kind != "append":
        args = {"write": ["put", "-", op[1]], "delete": ["rm", op[1]], "mv": ["mv", op[1], op[2] if len(op) > 2 else ""],
                "cp": ["cp", op[1], op[2] if len(op) > 2 else ""], "rm -r": ["rm", "-r", op[1]]}[kind]
        result = llmos(home, "fs", *args, input=op[2] if kind == "write" else None)
        assert result.exit_code == 0, result.output
        return
    if kind in ("write", "append"):
        fs.write(op[1], op[2], append=kind == "append")
    elif kind == "delete":
        fs.rm(op[1])
    elif kind == "rm -r":
        fs.rm(op[1], recursive=True)
    elif kind == "mv":
        fs.mv(op[1], op[2])
    else:
        fs.cp(op[1], op[2])


def as_written(op: tuple, route: str, fs) -> tuple:
    """write_file takes text: the bytes it stores are the text's UTF-8, and what it appends to a
    text file goes on a line of its own (plugins/files.py)."""
    if route == "syscall" and op[0] in ("write", "append"):
        text = op[2].decode("latin-1")
        if op[0] == "append" and text and fs.exists(op[1]) and fs.stat(op[1])["text"]:
            text = _as_next_line(fs.read_text(op[1]), text)
        return (op[0], op[1], text.encode("utf-8"))
    return op


def check_run(steps, budget_bytes: int | None) -> None:
    with tempfile.TemporaryDirectory(prefix="llmos-versions-") as folder:
        home = Path(folder)
        config = Config.load(home=home)
        if budget_bytes is not None:
            config.versions_mb = budget_bytes / (1 << 20)
        system = System(config, entry_points=False, plugins=("llmos_plugins.files",))
        model = Model()
        try:
            for op, route in steps:
                if not possible(op, model, system.fs):
                    continue
                op = as_written(op, route, system.fs)
                run(op, route, system, home)
                model.apply(op)
                usage = system.fs.versions_usage()
                assert usage["bytes"] <= usage["budget"]
            fs = system.fs
            for path, current in model.now.items():
                assert fs.read(path) == current
            # the search index still matches the files' text (FTS5 checks it against file_texts)
            fs.conn.execute("INSERT INTO files_fts (files_fts, rank) VALUES ('integrity-check', 1)")
            # each blob counts exactly the files and versions that hold it
            assert fs.conn.execute(
                "SELECT count(*) FROM blobs b WHERE live != (SELECT count(*) FROM files WHERE sha256 = b.sha256) "
                "OR kept != (SELECT count(*) FROM versions WHERE sha256 = b.sha256) OR live + kept = 0"
            ).fetchone()[0] == 0
            for path, history in model.history.items():
                kept = contents(fs, path)
                if budget_bytes is None:
                    assert kept == history, path
                else:   # the oldest went first: what is left is the newest part of the history
                    assert kept == history[len(history) - len(kept):], path
                numbers = [v["version"] for v in fs.versions(path)]
                if budget_bytes is not None:
                    # a restore is a change too, and what it keeps may push the oldest versions out of
                    # a small budget: read them all first, then restore only the newest
                    assert [fs.version_content(path, n) for n in numbers] == kept
                    numbers, kept = numbers[-1:], kept[-1:]
                for version, expected in zip(numbers, kept):
                    fs.restore(path, version)
                    assert fs.read(path) == expected
                    assert hashlib.sha256(expected).hexdigest() == fs.stat(path)["sha256"]
        finally:
            system.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ops, routes), min_size=1, max_size=14))
def test_property_restoring_any_version_gives_back_its_exact_bytes(steps):
    check_run(steps, None)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ops, st.just("fs")), min_size=1, max_size=30), st.integers(0, 120))
def test_property_the_budget_is_respected_and_the_newest_versions_stay(steps, budget):
    check_run(steps, budget)


# --- the shell's undo ------------------------------------------------------------------------------

def test_shell_undo_reverts_the_last_request_and_says_what(tmp_path):
    import io

    from llmos_shell.shell import Shell
    from llmos_shell.testing import FakeCpu, make_system

    system = make_system(tmp_path / "home", plugins=["llmos_plugins.files"], cpu=FakeCpu([]))
    system.fs.write("/notes/todo.txt", "buy milk\n")   # before the shell: not its to undo
    lines = ["write /notes/todo.txt call mum", "write /notes/new.txt hello",
             'call write_file {"path": "/notes/todo.txt", "content": "by a syscall"}',
             "undo", "cat /notes/todo.txt", "undo", "undo", "undo", "cat /notes/todo.txt"]
    out = io.StringIO()
    shell = Shell(system, script=io.StringIO("\n".join(lines) + "\n"), stream=out, approve="never")
    try:
        assert shell.run() == 0, out.getvalue()
    finally:
        system.close()
    text = out.getvalue()
    assert "restored /notes/todo.txt" in text and "removed /notes/new.txt (the request made it)" in text
    first_undo, rest = text.split("restored /notes/todo.txt", 1)
    assert "call mum" in rest.split("\n")[1]     # after the first undo: the shell's own write is back
    assert "nothing to undo" in rest
    assert text.rstrip().endswith("buy milk")   # after the next two: as before the shell
