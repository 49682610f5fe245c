"""RemoteCpu: the kernel on a model served over HTTP.

The slow tests start a real ``python -m llama_cpp.server`` with the small test model; the
fast ones talk to tiny stdlib HTTP servers that misbehave on purpose (down, busy, garbage).
"""

from __future__ import annotations

import json
import math
import socket
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest

from conftest import assert_one_line_error, run_llmos
from llmos_shell.config import Config
from llmos_shell.errors import LlmosError
from llmos_shell.kernel.grammar import CALL_OPEN, call_grammar, parse_call
from llmos_shell.kernel.loop import Events, Kernel
from llmos_shell.cpu.models import load_cpu
from llmos_shell.cpu.remote import RemoteCpu
from llmos_shell.syscalls import SyscallTable, declared_syscall
from llmos_shell.system import System
from servers import free_port, llama_server

WEATHER = {"name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                           "unit": {"enum": ["celsius", "fahrenheit"]}},
                          "required": ["city"]}}
FLIGHT = {"name": "book_flight", "description": "Book a flight between two airports.",
          "parameters": {"type": "object", "properties": {"origin": {"type": "string", "maxLength": 3},
                                                          "destination": {"type": "string", "maxLength": 3},
                                                          "seats": {"type": "integer"}},
                         "required": ["origin", "destination", "seats"]}}
STORY = "Write a long story about a lighthouse keeper and a storm, in many paragraphs."


# --- against llama-cpp-python's server ------------------------------------------------------

@pytest.fixture(scope="module")
def server(small_model_path):
    with llama_server(small_model_path, n_ctx=2048) as running:
        yield running


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("remote-home")


@pytest.fixture(scope="module")
def system(server, home):
    """The OS with no drivers, its CPU the server: as `llmos --model remote:URL/v1` builds it."""
    config = Config.load(home=home, model=f"remote:{server.url}/v1")
    system = System(config, cpu=load_cpu(config), entry_points=False, plugins=())
    yield system
    system.close()


@pytest.fixture
def kernel(system):
    return Kernel(system, max_steps=2, max_tokens=64)


def forced(kernel: Kernel) -> Kernel:
    """The first step calls whatever the odds: calls are then tested, not the small model's judgement."""
    kernel.call_threshold = 0.0
    kernel.relevance_threshold = kernel.unwanted_call_relevance = float("-inf")
    return kernel


class Tokens(Events):
    def __init__(self, then=None) -> None:
        self.pieces: list[str] = []
        self.then = then

    def token(self, text: str) -> None:
        self.pieces.append(text)
        if self.then and len(self.pieces) == 1:
            self.then()


@pytest.mark.slow
def test_detects_the_server_and_uses_the_models_own_template_and_tokenizer(system, small_cpu):
    cpu = system.cpu
    assert isinstance(cpu, RemoteCpu)
    assert (cpu.kind, cpu.n_ctx) == ("llama-cpp-python", 2048)  # the context size the server was started with
    assert cpu.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    messages = [{"role": "user", "content": "Hello there"}]
    prompt = cpu.format_chat(messages)
    assert prompt == small_cpu.format_chat(messages)  # the GGUF's template, found from the served file
    tokens = cpu.tokenize(prompt)
    assert tokens[-len(small_cpu.tokenize(prompt)):] == small_cpu.tokenize(prompt)  # the server may add a BOS
    assert any("relevance" in note for note in cpu.notes)  # the missing feature, said once


@pytest.mark.slow
def test_a_reply(kernel, system):
    process = kernel.spawn("reply")
    turn = kernel.run(process, "Say hello to my friend Ada.")
    assert turn.status == "ok" and turn.output.strip()
    assert turn.usage["completion_tokens"] > 0 and turn.usage["prompt_tokens"] > 0
    stored = system.fs.messages(process.pid)
    assert [m["role"] for m in stored] == ["user", "assistant"] and stored[1]["content"] == turn.output
    assert {p["pid"]: p["status"] for p in system.fs.processes()}[process.pid] == "ok"


