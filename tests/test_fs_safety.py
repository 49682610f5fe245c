"""Host files are untrusted: size checked before reading, names that drive a terminal shown
escaped, control and bidi characters refused in names, and `fs get` refusing before it writes
anything when the host has something in the way. Through the real CLI."""

from __future__ import annotations

import os
import time

import pytest

from conftest import assert_one_line_error, run_llmos
from llmos_shell.errors import UsageError
from llmos_shell.fs.files import MAX_FILE_BYTES
from llmos_shell.fs.paths import normalise


def test_put_checks_the_size_before_reading(home, tmp_path):
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:   # sparse: 513 MiB that take no disk and would take RAM to read
        handle.truncate(MAX_FILE_BYTES + (1 << 20))
    started = time.monotonic()
    result = run_llmos("fs", "put", str(big), "/big.bin", home=home)
    line = assert_one_line_error(result, 1)
    assert f"file too large" in line and f"({MAX_FILE_BYTES + (1 << 20)} bytes" in line
    assert time.monotonic() - started < 20
    assert run_llmos("fs", "ls", "/", home=home).stdout.strip() == ""


@pytest.mark.parametrize("name", ["red\x1b[31mtext\x07.txt", "next\x85line.txt", "evil\u202etxt.exe"])
def test_host_names_with_terminal_controls_are_escaped_and_refused(home, tmp_path, name):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_text("x")
    (folder / "fine.txt").write_text("fine")
    put = run_llmos("fs", "put", str(folder), "/in", home=home)
    assert put.returncode == 0, put.stderr
    for raw in ("\x1b", "\x07", "\x85", "\u202e"):
        assert raw not in put.stdout and raw not in put.stderr
    assert "skipped" in put.stderr and "name not valid" in put.stderr
    assert ("\\x1b" in put.stderr) or ("\\x85" in put.stderr) or ("\\u202e" in put.stderr)
    assert run_llmos("fs", "ls", "/in", home=home).stdout.split() == ["fine.txt"]
    # the file itself, named on the command line: refused, the error line escaped
    single = run_llmos("fs", "put", str(folder / name), "/notes/", home=home)
    line = assert_one_line_error(single, 2)
    assert not any(raw in line for raw in ("\x1b", "\x07", "\x85", "\u202e"))


@pytest.mark.parametrize("path", ["/notes/a\x85b.txt", "/notes/evil\u202etxt.exe", "/x\u2066y", "/a\x9bb"])
def test_c1_and_bidi_controls_are_refused_in_names(path, home):
    with pytest.raises(UsageError, match="control character"):
        normalise(path)
    result = run_llmos("fs", "put", "-", path, input="text", home=home)
    assert "control character" in assert_one_line_error(result, 2)


def test_get_refuses_before_writing_when_a_symlink_is_deep_inside(home, tmp_path):
    for path, text in (("/data/a.txt", "a"), ("/data/sub/deep/b.txt", "b"), ("/data/z.txt", "z")):
        assert run_llmos("fs", "put", "-", path, input=text, home=home).returncode == 0
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "data" / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "data" / "sub" / "deep")
    result = run_llmos("fs", "get", "/data", str(out), home=home)
    line = assert_one_line_error(result, 1)
    assert "refusing to export into" in line and "nothing was written" in line
    assert sorted(p.name for p in (out / "data").iterdir()) == ["sub"]   # a.txt, z.txt: not written
    assert list(elsewhere.iterdir()) == []
    # with the link gone, the same export writes everything
    os.unlink(out / "data" / "sub" / "deep")
    assert run_llmos("fs", "get", "/data", str(out), home=home).returncode == 0
    assert (out / "data" / "sub" / "deep" / "b.txt").read_text() == "b"


def test_get_no_clobber_refuses_before_writing_anything(home, tmp_path):
    for path in ("/data/a.txt", "/data/b.txt"):
        assert run_llmos("fs", "put", "-", path, input="new", home=home).returncode == 0
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "b.txt").write_text("old")
    result = run_llmos("fs", "get", "-n", "/data", str(out), home=home)
    assert "already exists" in assert_one_line_error(result, 1)
    assert not (out / "data" / "a.txt").exists() and (out / "data" / "b.txt").read_text() == "old"
