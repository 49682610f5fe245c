"""Path normalisation: examples, and Hypothesis fuzzing that nothing escapes the root or crashes."""

from __future__ import annotations

import pytest
from fs_fixtures import fs  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmos_shell.errors import UsageError
from llmos_shell.fs.paths import (MAX_NAME_BYTES, MAX_PATH_CHARS, basename, glob_regex, is_within,
                                  normalise, parent, subtree_bounds)


@pytest.mark.parametrize("raw, cwd, expected", [
    ("/", "/", "/"),
    ("/a/b", "/", "/a/b"),
    ("a/b", "/", "/a/b"),
    ("a/b/", "/", "/a/b"),
    ("//a///b//", "/", "/a/b"),
    ("./a/./b/.", "/", "/a/b"),
    ("a/../b", "/", "/b"),
    ("..", "/", "/"),
    ("../../..", "/", "/"),
    ("/../../etc/passwd", "/", "/etc/passwd"),
    ("x/../../../y", "/home", "/y"),
    ("notes", "/home/me", "/home/me/notes"),
    ("../you", "/home/me", "/home/you"),
    (".", "/home/me", "/home/me"),
    ("...", "/", "/..."),
    ("a b/c\\d", "/", "/a b/c\\d"),
    ("caf\u0065\u0301", "/", "/caf\u00e9"),  # decomposed é becomes composed (NFC)
])
def test_normalise_examples(raw, cwd, expected):
    assert normalise(raw, cwd=cwd) == expected


@pytest.mark.parametrize("bad", ["", "a\x00b", "a\nb", "tab\there", "x" * (MAX_PATH_CHARS + 1),
                                 "/" + "n" * (MAX_NAME_BYTES + 1), "/é" * 200 + "/" + "é" * 128,
                                 "lone\ud800surrogate", None, 42, b"/bytes"])
def test_normalise_refuses(bad):
    with pytest.raises(UsageError):
        normalise(bad)


def test_name_limit_counts_bytes_not_characters():
    assert normalise("/" + "é" * 127) == "/" + "é" * 127  # 254 bytes
    with pytest.raises(UsageError, match="255 bytes"):
        normalise("/" + "é" * 128)  # 256 bytes


def test_depth_limit():
    with pytest.raises(UsageError, match="deeper"):
        normalise("/a" * 300)


def test_helpers():
    assert parent("/a/b") == "/a" and parent("/a") == "/" and parent("/") == "/"
    assert basename("/a/b.txt") == "b.txt" and basename("/") == ""
    assert is_within("/a/b", "/a") and is_within("/a", "/a") and is_within("/x", "/")
    assert not is_within("/ab", "/a") and not is_within("/a", "/a/b")
    low, high = subtree_bounds("/a")
    inside = ["/a/b", "/a/ b", "/a/\U0010ffff", "/a/b/c"]
    outside = ["/a", "/ab", "/a b", "/a0", "/b", "/a.txt", "/a-"]
    assert all(low < p < high for p in inside)
    assert not any(low < p < high for p in outside)


@pytest.mark.parametrize("pattern, matches, misses", [
    ("*.txt", ["a.txt", ".txt"], ["a.txt.bak", "a/b.txt"]),
    ("?.md", ["a.md"], ["ab.md"]),
    ("[ab]*", ["apple", "b"], ["cat"]),
    ("[!ab]*", ["cat"], ["apple"]),
    ("/n/**/*.md", ["/n/a.md", "/n/x/y/a.md"], ["/m/a.md"]),
    ("/n/*", ["/n/a"], ["/n/a/b"]),
    ("/n/**", ["/n/a/b"], ["/m/a"]),
    ("a[", ["a["], ["a"]),
    ("(x)+|", ["(x)+|"], ["x"]),
])
def test_glob(pattern, matches, misses):
    regex = glob_regex(pattern)
    assert all(regex.fullmatch(m) for m in matches)
    assert not any(regex.fullmatch(m) for m in misses)


