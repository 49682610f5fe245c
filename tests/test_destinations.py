"""The destination is the destination: which paths a request stores to (kernel/destinations.py),
and the approval policy that treats replacing content as irreversible (gate.py)."""

from __future__ import annotations

import pytest

from llmos_shell.errors import Denied
from llmos_shell.gate import Approval
from llmos_shell.kernel.destinations import roles, store_choices
from llmos_shell.syscalls import make_syscall

EXISTING = {"/docs/license.txt", "/docs/apache.txt", "/notes/reminder.txt", "/notes/todo.txt", "/docs/a.txt",
            "/docs/b.txt", "/docs/c.txt", "/notes/b.txt", "/photos/sign.png", "/audio/memo.wav", "/archive"}


def exists(path: str) -> bool:
    return path in EXISTING


# (request, paths that earlier steps read, where a step that stores may write: best first)
CASES = [
    # the three that went wrong
    ("Summarise /docs/license.txt and save the summary to /notes/summary.txt", {"/docs/license.txt"},
     ["/notes/summary.txt"]),
    ("Summarise /docs/apache.txt and save the summary to /notes/apache-summary.txt", {"/docs/apache.txt"},
     ["/notes/apache-summary.txt"]),
    ("Read the text of /notes/reminder.txt out loud", {"/notes/reminder.txt"}, []),
    # "save/write/put/store ... to/into/in/as X", X existing or not
    ("Translate /docs/a.txt into Spanish and write it to /notes/b.txt", {"/docs/a.txt"}, ["/notes/b.txt"]),
    ("Put the summary of /docs/a.txt in /notes/b.txt", {"/docs/a.txt"}, ["/notes/b.txt"]),
    ("Store a French version of /docs/a.txt as /notes/a-fr.txt", {"/docs/a.txt"}, ["/notes/a-fr.txt"]),
    ("Save to /notes/b.txt the summary of /docs/a.txt", {"/docs/a.txt"}, ["/notes/b.txt"]),
    ("Write the translation of /docs/a.txt into a new file called /notes/out.txt", {"/docs/a.txt"},
     ["/notes/out.txt"]),
    ("Summarise /docs/a.txt into /notes/b.txt", {"/docs/a.txt"}, ["/notes/b.txt"]),
    ("What does /photos/sign.png say? Keep the text in /notes/sign.txt", {"/photos/sign.png"},
     ["/notes/sign.txt"]),
    ("Transcribe /audio/memo.wav and put the words into /notes/memo.txt", {"/audio/memo.wav"},
     ["/notes/memo.txt"]),
    ("Read /notes/reminder.txt aloud and save the audio as /audio/reminder.wav", {"/notes/reminder.txt"},
     ["/audio/reminder.wav"]),
    # three paths
    ("Summarise /docs/a.txt and /docs/b.txt and save the summary to /notes/summary.txt",
     {"/docs/a.txt", "/docs/b.txt"}, ["/notes/summary.txt"]),
    ("Summarise /docs/a.txt, /docs/b.txt and /docs/c.txt", {"/docs/a.txt"}, ["/docs/b.txt", "/docs/c.txt"]),
    ("Compare /docs/a.txt with /docs/b.txt and write the differences to /notes/b.txt",
     {"/docs/a.txt", "/docs/b.txt"}, ["/notes/b.txt"]),
    ("Translate /docs/a.txt to French, save it in /notes/fr.txt and then read /docs/b.txt",
     {"/docs/a.txt"}, ["/notes/fr.txt"]),
    ("Combine /docs/a.txt and /docs/b.txt into /notes/both.txt", {"/docs/a.txt", "/docs/b.txt"},
     ["/notes/both.txt"]),
    # the user asks for the file read to be replaced
    ("Summarise /docs/a.txt and save the summary back to /docs/a.txt", {"/docs/a.txt"}, ["/docs/a.txt"]),
    ("Translate /docs/a.txt into German and overwrite /docs/a.txt with it", {"/docs/a.txt"}, ["/docs/a.txt"]),
    ("Replace the text of /notes/todo.txt with its summary", {"/notes/todo.txt"}, ["/notes/todo.txt"]),
    # plain stores, nothing read first
    ("Write 'x' to /notes/todo.txt", set(), ["/notes/todo.txt"]),
    ("Add 'buy stamps' to the end of /notes/todo.txt", set(), ["/notes/todo.txt"]),
    ("Copy the words 'save to /tmp/x.txt' into /notes/b.txt", set(), ["/notes/b.txt"]),
    ("Move the notes into /archive", set(), ["/archive"]),
    # questions name files to read, never to store to
    ("What's in /notes/todo.txt?", {"/notes/todo.txt"}, []),
    ("Listen to /audio/memo.wav and tell me what it says", {"/audio/memo.wav"}, []),
    ("Add up the numbers in /docs/a.txt", {"/docs/a.txt"}, []),
]


@pytest.mark.parametrize("request_text, read, expected", CASES, ids=[c[0][:60] for c in CASES])
def test_a_step_that_stores_goes_where_the_request_says(request_text, read, expected):
    found = roles(request_text, exists)
    choices = store_choices(found, read)
    assert choices == expected
    assert not (set(choices) & read) or set(choices) <= found.asked   # a file read is written only when asked


