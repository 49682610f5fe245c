"""RemoteCpu on a real llama.cpp ``llama-server`` with the default model.

``make test`` builds the server once per machine (tools/build-llama-server.sh); these tests start it
on 127.0.0.1 and stop it. They are skipped, saying why, only if it could not be built.
"""

from __future__ import annotations

import json
import sqlite3
import threading

import jsonschema
import pytest

from conftest import run_llmos
from llmos_shell.config import Config
from llmos_shell.cpu.models import load_cpu
from llmos_shell.cpu.remote import RemoteCpu
from llmos_shell.errors import LlmosError
from llmos_shell.kernel.grammar import CALL_OPEN, call_grammar, parse_call
from llmos_shell.kernel.loop import Events, Kernel
from llmos_shell.syscalls import SyscallTable, declared_syscall
from llmos_shell.system import System
from servers import llama_cpp_binary, llama_cpp_server

pytestmark = [pytest.mark.model, pytest.mark.slow,
              pytest.mark.skipif(llama_cpp_binary() is None,
                                 reason="llama-server could not be built (see `make llama-server`)")]

FLIGHT = {"name": "book_flight", "description": "Book a flight between two airports.",
          "parameters": {"type": "object", "properties": {"origin": {"type": "string", "maxLength": 3},
                                                          "destination": {"type": "string", "maxLength": 3},
                                                          "seats": {"type": "integer"}},
                         "required": ["origin", "destination", "seats"]}}
