"""The router and the kernel's planned steps: which syscalls a request gets, pipes, outputs, paths.

The router runs for real (the MiniLM encoder from its PyPI package, no model); the kernel's
steps run with the scripted CPU and a test driver whose syscalls declare examples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_shell import hookimpl
from llmos_shell.errors import Denied
from llmos_shell.kernel.grammar import write_calls
from llmos_shell.kernel.loop import Kernel
from llmos_shell.kernel.router import Router, clauses, describe
from llmos_shell.testing import FakeCpu, make_system

RAN: list[tuple[str, dict]] = []


def read_note(path: str) -> str:
    """Read a text file.

    Args:
        path: The file to read.
    """
    RAN.append(("read_note", {"path": path}))
    return "Reminder: dinner with Ana at 7."


def shout(text: str, style: str = "caps") -> dict:
    """Repeat a text loudly.

    Args:
        text: What to shout.
        style: How to shout it.
    """
    RAN.append(("shout", {"text": text, "style": style}))
    return {"loud": text.upper() + "!", "style": style}


def store(path: str, content: str, append: bool = False) -> dict:
    """Store a text in a file.

    Args:
        path: Where to store it.
        content: The text.
        append: Add to the end instead of replacing.
    """
    RAN.append(("store", {"path": path, "content": content, "append": append}))
    return {"done": f"stored {len(content)} characters in {path}"}


def wipe(path: str) -> dict:
    """Delete a file for good.

    Args:
        path: The file to delete.
    """
    RAN.append(("wipe", {"path": path}))
    return {"done": f"wiped {path}"}


class Driver:
    @hookimpl
    def register_syscalls(self, register):
        register(read_note, reads=["text/*"], examples=[
            "What is in /notes/todo.txt?", "Read /docs/letter.txt", "Show me /notes/plan.md",
            "What does /notes/list.txt say?", "Open /docs/a.txt and tell me what it says"])
        register(shout, input="text", output="loud", examples=[
            "Shout 'hello there'", "Say 'watch out' loudly", "Yell 'fire'", "Shout this: we won the match",
            "and shout it", "Scream 'help' as loud as you can"])
        register(store, capabilities=["writes_fs"], input="content", output="done", examples=[
            "Store 'milk and eggs' in /notes/shop.txt", "Save 'call mum' to /notes/todo.txt",
            "and save it in /notes/x.txt", "Write 'hello' into /tmp/hi.txt", "then store it in /docs/out.txt"])
        register(wipe, capabilities=["writes_fs", "irreversible"], output="done", examples=[
            "Delete /notes/old.txt", "Remove the file /photos/cat.png", "Erase /tmp/log.txt", "rm /docs/x.txt",
            "Get rid of /downloads/setup.log"])


@pytest.fixture
def system(tmp_path):
    RAN.clear()
    cpu = FakeCpu()
    system = make_system(tmp_path, plugins=[], cpu=cpu)
    system.pm.register(Driver(), name="testdriver")
    from llmos_shell.plugins import PluginLoader

    PluginLoader(system.pm, system.table).register_syscalls()
    system.fs.write("/notes/dinner.txt", "Reminder: dinner with Ana at 7.")
    yield system
    system.close()


def call(name: str, **arguments) -> str:
    return write_calls([{"name": name, "arguments": arguments}])


# --- the router alone ---------------------------------------------------------------------

def test_clauses_split_actions_but_never_quotes():
    assert clauses("Translate 'salt and pepper' into French and save it in /notes/x.txt") == [
        "Translate 'salt and pepper' into French", "save it in /notes/x.txt"]
    assert clauses("Shout 'hi', then store it in /a.txt") == ["Shout 'hi'", "store it in /a.txt"]
    assert clauses("What is in /notes/todo.txt?") == ["What is in /notes/todo.txt?"]


def test_describe_names_paths_by_kind_and_hides_quoted_words():
    kinds = {"/photos/cat.png": "image/png", "/music": "inode/directory"}
    assert describe("What is on /photos/cat.png?", kinds.get) == "What is on the image file?"
    assert describe("List /music", kinds.get) == "List the folder"
    assert describe("Save 'buy milk' to /notes/new.txt", kinds.get) == "Save 'some text' to the text file"
    assert describe("Please summarise: " + "word " * 20, kinds.get) == "Please summarise: some text"
    # an apostrophe inside a word quotes nothing
    assert describe("What is Ana's number? It's in /data/people.csv", kinds.get).startswith("What is Ana's")


def test_plans_for_the_test_driver(system):
    router = Router()
    kinds = Kernel(system).kind_of

    def plan(text):
        return router.plan(text, system.table, kinds).names

    assert plan("Hello! How are you today?") == []
    assert plan("Who wrote Hamlet?") == []
    assert plan("Wipe /notes/dinner.txt") == ["wipe"]
    assert plan("Yell 'good morning'") == ["shout"]
    assert plan("What does /notes/dinner.txt say?") == ["read_note"]
    # a later clause adds a step; a syscall on text the request does not give reads the named file first
    assert plan("Shout 'we are open' and save it in /notes/sign.txt") == ["shout", "store"]
    assert plan("Shout /notes/dinner.txt") == ["read_note", "shout"]
    # the file to write is the target, not something to read first
    assert plan("Store 'more' in /notes/dinner.txt") == ["store"]


@pytest.mark.slow
def test_bundled_drivers_on_held_out_requests(tmp_path):
    """The bundled drivers' examples generalise: requests never looked at while choosing them."""
    from bench.router import kind_of_files  # the benchmark's own scoring, reused

    cases = [c for c in json.loads((Path(__file__).parents[1] / "bench/data/requests.json").read_text())
             if c["split"] == "held"]
    system = make_system(tmp_path, strict=True)
    try:
        router = Router()
        right = sum(router.plan(c["request"], system.table, kind_of_files(c.get("files", []))).names == c["plan"]
                    for c in cases)
    finally:
        system.close()
    assert right / len(cases) >= 0.85, f"{right} of {len(cases)}"