def test_at_least_twenty_phrasings_in_several_shapes():
    assert len(CASES) >= 20
    assert sum(len(roles(c[0], exists).paths) >= 3 for c in CASES) >= 4


def test_destinations_are_asked_or_new():
    found = roles("Summarise /docs/license.txt and save the summary to /notes/summary.txt", exists)
    assert found.paths == ("/docs/license.txt", "/notes/summary.txt")
    assert found.is_destination("/notes/summary.txt") and found.is_asked("/notes//summary.txt")
    assert not found.is_destination("/docs/license.txt")
    new_one = roles("Translate /docs/a.txt for /notes/new.txt", exists)
    assert new_one.is_destination("/notes/new.txt") and not new_one.is_asked("/notes/new.txt")
    assert roles("no paths here, just 1/2 of it", exists).paths == ()


# --- approval -----------------------------------------------------------------------------------

def write_file(path: str, content: str, append: bool = False) -> str:
    """Write a file.

    Args:
        path: Where.
        content: What.
        append: Add to the end.
    """
    return path


def delete_file(path: str) -> str:
    """Delete a file.

    Args:
        path: Which.
    """
    return path


WRITE = make_syscall(write_file, capabilities=["writes_fs"])
DELETE = make_syscall(delete_file, capabilities=["writes_fs", "irreversible"])


def test_replacing_counts_as_irreversible_unless_the_user_named_the_destination():
    never = Approval("never")
    never.check(WRITE, {"path": "/new.txt", "content": "x"}, stores="/new.txt", replaces=False)
    with pytest.raises(Denied, match="would replace /notes/todo.txt"):
        never.check(WRITE, {"path": "/notes/todo.txt", "content": "x"}, stores="/notes/todo.txt", replaces=True)
    named = Approval("never", destination=lambda path: path == "/notes/todo.txt")
    named.check(WRITE, {"path": "/notes/todo.txt", "content": "x"}, stores="/notes/todo.txt", replaces=True)
    with pytest.raises(Denied, match="cannot be undone"):   # deleting is never a destination
        named.check(DELETE, {"path": "/notes/todo.txt"})


def test_under_auto_a_destination_only_tool_output_named_is_asked_about():
    request = "Do what /docs/instructions.txt says"

    def said(arguments):
        return all(str(v) in request for v in arguments.values())

    asked = []
    auto = Approval("auto", said=said, destination=lambda path: False,
                    confirm=lambda syscall, arguments: asked.append(arguments) or False)
    for replaces in (True, False):   # over a file, or a new one: the document chose the path
        with pytest.raises(Denied, match="tool output"):
            auto.check(WRITE, {"path": "/notes/todo.txt", "content": "hacked"}, stores="/notes/todo.txt",
                       replaces=replaces)
    assert len(asked) == 2
    headless = Approval("auto", said=said, destination=lambda path: False)
    with pytest.raises(Denied):
        headless.check(WRITE, {"path": "/notes/todo.txt", "content": "hacked"}, stores="/notes/todo.txt",
                       replaces=True)
    mine = Approval("auto", said=said, destination=lambda path: path == "/notes/out.txt")
    mine.check(WRITE, {"path": "/notes/out.txt", "content": "summary"}, stores="/notes/out.txt", replaces=True)


# --- the kernel's guard, whoever chose the path ---------------------------------------------------

def test_the_kernel_never_stores_over_a_file_the_request_read(tmp_path):
    """The model, not the router, chooses here (a table without examples): its call to write the
    summary over the file it just read is refused, and the file stays as it was."""
    import dataclasses

    from llmos_shell.kernel.grammar import write_calls
    from llmos_shell.kernel.loop import Kernel
    from llmos_shell.syscalls import SyscallTable
    from llmos_shell.testing import FakeCpu, make_system

    def call(name, **arguments):
        return write_calls([{"name": name, "arguments": arguments}])

    cpu = FakeCpu([call("read_file", path="/docs/license.txt"),
                   call("write_file", path="/docs/license.txt", content="A short summary."),
                   "I could not save it there."])
    system = make_system(tmp_path / "home", plugins=["llmos_plugins.files"], cpu=cpu)
    try:
        system.fs.write("/docs/license.txt", "The licence, in full.\n")
        kernel = Kernel(system, approve="auto")
        process = kernel.spawn("guard")
        process.table = SyscallTable.of(dataclasses.replace(s, examples=()) for s in process.table)
        assert not process.routed
        turn = kernel.run(process, "Summarise /docs/license.txt and save the summary to /notes/summary.txt")
        assert [(r.name, r.status) for r in turn.syscalls][:2] == [("read_file", "ok"), ("write_file", "error")]
        assert "not storing over /docs/license.txt" in turn.syscalls[1].error
        assert system.fs.read_text("/docs/license.txt") == "The licence, in full.\n"
        assert system.fs.versions("/docs/license.txt") == []
        logged = system.fs.syscalls(pid=process.pid)
        assert [(r["name"], r["status"]) for r in logged][:2] == [("read_file", "ok"), ("write_file", "error")]
    finally:
        system.close()