@pytest.mark.slow
def test_a_call_is_valid_under_the_grammar(kernel, system):
    turn = forced(kernel).run(kernel.spawn("call", functions=[WEATHER, FLIGHT]), "Book 2 seats from JFK to LAX.")
    assert turn.status == "tool_calls"
    schemas = {f["name"]: f["parameters"] for f in (WEATHER, FLIGHT)}
    for record in turn.syscalls:
        jsonschema.validate(record.arguments, schemas[record.name])
    # and the grammar alone, straight on the CPU
    table = SyscallTable.of([declared_syscall(FLIGHT)])
    prompt = system.cpu.format_chat([{"role": "user", "content": "Fly me from Oslo to Rome."}],
                                    tools=[s.tool_schema() for s in table])
    generation = system.cpu.generate(prompt + CALL_OPEN, max_tokens=64, grammar=call_grammar(table))
    assert generation.finish_reason == "stop"
    call = parse_call(generation.text)
    assert call["name"] == "book_flight"
    jsonschema.validate(call["arguments"], FLIGHT["parameters"])


@pytest.mark.slow
def test_a_decision_from_next_token_logprobs(kernel, system):
    cpu = system.cpu
    logprobs = cpu.next_token_logprobs("The capital of France is", ["Paris", "zebra"])
    assert -3 < logprobs["Paris"] <= 0 and logprobs["zebra"] < logprobs["Paris"]
    assert cpu.decision_stats.prefill_tokens + cpu.decision_stats.cached_tokens > 0
    turn = kernel.run(kernel.spawn("decide", functions=[WEATHER]), "What is the weather in Oslo?")
    decisions = [t for t in turn.timing if t["kind"] == "decision"]
    assert decisions and decisions[0]["prefill_tokens"] + decisions[0]["cached_tokens"] > 0


@pytest.mark.slow
def test_streaming_reaches_the_kernels_events(kernel):
    events = Tokens()
    turn = kernel.run(kernel.spawn("stream"), "Name three colours.", events=events)
    assert turn.status == "ok"
    assert len(events.pieces) > 3 and "".join(events.pieces).strip() == turn.output


@pytest.mark.slow
def test_cancel_stops_within_a_token_and_the_server_goes_on(system):
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


@pytest.mark.slow
def test_server_killed_mid_generation(small_model_path, tmp_path):
    with llama_server(small_model_path, n_ctx=1024) as doomed:
        config = Config.load(home=tmp_path, model=f"remote:{doomed.url}")
        system = System(config, cpu=load_cpu(config), entry_points=False, plugins=())
        kernel = Kernel(system, max_steps=2, max_tokens=400)
        earlier = kernel.spawn("earlier")
        assert kernel.run(earlier, "Say hi.").status == "ok"
        process = kernel.spawn("doomed")
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


