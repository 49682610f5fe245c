"""Whose path is it (kernel/places.py), and how a whole result is shown (loop.shown with output "*")."""

from __future__ import annotations

import pytest

from llmos_shell.kernel.loop import shown
from llmos_shell.kernel.places import host_kind, inside, is_host, named_paths, places_in, takes_a_path
from llmos_shell.kernel.router import Reach
from llmos_shell.syscalls import SyscallError, make_syscall


def nothing_here(path: str) -> None:
    return None


def test_named_paths_finds_home_paths_and_never_their_tail():
    text = "List ~/data and /notes/x.txt, then ~ and 1/2 and ~/a/b.md"
    assert named_paths(text) == ["~/data", "/notes/x.txt", "~", "~/a/b.md"]


@pytest.mark.parametrize("path, in_llmos, places, host", [
    ("~/data", None, (), True),                       # the user's home is the host's
    ("/home/ann/report.txt", None, (), True),         # so are other homes
    ("/home/ann", None, (), True),
    ("/home/router.txt", "text/plain", (), False),    # unless the llmos filesystem has that path
    ("/home/hi.txt", None, (), False),                # a file in /home is nobody's home: llmos's
    ("/srv/photos/cat.jpg", None, ("/srv/photos",), True),   # inside a folder a server was given
    ("/srvx/photos", None, ("/srv",), False),         # a folder is not a prefix of a name
    ("/notes/new.txt", None, ("/srv/photos",), False),   # anything else is llmos's
])
def test_is_host(path, in_llmos, places, host):
    assert is_host(path, lambda p: in_llmos, places) is host


def test_inside_expands_the_home():
    assert inside("~/data/x.txt", "~/data") and inside("~/data", "~/data/")
    assert not inside("~/database", "~/data")


def test_host_kind_comes_from_the_name():
    assert host_kind("~/data") == "inode/directory"
    assert host_kind("~/data/todo.md").startswith("text/")
    assert host_kind("~/data/blob.zzz") is None


def test_the_places_a_server_is_given_are_its_path_arguments():
    args = ["--file", "~/data/x.txt=milk\\neggs", "--", "mcp-server-filesystem", "~/data", "/srv/photos/",
            "relative", "--repository", "/home/me/project", "--option=/etc/x"]
    assert places_in(args) == ("~/data", "/srv/photos", "/home/me/project")


def test_takes_a_path_reads_parameter_names():
    assert takes_a_path({"properties": {"path": {}}}) and takes_a_path({"properties": {"repoPath": {}}})
    assert takes_a_path({"properties": {"file_path": {}}}) and takes_a_path({"properties": {"source": {}}})
    assert not takes_a_path({"properties": {"direction": {}, "title": {}, "profile": {}}})


def test_a_syscall_s_places_are_host_paths():
    def tool(**arguments) -> str:
        return "ok"

    schema = {"type": "object", "properties": {"path": {"type": "string"}}}
    assert make_syscall(tool, name="fs.ls", description="List.", parameters=schema, places=["~/data"]).places == ("~/data",)
    with pytest.raises(SyscallError, match="places are host paths"):
        make_syscall(tool, name="fs.ls", description="List.", parameters=schema, places=["data"])


def test_what_an_unreachable_syscall_was_given_goes_to_its_stand_in_else_to_answering():
    reach = Reach(out=frozenset({"list_files", "delete_file"}), stand_in={"list_files": "fs.list_directory"})
    scores = reach.apply({"": 0.1, "list_files": 0.5, "delete_file": 0.2, "fs.list_directory": 0.1, "translate": 0.1})
    assert scores == pytest.approx({"": 0.3, "fs.list_directory": 0.6, "translate": 0.1})


def test_a_whole_result_is_shown_as_a_person_reads_it():
    assert shown({"content": "[FILE] a.txt\n[DIR] reports"}, "*") == "[FILE] a.txt\n[DIR] reports"
    assert shown({"notes": 2, "titles": ["dentist", "milk"]}, "*") == "notes: 2\ntitles: dentist, milk"
    assert shown("plain text", "*") == "plain text"
