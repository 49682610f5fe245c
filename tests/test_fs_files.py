"""Every file operation of the SQLite filesystem, its errors, and binary round trips."""

from __future__ import annotations

import hashlib
import io
import threading
import time
import wave

import pytest
from fs_fixtures import fs  # noqa: F401

from llmos_shell.errors import FsError, UsageError

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82")


def make_wav(seconds: float = 0.1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(bytes((i * 37) % 256 for i in range(int(16000 * seconds) * 2)))
    return buffer.getvalue()


# --- write / read / stat ---------------------------------------------------------------------

def test_write_text_and_read_back(fs):
    info = fs.write("/notes/a.txt", "héllo\nwörld\n")
    assert info["path"] == "/notes/a.txt" and info["kind"] == "file" and info["text"] is True
    assert info["mime"] == "text/plain"
    assert info["size"] == len("héllo\nwörld\n".encode())
    assert info["sha256"] == hashlib.sha256("héllo\nwörld\n".encode()).hexdigest()
    assert fs.read("/notes/a.txt") == "héllo\nwörld\n".encode()
    assert fs.read_text("notes/a.txt") == "héllo\nwörld\n"
    assert fs.stat("/notes/a.txt") == info
    assert fs.stat("/notes")["kind"] == "dir" and fs.stat("/notes")["mime"] == "inode/directory"


def test_write_creates_parents_unless_told_not_to(fs):
    fs.write("/a/b/c/d.txt", "x")
    assert [e["path"] for e in fs.walk("/a")] == ["/a", "/a/b", "/a/b/c", "/a/b/c/d.txt"]
    with pytest.raises(FsError, match="no such directory: /z"):
        fs.write("/z/d.txt", "x", parents=False)
    assert not fs.exists("/z")


def test_overwrite_keeps_created_and_changes_modified(fs):
    first = fs.write("/f.txt", "one")
    time.sleep(0.01)
    second = fs.write("/f.txt", "two!")
    assert second["created"] == first["created"]
    assert second["modified"] > first["modified"]
    assert fs.read("/f.txt") == b"two!" and fs.stat("/f.txt")["size"] == 4


def test_append(fs):
    fs.write("/log.txt", "a\n", append=True)  # append to nothing creates
    fs.write("/log.txt", "b\n", append=True)
    fs.write("/log.txt", b"c\n", append=True)
    assert fs.read_text("/log.txt") == "a\nb\nc\n"
    assert fs.stat("/log.txt")["sha256"] == hashlib.sha256(b"a\nb\nc\n").hexdigest()
    assert fs.grep("c") == [{"path": "/log.txt", "line": 3, "text": "c"}]


def test_append_binary_keeps_bytes_and_type(fs):
    fs.write("/s.wav", make_wav(0.01))
    fs.write("/s.wav", b"\x00\xff" * 10, append=True)
    assert fs.read("/s.wav") == make_wav(0.01) + b"\x00\xff" * 10
    assert fs.stat("/s.wav")["mime"] == "audio/wav"


@pytest.mark.parametrize("name, data, mime, text", [
    ("/img.png", PNG, "image/png", False),
    ("/noext", PNG, "image/png", False),
    ("/sound.wav", make_wav(), "audio/wav", False),
    ("/all_bytes.bin", bytes(range(256)) * 4, "application/octet-stream", False),
    ("/blob", bytes(range(256)), "application/octet-stream", False),
    ("/empty", b"", "text/plain", True),
    ("/nul.txt", b"abc\x00def", "text/plain", False),
    ("/latin1.txt", "café".encode("latin-1"), "text/plain", False),
    ("/readme.md", b"# Title\n", "text/markdown", True),
    ("/data.json", b'{"a": 1}', "application/json", True),
    ("/pic.svg", b"<svg/>", "image/svg+xml", True),
])
def test_binary_and_text_round_trip_byte_for_byte(fs, name, data, mime, text):
    info = fs.write(name, data)
    assert fs.read(name) == data
    assert (info["mime"], info["text"], info["size"]) == (mime, text, len(data))
    assert info["sha256"] == hashlib.sha256(data).hexdigest()


def test_random_binary_round_trip(fs):
    import random

    rng = random.Random(4)
    blobs = {f"/r/{i}.bin": rng.randbytes(rng.randrange(0, 70_000)) for i in range(12)}
    with fs.transaction():
        for path, data in blobs.items():
            fs.write(path, data)
    for path, data in blobs.items():
        assert fs.read(path) == data


def test_explicit_mime_wins(fs):
    assert fs.write("/x.dat", b"RIFF", mime="audio/wav")["mime"] == "audio/wav"


def test_read_text_of_binary_is_a_clear_error(fs):
    fs.write("/img.png", PNG)
    with pytest.raises(FsError, match=r"not a text file: /img.png \(image/png, \d+ bytes\)"):
        fs.read_text("/img.png")


def test_binary_files_are_not_indexed(fs):
    fs.write("/a.bin", b"\xffneedle\xfe")
    fs.write("/b.txt", "needle")
    assert [m["path"] for m in fs.grep("needle")] == ["/b.txt"]
    assert [m["path"] for m in fs.grep("needle", regex=True)] == ["/b.txt"]


@pytest.mark.parametrize("action", [
    lambda fs: fs.read("/missing"),
    lambda fs: fs.read_text("/missing"),
    lambda fs: fs.stat("/missing"),
    lambda fs: fs.ls("/missing"),
    lambda fs: fs.rm("/missing"),
    lambda fs: fs.mv("/missing", "/x"),
    lambda fs: fs.cp("/missing", "/x"),
    lambda fs: fs.find("*", "/missing"),
    lambda fs: fs.grep("x", path="/missing"),
])
def test_missing_file_errors(fs, action):
    with pytest.raises(FsError, match="no such file: /missing"):
        action(fs)


def test_type_errors(fs):
    fs.write("/file.txt", "x")
    fs.mkdir("/dir")
    with pytest.raises(FsError, match="is a directory: /dir"):
        fs.read("/dir")
    with pytest.raises(FsError, match="is a directory: /dir"):
        fs.write("/dir", "x")
    with pytest.raises(FsError, match="is a directory: /"):
        fs.write("/", "x")
    with pytest.raises(FsError, match="not a directory: /file.txt"):
        fs.write("/file.txt/inner", "x")
    with pytest.raises(FsError, match="not a directory: /file.txt"):
        fs.mkdir("/file.txt/sub")
    with pytest.raises(UsageError):
        fs.write("/x", 12)
    with pytest.raises(UsageError):
        fs.write("/x", "lone \ud800")


# --- directories ---------------------------------------------------------------------------

def test_mkdir(fs):
    info = fs.mkdir("/a/b/c")
    assert info["kind"] == "dir" and info["path"] == "/a/b/c"
    assert fs.mkdir("/a/b/c")["path"] == "/a/b/c"  # -p: existing is fine
    with pytest.raises(FsError, match="already exists: /a/b/c"):
        fs.mkdir("/a/b/c", parents=False)
    with pytest.raises(FsError, match="no such directory: /x"):
        fs.mkdir("/x/y", parents=False)
    assert fs.mkdir("/x", parents=False)["path"] == "/x"
    fs.write("/f", "x")
    with pytest.raises(FsError, match="file exists: /f"):
        fs.mkdir("/f")
    assert fs.mkdir("/")["path"] == "/"


def test_ls_sorted_long_form(fs):
    fs.write("/d/b.txt", "bb")
    fs.write("/d/a.png", PNG)
    fs.mkdir("/d/c")
    entries = fs.ls("/d")
    assert [e["name"] for e in entries] == ["a.png", "b.txt", "c"]
    assert [e["kind"] for e in entries] == ["file", "file", "dir"]
    assert entries[0]["size"] == len(PNG) and entries[1]["size"] == 2
    assert all(isinstance(e["modified"], float) and isinstance(e["created"], float) for e in entries)
    assert fs.ls("/d/b.txt") == [fs.stat("/d/b.txt")]
    assert [e["name"] for e in fs.ls("/")] == ["d"]
    assert fs.ls("/d/c") == []


def test_rm(fs):
    fs.write("/d/sub/a.txt", "findme")
    fs.write("/d/b.txt", "x")
    fs.mkdir("/empty")
    with pytest.raises(FsError, match="directory not empty: /d"):
        fs.rm("/d")
    assert fs.rm("/empty") == 1  # an empty directory needs no recursive
    assert fs.rm("/d/b.txt") == 1
    assert fs.rm("/d", recursive=True) == 3
    assert not fs.exists("/d") and not fs.exists("/d/sub/a.txt")
    assert fs.grep("findme") == []  # the index forgets removed files
    with pytest.raises(UsageError, match="refusing to remove /"):
        fs.rm("/", recursive=True)


def test_rm_does_not_touch_siblings_with_common_prefix(fs):
    for path in ("/a/x", "/a b/x", "/a-/x", "/a0/x", "/ab/x", "/a.txt"):
        fs.write(path, "x")
    fs.rm("/a", recursive=True)
    assert sorted(e["path"] for e in fs.ls("/")) == ["/a b", "/a-", "/a.txt", "/a0", "/ab"]


# --- mv / cp -------------------------------------------------------------------------------

def test_mv_file_rename_and_into_directory(fs):
    fs.write("/a.txt", "alpha")
    fs.mkdir("/dir")
    assert fs.mv("/a.txt", "/b.txt")["path"] == "/b.txt"
    assert fs.mv("/b.txt", "/dir")["path"] == "/dir/b.txt"
    assert fs.read("/dir/b.txt") == b"alpha"
    assert not fs.exists("/a.txt") and not fs.exists("/b.txt")
    assert fs.grep("alpha") == [{"path": "/dir/b.txt", "line": 1, "text": "alpha"}]
    assert fs.mv("/dir/b.txt", "/dir")["path"] == "/dir/b.txt"  # onto itself: nothing happens


def test_mv_file_replaces_file(fs):
    fs.write("/a", "new")
    fs.write("/b", "old")
    fs.mv("/a", "/b")
    assert fs.read("/b") == b"new" and not fs.exists("/a")


def test_mv_directory_moves_everything_below(fs):
    fs.write("/src/x/1.txt", "one")
    fs.write("/src/2.png", PNG)
    fs.write("/srcfile", "sibling")
    fs.mv("/src", "/dst")
    assert [e["path"] for e in fs.walk("/dst")] == ["/dst", "/dst/2.png", "/dst/x", "/dst/x/1.txt"]
    assert fs.read("/dst/2.png") == PNG and fs.read("/srcfile") == b"sibling"
    assert [e["name"] for e in fs.ls("/dst/x")] == ["1.txt"]
    fs.mkdir("/into")
    fs.mv("/dst", "/into")
    assert fs.read_text("/into/dst/x/1.txt") == "one"
    assert fs.integrity_check() == "ok"


def test_mv_errors(fs):
    fs.write("/d/sub/f", "x")
    fs.write("/file", "x")
    fs.write("/other/d/keep", "x")
    with pytest.raises(FsError, match="inside itself"):
        fs.mv("/d", "/d/sub")
    with pytest.raises(FsError, match="inside itself"):
        fs.mv("/d", "/d/new")
    with pytest.raises(FsError, match="already exists: /other/d"):
        fs.mv("/d", "/other")
    with pytest.raises(FsError, match="no such directory: /nowhere"):
        fs.mv("/file", "/nowhere/file")
    with pytest.raises(UsageError):
        fs.mv("/", "/x")


def test_cp_file_and_tree(fs):
    fs.write("/t/a.txt", "alpha")
    fs.write("/t/sub/b.bin", bytes(range(256)))
    copy = fs.cp("/t/a.txt", "/copy.txt")
    assert copy["path"] == "/copy.txt" and fs.read("/copy.txt") == b"alpha"
    assert copy["sha256"] == fs.stat("/t/a.txt")["sha256"]
    fs.cp("/t", "/t2")
    assert [e["path"] for e in fs.walk("/t2")] == ["/t2", "/t2/a.txt", "/t2/sub", "/t2/sub/b.bin"]
    assert fs.read("/t2/sub/b.bin") == bytes(range(256))
    fs.write("/t2/a.txt", "changed")
    assert fs.read("/t/a.txt") == b"alpha"  # a copy, not a link
    assert sorted(m["path"] for m in fs.grep("alpha")) == ["/copy.txt", "/t/a.txt"]
    fs.cp("/t/a.txt", "/t2")  # into a directory, over a file
    assert fs.read("/t2/a.txt") == b"alpha"
    with pytest.raises(FsError, match="inside itself"):
        fs.cp("/t", "/t/sub")
    with pytest.raises(FsError, match="same file"):
        fs.cp("/t/a.txt", "/t/a.txt")
    with pytest.raises(FsError, match="same file"):
        fs.cp("/t", "/t2/..")  # that is "/", so "/t" itself
    fs.mkdir("/t3/t")
    with pytest.raises(FsError, match="already exists: /t3/t"):
        fs.cp("/t", "/t3")
    assert fs.integrity_check() == "ok"


# --- find / grep ---------------------------------------------------------------------------

@pytest.fixture
def tree(fs):
    fs.write("/notes/todo.md", "# Todo\nbuy milk\nwrite the quarterly report\n")
    fs.write("/notes/old/2023.md", "Running late again.\nThe report was fine.\n")
    fs.write("/notes/ideas.txt", "an OS whose CPU is a language model\n")
    fs.write("/data/report.csv", "quarter,revenue\nQ1,100\n")
    fs.write("/data/photo.png", PNG)
    return fs


def test_find_names_and_paths(tree):
    fs = tree
    assert [e["path"] for e in fs.find("*.md")] == ["/notes/old/2023.md", "/notes/todo.md"]
    assert [e["path"] for e in fs.find("report*")] == ["/data/report.csv"]
    assert [e["path"] for e in fs.find("*.md", "/notes/old")] == ["/notes/old/2023.md"]
    assert [e["path"] for e in fs.find("notes/*.md")] == ["/notes/todo.md"]
    assert [e["path"] for e in fs.find("/notes/**/*.md")] == ["/notes/old/2023.md", "/notes/todo.md"]
    assert [e["path"] for e in fs.find("old/*", "/notes")] == ["/notes/old/2023.md"]
    assert [e["path"] for e in fs.find("old")] == ["/notes/old"]
    assert fs.find("*.nothing") == []
    with pytest.raises(UsageError):
        fs.find("")


def test_grep_words_with_fts(tree):
    fs = tree
    assert fs.grep("report") == [  # the content, not the name: report.csv does not say "report"
        {"path": "/notes/old/2023.md", "line": 2, "text": "The report was fine."},
        {"path": "/notes/todo.md", "line": 3, "text": "write the quarterly report"},
    ]
    assert fs.grep("run") == [{"path": "/notes/old/2023.md", "line": 1, "text": "Running late again."}]  # stemmed
    assert [m["line"] for m in fs.grep("milk report")] == [2, 3]  # both words in the file; lines with either
    assert fs.grep("milk fine") == []  # not in one file
    assert [m["path"] for m in fs.grep("quart*")] == ["/data/report.csv", "/notes/todo.md"]
    assert [m["path"] for m in fs.grep("report", path="/notes/old")] == ["/notes/old/2023.md"]
    assert fs.grep('NOT OR "AND" :') == []  # FTS syntax is taken as words, never an error
    with pytest.raises(UsageError):
        fs.grep("--- !!")


def test_grep_regex(tree):
    fs = tree
    assert fs.grep(r"Q\d,\d+", regex=True) == [{"path": "/data/report.csv", "line": 2, "text": "Q1,100"}]
    assert [m["path"] for m in fs.grep("^# ", regex=True)] == ["/notes/todo.md"]
    assert fs.grep("running", regex=True) == []
    assert len(fs.grep("running", regex=True, ignore_case=True)) == 1
    assert len(fs.grep(".", regex=True, limit=2)) == 2
    with pytest.raises(UsageError, match="bad regular expression"):
        fs.grep("(", regex=True)


def test_search_names_and_lines(tree):
    result = tree.search("report")
    assert result["names"] == ["/data/report.csv"]
    assert [m["path"] for m in result["lines"]] == ["/notes/old/2023.md", "/notes/todo.md"]


# --- transactions and threads ----------------------------------------------------------------

def test_transaction_rolls_back_everything_on_error(fs):
    fs.write("/keep.txt", "keep")
    with pytest.raises(RuntimeError):
        with fs.transaction():
            fs.write("/a.txt", "a")
            fs.rm("/keep.txt")
            fs.add_message(fs.create_process("p"), "user", "hello")
            raise RuntimeError("boom")
    assert not fs.exists("/a.txt") and fs.read("/keep.txt") == b"keep"
    assert fs.processes() == []


def test_nested_transaction_is_a_savepoint(fs):
    with fs.transaction():
        fs.write("/outer", "1")
        with pytest.raises(FsError):
            with fs.transaction():
                fs.write("/inner", "2")
                fs.read("/missing")
        fs.write("/outer2", "3")
    assert fs.exists("/outer") and fs.exists("/outer2") and not fs.exists("/inner")


def test_failed_operation_leaves_no_partial_change(fs):
    fs.write("/d/x", "x")
    fs.write("/other/d/y", "y")
    with pytest.raises(FsError):
        fs.mv("/d", "/other")
    assert fs.read("/d/x") == b"x"


def test_threads_share_one_filesystem(fs):
    errors = []

    def worker(n):
        try:
            for i in range(40):
                fs.write(f"/t{n}/{i}.txt", f"thread {n} item {i}")
                assert fs.read_text(f"/t{n}/{i}.txt") == f"thread {n} item {i}"
                fs.ls("/")
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(len(fs.ls(f"/t{n}")) for n in range(4)) == 160


def test_closed_filesystem_says_so(tmp_path):
    from llmos_shell.fs import Filesystem

    fs = Filesystem.open(tmp_path / "x.db")
    fs.close()
    fs.close()  # idempotent
    with pytest.raises(FsError, match="closed"):
        fs.ls("/")
