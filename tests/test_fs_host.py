"""The host bridge: importing host files and folders, exporting without ever escaping the target."""

from __future__ import annotations

import hashlib

import os

import pytest
from fs_fixtures import fs  # noqa: F401

from llmos_shell.errors import FsError, UsageError


def snapshot(directory) -> dict[str, bytes | str]:
    """Everything under a host directory: files' bytes, links' targets."""
    seen = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            if name.startswith("llmos.db"):
                continue
            full = os.path.join(root, name)
            rel = os.path.relpath(full, directory)
            if os.path.islink(full):
                seen[rel] = "-> " + os.readlink(full)
            elif os.path.isfile(full):
                with open(full, "rb") as handle:
                    seen[rel] = handle.read()
    return seen


# --- import -------------------------------------------------------------------------------

def test_import_a_file(fs, tmp_path):
    host = tmp_path / "report.txt"
    host.write_text("quarterly numbers\n")
    summary = fs.import_host(host)
    assert summary == {"path": "/report.txt", "files": 1, "dirs": 0, "bytes": 18, "skipped": []}
    fs.mkdir("/inputs")
    assert fs.import_host(host, "/inputs")["path"] == "/inputs/report.txt"  # into a directory
    assert fs.import_host(host, "/renamed.md")["path"] == "/renamed.md"      # to a new name
    assert fs.read_text("/inputs/report.txt") == "quarterly numbers\n"
    assert fs.grep("quarterly", path="/inputs") == [{"path": "/inputs/report.txt", "line": 1,
                                                     "text": "quarterly numbers"}]


def test_import_a_folder_skips_links_and_special_files(fs, tmp_path):
    src = tmp_path / "project"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (src / "sub" / "deeper" / "c.md").write_text("# c")
    outside = tmp_path / "secret.txt"
    outside.write_text("do not import")
    (src / "link.txt").symlink_to(outside)
    (src / "linkdir").symlink_to(tmp_path)
    os.mkfifo(src / "pipe")
    summary = fs.import_host(src, "/")
    assert summary["path"] == "/project"
    assert (summary["files"], summary["dirs"], summary["bytes"]) == (3, 3, 5 + 256 + 3)
    assert sorted(os.path.basename(s["host"]) for s in summary["skipped"]) == ["link.txt", "linkdir", "pipe"]
    assert [e["path"] for e in fs.walk("/project")] == [
        "/project", "/project/a.txt", "/project/sub", "/project/sub/b.bin", "/project/sub/deeper",
        "/project/sub/deeper/c.md"]
    assert fs.read("/project/sub/b.bin") == bytes(range(256))
    assert fs.grep("import") == []


def test_import_errors(fs, tmp_path):
    with pytest.raises(FsError, match="no such host file"):
        fs.import_host(tmp_path / "missing")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FsError, match="not a regular file or folder"):
        fs.import_host(tmp_path / "fifo")


def test_import_is_all_or_nothing(fs, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.txt").write_text("a")
    fs.write("/blocker", "a file where the folder should go")
    with pytest.raises(FsError):
        fs.import_host(src, "/blocker/inside")
    assert [e["path"] for e in fs.walk("/")] == ["/", "/blocker"]


# --- export -------------------------------------------------------------------------------

def test_export_a_file_and_a_tree_byte_for_byte(fs, tmp_path):
    fs.write("/notes/a.txt", "alpha")
    fs.write("/notes/sub/b.bin", bytes(range(256)) * 3)
    fs.mkdir("/notes/empty")
    out = tmp_path / "out"
    summary = fs.export("/notes/a.txt", out)
    assert summary == {"path": str(out / "a.txt"), "files": 1, "dirs": 0, "bytes": 5}
    summary = fs.export("/notes", out)
    assert (summary["files"], summary["dirs"], summary["bytes"]) == (2, 3, 5 + 768)
    assert snapshot(out) == {"a.txt": b"alpha", "notes/a.txt": b"alpha", "notes/sub/b.bin": bytes(range(256)) * 3}
    assert (out / "notes" / "empty").is_dir()
    assert abs(os.stat(out / "notes" / "a.txt").st_mtime - fs.stat("/notes/a.txt")["modified"]) < 1
    assert not [p for p in os.listdir(out / "notes") if ".llmos-" in p]  # no temporary files left


def test_export_root_puts_the_tree_in_the_directory(fs, tmp_path):
    fs.write("/x/y.txt", "y")
    fs.write("/z.txt", "z")
    fs.export("/", tmp_path / "all")
    assert snapshot(tmp_path / "all") == {"x/y.txt": b"y", "z.txt": b"z"}


def test_export_round_trip_through_import(fs, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    payloads = {"d/one.bin": os.urandom(5000), "two.txt": "zwei ✓".encode()}
    for rel, data in payloads.items():
        (src / rel).write_bytes(data)
    fs.import_host(src, "/")
    fs.export("/src", tmp_path / "back")
    assert snapshot(tmp_path / "back" / "src") == payloads


def test_export_overwrite_and_no_clobber(fs, tmp_path):
    fs.write("/a.txt", "new")
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(FsError, match="already exists on the host"):
        fs.export("/a.txt", tmp_path, overwrite=False)
    assert (tmp_path / "a.txt").read_text() == "old"
    fs.export("/a.txt", tmp_path)
    assert (tmp_path / "a.txt").read_text() == "new"


# --- export never escapes -----------------------------------------------------------------

@pytest.fixture
def victim(tmp_path):
    """A host directory outside the export target, which must never change."""
    directory = tmp_path / "victim"
    directory.mkdir()
    (directory / "passwd").write_text("root:x:0:0\n")
    return directory


def tamper(fs, path: str, name: str, kind: str = "file", content: bytes = b"evil") -> None:
    """Insert a row directly, as a hand-edited or hostile database could hold."""
    parent_id = fs.conn.execute("SELECT id FROM files WHERE path = '/'").fetchone()[0]
    digest = hashlib.sha256(content).hexdigest()
    fs.conn.execute("INSERT OR IGNORE INTO blobs (sha256, size, content, live, kept) VALUES (?, ?, ?, 1, 0)",
                    (digest, len(content), content))
    fs.conn.execute(
        "INSERT INTO files (path, parent, name, kind, is_text, mime, size, sha256, created, modified) "
        "VALUES (?, ?, ?, ?, 1, 'text/plain', ?, ?, 0, 0)", (path, parent_id, name, kind, len(content), digest))


@pytest.mark.parametrize("evil_path", [
    "/notes/../../victim/passwd",
    "/notes/../passwd",
    "/notes/./x",
    "/notes//x",
    "/notes/x/",
    "/notes/a\x00b",
    "/notes/" + "n" * 300,
])
def test_export_refuses_tampered_names(fs, tmp_path, victim, evil_path):
    fs.write("/notes/ok.txt", "fine")
    tamper(fs, evil_path, evil_path.rsplit("/", 1)[-1])
    target = tmp_path / "target"
    target.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="refusing to export"):
        fs.export("/notes", target)
    assert snapshot(tmp_path) == before  # checked before anything was written: not even ok.txt


def test_export_of_root_refuses_tampered_rows(fs, tmp_path, victim):
    fs.write("/fine.txt", "fine")
    tamper(fs, "/../victim/passwd", "passwd")
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="refusing to export"):
        fs.export("/", tmp_path / "target")
    assert snapshot(tmp_path) == before