# --- fuzzing ------------------------------------------------------------------------------

SEGMENTS = st.sampled_from(["..", ".", "", "a", "b", "..a", "a..", "~", " ", "\\", "é", "e\u0301", "%2e%2e"])
TRICKY = st.lists(SEGMENTS, max_size=12).map("/".join) | st.lists(SEGMENTS, max_size=12).map(lambda s: "/" + "/".join(s))


def assert_normal(result: str) -> None:
    assert result.startswith("/")
    assert result == "/" or not result.endswith("/")
    segments = result.split("/")[1:]
    if result != "/":
        assert all(s not in ("", ".", "..") for s in segments)
    assert len(result) <= MAX_PATH_CHARS
    assert "\x00" not in result
    assert normalise(result) == result  # idempotent


@given(path=st.text(max_size=300) | TRICKY, cwd=st.text(max_size=60) | TRICKY | st.just("/"))
@settings(max_examples=1500, deadline=None)
def test_fuzz_normalise_never_escapes_or_crashes(path, cwd):
    try:
        result = normalise(path, cwd=cwd)
    except UsageError:
        return
    assert_normal(result)
    # Whatever the `..`s, the result is inside the root, and a relative path stays below cwd
    # unless it climbs with "..".
    if not path.startswith("/") and ".." not in path.split("/"):
        assert is_within(result, normalise(cwd))


@given(st.lists(SEGMENTS, max_size=20))
@settings(max_examples=500, deadline=None)
def test_fuzz_dotdot_counts(segments):
    """`..` removes exactly one real segment, or nothing at the root: compare with a tiny model."""
    model: list[str] = []
    for seg in segments:
        if seg in ("", "."):
            continue
        if seg == "..":
            if model:
                model.pop()
        else:
            model.append(seg)
    expected = normalise("/" + "/".join(model)) if model else "/"
    assert normalise("/" + "/".join(segments)) == expected
    assert normalise("/".join(segments) or ".", cwd="/") == expected


@given(st.text(max_size=40))
@settings(max_examples=500, deadline=None)
def test_fuzz_glob_never_crashes(pattern):
    try:
        regex = glob_regex(pattern)
    except UsageError:
        return
    regex.fullmatch("/some/path.txt")


@given(path=st.text(min_size=1, max_size=80) | TRICKY, data=st.binary(max_size=64))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_filesystem_paths(fs, path, data):  # noqa: F811
    """Any path either is refused as a usage error, or names one stored file inside the root."""
    try:
        target = normalise(path)
    except UsageError:
        with pytest.raises(UsageError):
            fs.write(path, data)
        return
    if target == "/" or fs.is_dir(target):
        return
    try:
        info = fs.write(path, data)
    except Exception as error:  # a parent is a file from an earlier example: a clean FsError
        assert type(error).__name__ == "FsError", error
        return
    assert info["path"] == target
    assert fs.read(target) == data
    assert fs.exists(path)


def reference_normalise(path: str) -> str:
    """A slow, obviously right model of normalise for ASCII paths without control characters."""
    parts: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            parts = parts[:-1]
        elif segment not in ("", "."):
            parts.append(segment)
    return "/" + "/".join(parts)


@given(st.lists(st.sampled_from(["", ".", "..", "...", ".a", "a.", "a", "bb", " ", "-", "x" * 255, "x" * 256]),
                max_size=10).map(lambda s: "/" + "/".join(s))
       | st.from_regex(r"/[ -~]{0,80}", fullmatch=True))
@settings(max_examples=1000, deadline=None)
def test_fuzz_fast_path_agrees_with_the_model(path):
    """Already-normal ASCII paths take a fast path: it must agree with the full algorithm."""
    try:
        result = normalise(path)
    except UsageError:
        assert any(len(s) > MAX_NAME_BYTES for s in path.split("/"))
        return
    assert result == reference_normalise(path)