WEATHER = {"name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
STORY = "Write a long story about a lighthouse keeper and a storm, in many paragraphs."


@pytest.fixture(scope="module")
def server(default_model_path, tmp_path_factory):
    with llama_cpp_server(default_model_path, slot_save_path=tmp_path_factory.mktemp("slots")) as running:
        yield running


@pytest.fixture(scope="module")
def system(server, tmp_path_factory):
    config = Config.load(home=tmp_path_factory.mktemp("llama-server-home"), model=f"remote:{server.url}")
    system = System(config, cpu=load_cpu(config), entry_points=False, plugins=())
    yield system
    system.close()


@pytest.fixture
def kernel(system):
    return Kernel(system, max_steps=2, max_tokens=64)


class Tokens(Events):
    def __init__(self, then=None) -> None:
        self.pieces: list[str] = []
        self.then = then

    def token(self, text: str) -> None:
        self.pieces.append(text)
        if self.then and len(self.pieces) == 2:
            self.then()


def test_detects_llama_server_its_template_and_slots(system, default_cpu):
    cpu = system.cpu
    assert isinstance(cpu, RemoteCpu)
    assert (cpu.kind, cpu.n_ctx, cpu.slot, cpu.can_snapshot) == ("llama.cpp", 4096, 0, True)
    messages = [{"role": "user", "content": "Hello there"}]
    prompt = cpu.format_chat(messages)
    assert prompt == default_cpu.format_chat(messages)   # the template /props gives, rendered here
    assert cpu.tokenize(prompt) == default_cpu.tokenize(prompt)


def test_a_routed_everyday_request_through_llmos_run(server, tmp_path):
    (tmp_path / "pancakes.txt").write_text("Pancakes: 200 g flour, 2 eggs, 300 ml milk, a pinch of salt.\n")
    task = tmp_path / "task.md"
    task.write_text("---\ninputs: [pancakes.txt]\n---\nHow many eggs do the pancakes in /inputs/pancakes.txt need?\n")
    result = run_llmos("run", str(task), "--json", "--model", f"remote:{server.url}", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok", report
    assert [c["name"] for c in report["syscalls"]] == ["read_file"] and report["syscalls"][0]["status"] == "ok"
    assert "2" in report["output"] or "two" in report["output"].lower()
    assert report["usage"]["prompt_tokens"] > 0 and report["usage"]["completion_tokens"] > 0


def test_a_declared_function_call_under_the_grammar(kernel, system):
    kernel.call_threshold = 0.0
    kernel.relevance_threshold = kernel.unwanted_call_relevance = float("-inf")
    turn = kernel.run(kernel.spawn("call", functions=[FLIGHT, WEATHER]), "Book 2 seats from JFK to LAX.")
    assert turn.status == "tool_calls" and turn.syscalls
    schemas = {f["name"]: f["parameters"] for f in (FLIGHT, WEATHER)}
    for record in turn.syscalls:
        jsonschema.validate(record.arguments, schemas[record.name])
    table = SyscallTable.of([declared_syscall(FLIGHT)])
    prompt = system.cpu.format_chat([{"role": "user", "content": "Fly me from OSL to FCO, one seat."}],
                                    tools=[s.tool_schema() for s in table])
    generation = system.cpu.generate(prompt + CALL_OPEN, max_tokens=64, grammar=call_grammar(table))
    assert generation.finish_reason == "stop"
    call = parse_call(generation.text)
    assert call["name"] == "book_flight" and call["arguments"]["origin"] == "OSL"
    jsonschema.validate(call["arguments"], FLIGHT["parameters"])


def test_p_call_from_n_probs(kernel, system, default_cpu):
    cpu = system.cpu
    logprobs = cpu.next_token_logprobs("The capital of France is", ["Paris", " Paris", "zebra"])
    assert -3 < logprobs["Paris"] <= 0 and logprobs["zebra"] < logprobs["Paris"]
    assert abs(logprobs["Paris"] - default_cpu.next_token_logprobs("The capital of France is", ["Paris"])["Paris"]) < 0.5
    turn = kernel.run(kernel.spawn("decide", functions=[WEATHER]), "What is the weather in Oslo?")
    decisions = [t for t in turn.timing if t["kind"] == "decision"]
    assert decisions and decisions[0]["prefill_tokens"] + decisions[0]["cached_tokens"] > 0
    assert turn.status == "tool_calls" and turn.syscalls[0].name == "get_weather"


def test_cancel_mid_stream_and_the_server_goes_on(system):
    cpu = system.cpu
    cancel = threading.Event()
    seen: list[str] = []

    def on_token(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 3:
            cancel.set()

    prompt = cpu.format_chat([{"role": "user", "content": STORY}])
    generation = cpu.generate(prompt, max_tokens=400, on_token=on_token, cancel=cancel)
    assert generation.finish_reason == "cancelled" and 3 <= generation.stats.decode_tokens <= 4
    after = cpu.generate(prompt, max_tokens=5)
    assert after.finish_reason == "length" and after.text
    assert after.stats.cached_tokens > 0   # cache_prompt: the prompt was kept from the cancelled run


def test_context_switch_by_slot_save_and_restore(system, kernel):
    switch = system.context_switch
    first, second = kernel.spawn("first", drivers=[]), kernel.spawn("second", drivers=[])
    notes = "".join(f"Box {n} holds {n * 3} marbles.\n" for n in range(40))
    assert kernel.run(first, f"My notes:\n{notes}Reply ok.").status == "ok"
    assert kernel.run(second, "Say hello.").status == "ok"
    assert switch.last["saved_bytes"] > 0                     # the first's slot went to a file
    turn = kernel.run(first, "Which box holds 9 marbles?")
    assert turn.status == "ok"
    assert switch.last["restored"] == "process" and switch.last["restored_tokens"] > 300
    step = [t for t in turn.timing if t.get("kind") != "decision"][-1]
    assert step["cached_tokens"] > 300 and step["prefill_tokens"] < 100   # restored, not evaluated again


def test_a_decision_keeps_the_slots_conversation(system):
    cpu = system.cpu
    notes = "".join(f"Shelf {n} holds {n * 7} books.\n" for n in range(30))
    prompt = cpu.format_chat([{"role": "user", "content": f"My notes:\n{notes}Which shelf holds 21 books?"}])
    first = cpu.generate(prompt, max_tokens=4)
    conversation = len(cpu.tokenize(prompt))
    assert first.stats.prefill_tokens > 300
    score, n_tokens = cpu.logprob("A function about the weather: ", "get_weather")
    assert n_tokens > 0 and score < 0
    again = cpu.generate(prompt + first.text, max_tokens=4)
    # restored after the decision, not evaluated again (without the save and restore: ~0 cached)
    assert again.stats.cached_tokens >= conversation - 1 and again.stats.prefill_tokens < 20


def test_a_call_is_decoded_from_the_same_batches_as_in_process(system, default_cpu, monkeypatch):
    """The last prompt token of a call is evaluated alone on both CPUs (LlamaCpu does so; the remote
    CPU first fills the slot up to the token before it), so near-ties between two tokens are decided
    the same way and both decode the same calls, a further call after the first included."""
    cpu = system.cpu
    evaluated: list[int] = []   # prompt tokens the server evaluated for each generation
    events = cpu._events

    def counted(path, body):
        for event in events(path, body):
            if event.get("stop"):
                evaluated.append((event.get("timings") or {}).get("prompt_n"))
            yield event

    monkeypatch.setattr(cpu, "_events", counted)
    table = SyscallTable.of([declared_syscall(FLIGHT)])
    grammar = call_grammar(table)
    prompt = cpu.format_chat([{"role": "user", "content": "Fly me from OSL to FCO, then from FCO to JFK, one seat "
                                                          "each."}], tools=[s.tool_schema() for s in table]) + CALL_OPEN
    decoded = {}
    for name, each in (("remote", cpu), ("in-process", default_cpu)):
        first = each.generate(prompt, max_tokens=64, grammar=grammar)
        further = each.generate(prompt + first.text + "\n" + CALL_OPEN, max_tokens=64, grammar=grammar)
        decoded[name] = (first.text, further.text)
        assert first.finish_reason == further.finish_reason == "stop"
    assert decoded["remote"] == decoded["in-process"]
    assert evaluated == [1, 1]


def test_server_killed_mid_generation(default_model_path, tmp_path):
    with llama_cpp_server(default_model_path, n_ctx=2048) as doomed:
        config = Config.load(home=tmp_path, model=f"remote:{doomed.url}")
        system = System(config, cpu=load_cpu(config), entry_points=False, plugins=())
        kernel = Kernel(system, max_steps=2, max_tokens=400)
        earlier = kernel.spawn("earlier", drivers=[])
        assert kernel.run(earlier, "Say hi.").status == "ok"
        process = kernel.spawn("doomed", drivers=[])
        turn = kernel.run(process, STORY, events=Tokens(then=doomed.kill))
    assert turn.status == "error"
    assert doomed.url in turn.error and "\n" not in turn.error
    statuses = {p["pid"]: p["status"] for p in system.fs.processes()}
    assert statuses == {earlier.pid: "ok", process.pid: "error"}
    assert [m["role"] for m in system.fs.messages(earlier.pid)] == ["user", "assistant"]
    assert system.fs.messages(process.pid)[0]["content"] == STORY
    system.close()
    with sqlite3.connect(config.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with pytest.raises(LlmosError, match="cannot reach the CPU server"):
        load_cpu(config)


def test_an_idle_connection_the_server_closed_is_opened_again(system):
    """llama-server closes a kept-alive connection after 5 idle seconds; the next request must not fail."""
    import time

    assert system.cpu.tokenize("the first request opens the connection")
    time.sleep(6)
    assert system.cpu.tokenize("the second one finds it closed by the server")