def test_export_ignores_rows_outside_the_tree(fs, tmp_path, victim):
    fs.write("/fine.txt", "fine")
    tamper(fs, "relative/../../victim/passwd", "passwd")  # not under "/": not part of any export
    fs.export("/", tmp_path / "target")
    assert snapshot(tmp_path / "target") == {"fine.txt": b"fine"}
    assert (victim / "passwd").read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("path", ["../victim/passwd", "/../../victim/passwd", "../../../../etc/passwd"])
def test_dotdot_in_the_llmos_path_stays_inside_llmos(fs, tmp_path, victim, path):
    with pytest.raises(FsError, match="no such file"):
        fs.export(path, tmp_path / "target")
    assert (victim / "passwd").read_text() == "root:x:0:0\n"


def test_export_refuses_a_symlinked_directory_in_the_target(fs, tmp_path, victim):
    fs.write("/victim/passwd", "pwned")
    target = tmp_path / "target"
    target.mkdir()
    (target / "victim").symlink_to(victim)  # target/victim -> the real victim directory
    with pytest.raises(FsError, match="not a plain directory"):
        fs.export("/victim", target)
    assert (victim / "passwd").read_text() == "root:x:0:0\n"


def test_export_refuses_to_write_through_a_file_symlink(fs, tmp_path, victim):
    fs.write("/passwd", "pwned")
    target = tmp_path / "target"
    target.mkdir()
    (target / "passwd").symlink_to(victim / "passwd")
    with pytest.raises(FsError, match="symbolic link"):
        fs.export("/passwd", target)
    assert (victim / "passwd").read_text() == "root:x:0:0\n"
    assert os.path.islink(target / "passwd")


def test_export_replaces_a_hard_link_instead_of_writing_through_it(fs, tmp_path, victim):
    fs.write("/passwd", "pwned")
    target = tmp_path / "target"
    target.mkdir()
    os.link(victim / "passwd", target / "passwd")
    fs.export("/passwd", target)
    assert (target / "passwd").read_text() == "pwned"
    assert (victim / "passwd").read_text() == "root:x:0:0\n"


def test_export_into_a_symlinked_target_named_by_the_user_is_allowed(fs, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    fs.write("/a.txt", "a")
    fs.export("/a.txt", tmp_path / "alias")  # the user named it: following it is what they asked
    assert (real / "a.txt").read_text() == "a"


def test_export_into_a_file_is_a_clear_error(fs, tmp_path):
    (tmp_path / "file").write_text("x")
    fs.write("/a.txt", "a")
    with pytest.raises(FsError, match="cannot write to host directory"):
        fs.export("/a.txt", tmp_path / "file")
    fs.mkdir("/d")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "d").write_text("a file where a directory goes")
    with pytest.raises(FsError, match="not a plain directory"):
        fs.export("/d", tmp_path / "t")


def test_export_of_a_wide_deep_tree_keeps_few_files_open(fs, tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with fs.transaction():
        for i in range(300):  # more directories than the limit set below allows open at once
            fs.write(f"/t/d{i:03d}/x y/f.txt", str(i))
            fs.write(f"/t/d{i:03d} z/g.txt", str(i))  # sorts between d{i} and d{i}/..., by path
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
    try:
        summary = fs.export("/t", tmp_path / "out")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (summary["files"], summary["dirs"]) == (600, 901)
    assert (tmp_path / "out" / "t" / "d123" / "x y" / "f.txt").read_text() == "123"
    assert (tmp_path / "out" / "t" / "d123 z" / "g.txt").read_text() == "123"