@pytest.mark.slow
def test_the_cli_runs_a_task_on_llmos_cpu_url(server, tmp_path):
    task = "---\ndrivers: []\n---\nSay hello.\n"  # no drivers: the router's set-up is not what this tests
    result = run_llmos("run", "-", "--json", home=tmp_path, input=task,
                       env={"LLMOS_CPU_URL": server.url + "/v1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and report["output"]
    assert report["model"]["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"


# --- servers that misbehave --------------------------------------------------------------------

class Stub(ThreadingHTTPServer):
    """Answers each path from ``routes``: a list of (status, body) used in turn (the last repeats)."""

    def __init__(self, routes: dict[str, list[tuple[int, str]]]) -> None:
        self.routes = routes
        self.hits: dict[str, int] = {}
        self.headers_seen: list[str] = []
        self.bodies: dict[str, list] = {}
        super().__init__(("127.0.0.1", 0), _StubHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _StubHandler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        stub: Stub = self.server  # type: ignore[assignment]
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        stub.bodies.setdefault(self.path, []).append(json.loads(raw) if raw else None)
        stub.headers_seen.append(self.headers.get("authorization") or "")
        answers = stub.routes.get(self.path, [(404, '{"error": "not found"}')])
        count = stub.hits.get(self.path, 0)
        stub.hits[self.path] = count + 1
        status, body = answers[min(count, len(answers) - 1)]
        payload = body.encode()
        self.send_response(status)
        self.send_header("content-type", "text/event-stream" if body.startswith("data:") else "application/json")
        self.send_header("content-length", str(len(payload)))
        if status == 503:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


MODELS = '{"data": [{"id": "/models/tiny.gguf", "object": "model", "owned_by": "me"}]}'
TOO_LONG = ('{"error": {"message": "This model\'s maximum context length is 4096 tokens, however you requested '
            '262145 tokens", "code": "context_length_exceeded"}}')


def test_busy_server_is_retried_with_backoff_and_its_context_found():
    stub = Stub({"/v1/models": [(503, '{"error": "loading"}'), (429, "{}"), (200, MODELS)],
                 "/extras/tokenize": [(200, '{"tokens": [1, 2]}')],
                 "/v1/completions": [(400, TOO_LONG)]})
    cpu = RemoteCpu(stub.url + "/v1", api_key="k1")
    assert stub.hits["/v1/models"] == 3
    assert (cpu.kind, cpu.n_ctx, cpu.model_id) == ("llama-cpp-python", 4096, "/models/tiny.gguf")
    assert set(stub.headers_seen) == {"Bearer k1"}
    assert cpu.needs_template  # nothing local for /models/tiny.gguf: the caller may supply it
    stub.shutdown()


def test_server_down_is_one_line():
    with pytest.raises(LlmosError) as caught:
        RemoteCpu(f"http://127.0.0.1:{free_port()}")
    assert "cannot reach the CPU server" in str(caught.value) and "\n" not in str(caught.value)


def test_malformed_json_and_refusals_are_one_line():
    stub = Stub({"/v1/models": [(200, "<html>oops</html>")]})
    with pytest.raises(LlmosError, match="malformed JSON for /v1/models"):
        RemoteCpu(stub.url)
    stub.routes["/v1/models"] = [(401, '{"error": {"message": "bad key"}}')]
    with pytest.raises(LlmosError, match="refused the API key"):
        RemoteCpu(stub.url)
    stub.routes["/v1/models"] = [(503, "{}")]
    stub.hits.clear()
    with pytest.raises(LlmosError, match="HTTP 503"):
        RemoteCpu(stub.url, retries=2)
    assert stub.hits["/v1/models"] == 3
    stub.shutdown()


def test_a_server_without_grammar_refuses_calls_rather_than_guess():
    stub = Stub({"/v1/models": [(200, MODELS)]})
    cpu = RemoteCpu(stub.url, n_ctx=1024)
    assert cpu.kind == "openai" and any("no grammar" in note for note in cpu.notes)
    with pytest.raises(LlmosError, match="cannot constrain decoding"):
        cpu.generate("x", grammar='root ::= "a"')
    stub.shutdown()


def sse(*events) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events)


def test_the_llama_cpp_server_dialect():
    """llama.cpp's llama-server as its README documents it: /props, /tokenize, native /completion."""
    props = {"default_generation_settings": {"n_ctx": 8192}, "chat_template":
             "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"}
    stub = Stub({"/v1/models": [(200, '{"data": [{"id": "qwen7b.gguf", "owned_by": "llamacpp"}]}')],
                 "/props": [(200, json.dumps(props))],
                 "/tokenize": [(200, '{"tokens": [5, 6, 7]}')],
                 "/completion": [(200, sse({"content": "Hel", "stop": False}, {"content": "lo", "stop": False},
                                           {"content": "", "stop": True, "stop_type": "eos",
                                            "timings": {"prompt_n": 2, "cache_n": 10, "predicted_n": 2}}))]})
    cpu = RemoteCpu(stub.url)
    assert (cpu.kind, cpu.n_ctx) == ("llama.cpp", 8192)
    assert cpu.format_chat([{"role": "user", "content": "hi"}]) == "<|user|>hi<|assistant|>"
    assert cpu.count_tokens("x") == 3
    pieces: list[str] = []
    generation = cpu.generate("p", grammar='root ::= "Hello"', on_token=pieces.append)
    assert (generation.text, generation.finish_reason, pieces) == ("Hello", "stop", ["Hel", "lo"])
    assert (generation.stats.cached_tokens, generation.stats.prefill_tokens) == (10, 2)
    sent = stub.bodies["/completion"][-1]
    assert sent["grammar"] == 'root ::= "Hello"' and sent["cache_prompt"] is True and sent["stream"] is True
    stub.routes["/completion"] = [(200, json.dumps({"content": "{", "completion_probabilities": [{
        "id": 1, "token": "{", "logprob": -0.1, "top_logprobs": [
            {"id": 1, "token": "{", "logprob": -0.1}, {"id": 2, "token": " {", "logprob": -3.0},
            {"id": 3, "token": "Sure", "logprob": -2.5}]}]}))]
    logprobs = cpu.next_token_logprobs("q", ["{", "```"])
    assert logprobs["```"] == float("-inf") and abs(logprobs["{"] - math.log(math.exp(-0.1) + math.exp(-3.0))) < 1e-9
    assert stub.bodies["/completion"][-1]["n_probs"] == 20
    # the relevance test: the text's own token ids, generated under a grammar that allows only them
    stub.routes["/completion"] = [(200, json.dumps({"content": "xyz", "completion_probabilities": [
        {"id": 5, "token": "x", "logprob": -0.5}, {"id": 6, "token": "y", "logprob": -1.0},
        {"id": 7, "token": "z", "logprob": -0.25}]}))]
    total, n_tokens = cpu.logprob("a", "xyz")
    assert (total, n_tokens) == (-1.75, 3)
    assert {"content": "xyz", "add_special": False, "parse_special": False} in stub.bodies["/tokenize"]
    sent = stub.bodies["/completion"][-1]
    assert sent["grammar"] == "root ::= <[5]> <[6]> <[7]>" and sent["n_probs"] == 1 and sent["n_predict"] == 3
    stub.routes["/completion"] = [(200, json.dumps({"content": "x", "completion_probabilities": [
        {"id": 5, "token": "x", "logprob": -0.5}]}))]
    with pytest.raises(LlmosError, match="scored 1 of 3 tokens"):
        cpu.logprob("a", "xyz")       # a server that stopped early is an error, never a short sum
    stub.shutdown()


def test_llama_server_slots_make_context_switches():
    """A llama-server with --slot-save-path: requests go to slot 0, a switch saves it to a file on the
    server and restores the incoming process's; a refused restore is no switch, never an error."""
    props = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1,
             "chat_template": "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"}
    done = sse({"content": "ok", "stop": False}, {"content": "", "stop": True, "stop_type": "eos",
                                                   "timings": {"prompt_n": 3, "cache_n": 0, "predicted_n": 1}})
    stub = Stub({"/v1/models": [(200, '{"data": [{"id": "q.gguf", "owned_by": "llamacpp"}]}')],
                 "/props": [(200, json.dumps(props))],
                 "/slots/0?action=llmos-probe": [(400, '{"error": {"code": 400, "message": "Invalid action"}}')],
                 "/slots/0?action=save": [(200, '{"id_slot": 0, "n_saved": 3, "n_written": 9000, '
                                                '"timings": {"save_ms": 1.5}}')],
                 "/slots/0?action=restore": [(200, '{"id_slot": 0, "n_restored": 3, "n_read": 9000}')],
                 "/tokenize": [(200, '{"tokens": [5, 6, 7]}')],
                 "/completion": [(200, done)]})
    cpu = RemoteCpu(stub.url)
    assert (cpu.slot, cpu.can_snapshot) == (0, True)
    assert cpu.save_sequence_state() is None          # nothing evaluated yet
    cpu.generate("abc", max_tokens=4)
    assert stub.bodies["/completion"][-1]["id_slot"] == 0
    assert cpu.cached_prefix([5, 6, 7, 8]) == 3 and cpu.cached_prefix([9]) == 0
    assert cpu.save_sequence_state(2) is None          # a slot is saved whole, never a prefix of it
    state = cpu.save_sequence_state()
    assert state.tokens == (5, 6, 7) and state.model_sha256 == cpu.model_sha256()
    name = stub.bodies["/slots/0?action=save"][-1]["filename"]
    assert name.startswith("llmos-") and json.loads(state.data)["file"] == name
    assert cpu.load_sequence_state(state) and stub.bodies["/slots/0?action=restore"][-1] == {"filename": name}
    stub.routes["/slots/0?action=restore"] = [(400, '{"error": {"message": "Unable to restore slot"}}')]
    assert not cpu.load_sequence_state(state) and cpu.cached_prefix([5, 6, 7]) == 0
    stub.routes["/slots/0?action=llmos-probe"] = [(501, '{"error": {"message": "This server does not support '
                                                       'slots action. Start it with `--slot-save-path`"}}')]
    plain = RemoteCpu(stub.url)
    assert (plain.slot, plain.can_snapshot) == (None, False)
    plain.generate("abc", max_tokens=4)
    assert "id_slot" not in stub.bodies["/completion"][-1]
    stub.shutdown()


def test_the_vllm_dialect():
    """vLLM's OpenAI server: /version, max_model_len, structured outputs, prompt log-probs by echo."""
    stub = Stub({"/v1/models": [(200, '{"data": [{"id": "Qwen/Qwen2.5-7B", "owned_by": "vllm", '
                                      '"max_model_len": 32768}]}')],
                 "/version": [(200, '{"version": "0.11.0"}')],
                 "/tokenize": [(200, '{"tokens": [1, 2], "count": 2}')],
                 "/detokenize": [(200, json.dumps({"prompt": "<s>user: hi\nassistant:"}))],
                 "/v1/completions": [(200, json.dumps({"choices": [{"text": "b", "logprobs": {
                     "text_offset": [0, 3, 6], "token_logprobs": [None, -1.5, -0.5],
                     "tokens": ["abc", " de", "b"]}}], "usage": {"prompt_tokens": 3}}))]})
    cpu = RemoteCpu(stub.url + "/v1")
    assert (cpu.kind, cpu.n_ctx, cpu.grammar_field) == ("vllm", 32768, "structured_outputs")
    assert cpu.format_chat([{"role": "user", "content": "hi"}]) == "<s>user: hi\nassistant:"
    assert stub.bodies["/tokenize"][-1]["add_generation_prompt"] is True
    assert cpu.logprob("abc", " de") == (-1.5, 1)  # the tokens of the text only
    assert stub.bodies["/v1/completions"][-1]["echo"] is True
    stub.routes["/v1/completions"] = [(200, sse({"choices": [{"text": "{}", "finish_reason": "stop"}]},
                                                {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1,
                                                              "prompt_tokens_details": {"cached_tokens": 3}}}))]
    generation = cpu.generate("p", grammar="root ::= \"{}\"")
    assert generation.text == "{}" and generation.stats.cached_tokens == 3
    assert stub.bodies["/v1/completions"][-1]["structured_outputs"] == {"grammar": "root ::= \"{}\""}
    stub.shutdown()


def test_cli_errors_of_a_remote_cpu_and_of_serve_are_one_line(tmp_path):
    refused = run_llmos("--model", f"remote:http://127.0.0.1:{free_port()}", "serve", "--port", "0", home=tmp_path)
    assert "cannot reach the CPU server" in assert_one_line_error(refused, 1)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = run_llmos("serve", "--port", str(taken.getsockname()[1]), home=tmp_path)
    assert "cannot listen on 127.0.0.1" in assert_one_line_error(busy, 1)