# --- the kernel's steps -------------------------------------------------------------------

def test_chat_gets_no_syscall_and_no_table_in_the_prompt(system):
    system.cpu.enqueue("Hello! I am fine.")
    kernel = Kernel(system)
    result = kernel.run(kernel.spawn("t"), "Hello! How are you today?")
    assert result.status == "ok" and result.output == "Hello! I am fine." and result.syscalls == []
    assert RAN == [] and "shout" not in system.cpu.prompts[-1]


def test_a_read_with_a_fixed_path_needs_no_model_call(system):
    system.cpu.enqueue("Ana, at 7.")
    kernel = Kernel(system)
    result = kernel.run(kernel.spawn("t"), "Who is dinner with? It says in /notes/dinner.txt")
    assert [r.name for r in result.syscalls] == ["read_note"]
    assert RAN == [("read_note", {"path": "/notes/dinner.txt"})]
    # read_note declares no output: the model answers from the result, asked once
    assert result.output == "Ana, at 7." and len(system.cpu.prompts) == 1


def test_quoted_text_is_piped_and_the_output_is_the_reply(system):
    # the model only decodes what the kernel cannot know (the style); the text comes from the quotes
    system.cpu.enqueue(call("shout", style="caps"))
    kernel = Kernel(system)
    result = kernel.run(kernel.spawn("t"), "Yell 'good morning'")
    assert RAN == [("shout", {"text": "good morning", "style": "caps"})]
    assert result.output == "GOOD MORNING!" and result.status == "ok"


def test_two_steps_pipe_the_first_output_into_the_second(system):
    system.cpu.enqueue(call("shout", style="caps"))
    kernel = Kernel(system)
    result = kernel.run(kernel.spawn("t"), "Shout 'we are open' and save it in /notes/sign.txt")
    assert [r.name for r in result.syscalls] == ["shout", "store"]
    # the path is the one the request names, the content the previous output; no flag nobody asked for
    assert RAN[-1] == ("store", {"path": "/notes/sign.txt", "content": "WE ARE OPEN!", "append": False})
    # what was made and where it went are both shown
    assert result.output == "WE ARE OPEN!\n\nstored 12 characters in /notes/sign.txt"


def test_a_failed_step_is_reported_not_hidden(system):
    kernel = Kernel(system)
    result = kernel.run(kernel.spawn("t"), "Wipe /notes/dinner.txt")   # denied under "never"
    assert result.status == "denied" and RAN == [] and system.fs.exists("/notes/dinner.txt")


def test_a_step_that_fails_fails_the_turn(system):
    # the file does not exist: the read raises, and the turn is an error, not a reply about one
    def missing(path: str) -> str:
        raise FileNotFoundError(f"no such file: {path}")

    kernel = Kernel(system)
    process = kernel.spawn("t")
    process.table.get("read_note").function = missing
    system.fs.write("/notes/gone.txt", "x")
    result = kernel.run(process, "What is in /notes/gone.txt?")
    assert result.status == "error" and result.output == ""
    assert result.error.startswith("read_note failed: ") and "no such file: /notes/gone.txt" in result.error
    assert [r.status for r in result.syscalls] == ["error"]


def test_a_follow_up_fragment_works_on_the_text_of_the_last_turn(system):
    system.cpu.enqueue(call("shout", style="caps"), call("shout", style="caps"))
    kernel = Kernel(system)
    process = kernel.spawn("t")
    kernel.run(process, "Yell 'good morning'")
    result = kernel.run(process, "And now shout it again?")
    assert [r.name for r in result.syscalls] == ["shout"]
    assert RAN[-1][1]["text"] == "good morning" and result.output == "GOOD MORNING!"


def test_values_the_request_says_are_set_by_the_kernel(system):
    process_table = system.table
    process_table.get("shout").from_request = lambda request: {"style": "caps"} if "loud" in request else {}
    kernel = Kernel(system)
    result = kernel.run(kernel.spawn("t"), "Say 'watch out' loudly")
    # every value is known: the model is not asked at all
    assert RAN == [("shout", {"text": "watch out", "style": "caps"})] and system.cpu.prompts == []
    assert result.output == "WATCH OUT!"


def test_an_append_to_the_file_named_is_not_piped_that_file(system):
    system.cpu.enqueue(call("store", content="eggs", append=True))
    kernel = Kernel(system)
    kernel.run(kernel.spawn("t"), "Store eggs too in /notes/dinner.txt")
    assert [name for name, _ in RAN] == ["store"]
    assert RAN[0][1] == {"path": "/notes/dinner.txt", "content": "eggs", "append": True}


def test_which_lines_a_selecting_request_asks_for():
    from llmos_shell.kernel.loop import lines_asked_for

    log = "09:00 INFO boot\n09:01 ERROR no config\n09:02 INFO retry\n09:03 ERROR no database\n"
    assert lines_asked_for("Which errors are in /logs/app.log?", [log]) == "09:01 ERROR no config\n09:03 ERROR no database"
    assert lines_asked_for("list the warnings in /x.log", ["a WARN b\nc INFO\nd WARN e"]) == "a WARN b\nd WARN e"
    # not a selecting request; no line of its kind; every line: the model answers
    assert lines_asked_for("How many errors are in /logs/app.log?", [log]) is None
    assert lines_asked_for("Which appointments are in /c.txt?", ["Mon dentist\nTue school"]) is None
    assert lines_asked_for("Which errors are in /x.log?", ["ERROR a\nERROR b"]) is None


def test_an_irreversible_call_from_tool_output_is_not_run_under_auto(system):
    kernel = Kernel(system, approve="auto")
    process = kernel.spawn("t")
    syscall = process.table.get("wipe")
    from llmos_shell.kernel.loop import Events

    # the user asked about dinner; the path to wipe was never in their words
    with pytest.raises(Denied, match="come from tool output"):
        kernel.approval(syscall, Events(), "What does my note say?").check(syscall, {"path": "/photos/cat.png"})
    kernel.approval(syscall, Events(), "Wipe /photos/cat.png").check(syscall, {"path": "/photos/cat.png"})


def test_a_bare_file_name_of_a_task_input_is_that_file(system):
    system.fs.write("/inputs/menu.txt", "soup of the day")
    kernel = Kernel(system)
    system.cpu.enqueue("Soup of the day.")
    result = kernel.run(kernel.spawn("t"), "What does menu.txt say?")
    assert [r.name for r in result.syscalls] == ["read_note"]
    assert RAN[0] == ("read_note", {"path": "/inputs/menu.txt"})


@pytest.mark.parametrize("request_, plan", [
    # one clause, two actions: what to store is made first, or what was made is stored
    ("Put the Italian for 'good morning, my friend' in a file called /notes/italian.txt", ["translate", "write_file"]),
    ("Put the Spanish for 'thank you' into /notes/es.txt", ["translate", "write_file"]),
    # a plain store stays one step; a plain translation with no path too
    ("Jot down 'renew the passport' in /notes/reminders.txt", ["write_file"]),
    ("Translate 'hello' into French", ["translate"]),
    ("Please speak 'your order is ready'", ["speak"]),
])
def test_bundled_drivers_one_clause_two_actions(tmp_path, request_, plan):
    system = make_system(tmp_path, strict=True)
    try:
        assert Router().plan(request_, system.table, Kernel(system).kind_of).names == plan
    finally:
        system.close()


def test_the_encoder_runs_numpy_on_one_blas_thread(tmp_path):
    """OpenBLAS's waiting threads spin: with other programs on the cores, two of them made the router's
    embeddings 20-40 times slower. The encoder sets one thread when it loads (a child process: the
    setting is process-wide), unless OPENBLAS_NUM_THREADS says otherwise."""
    probe = ("import threadpoolctl; from llmos_shell.kernel.embed import Encoder; Encoder(); "
             "print([p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'])")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    shown = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert shown.stdout.strip() == "[1]", shown.stderr[-500:]
