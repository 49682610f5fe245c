"""`llmos serve` through the official OpenAI client, against one real server (the small model)."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest

from llmos_shell.config import TEST_MODEL
from servers import llmos_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = "test-token-1b2c"
N_SCHEMAS = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_model_path):
    home = tmp_path_factory.mktemp("serve-home")
    plugins = tmp_path_factory.mktemp("no-plugins")
    with llmos_serve(home, TEST_MODEL, token=TOKEN, env={"LLMOS_PLUGINS_DIR": str(plugins)}) as running:
        running.home = home
        yield running


@pytest.fixture(scope="module")
def client(server):
    # long time-outs: requests wait their turn for the one CPU worker, on a machine others share
    return openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0, timeout=1800)


def say(client, text: str, **options):
    return client.chat.completions.create(model=TEST_MODEL, messages=[{"role": "user", "content": text}],
                                          **{"max_tokens": 24, **options})


def test_models(client):
    assert [m.id for m in client.models.list()] == ["llmos", TEST_MODEL]


def test_chat_with_usage_and_timing(client):
    answer = say(client, "Say hello to Ada.")
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    extra = answer.model_extra["llmos"]
    assert extra["status"] == "ok" and isinstance(extra["pid"], int)
    assert extra["timing"]["total_ms"] > 0 and extra["timing"]["turns"][0]["kind"] == "reply"


def test_streaming_gives_the_same_answer_piece_by_piece(client):
    options = {"seed": 7, "max_tokens": 16}
    whole = say(client, "Name a colour.", **options).choices[0].message.content
    chunks = list(say(client, "Name a colour.", stream=True, stream_options={"include_usage": True}, **options))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces).strip() == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens >= len(pieces) - 1


def generated_schemas(count: int, seed: int = 17) -> list[dict]:
    """Parameter schemas of the kinds tool APIs declare: bounded strings, enums, integers, numbers,
    booleans, arrays, a nested object, some properties required. Kept short, since each call is
    decoded by the small model on a shared 2-core machine."""
    rng = random.Random(seed)
    words = ["city", "name", "colour", "size", "topic", "unit", "query", "level", "owner", "label", "mode", "tag"]

    def value(depth: int) -> dict:
        kinds = ["string", "enum", "integer", "number", "boolean", "array"] + (["object"] if depth == 0 else [])
        kind = rng.choice(kinds)
        if kind == "string":
            return {"type": "string", "maxLength": rng.randint(4, 12), "description": f"the {rng.choice(words)}"}
        if kind == "enum":
            return {"type": "string", "enum": rng.sample(["red", "green", "blue", "small", "large", "fast", "slow"], 3)}
        if kind == "array":
            items = rng.choice([{"type": "integer"}, {"type": "string", "maxLength": 6},
                                {"enum": ["a", "b", "c"]}])
            return {"type": "array", "items": items, "maxItems": 2}
        if kind == "object":
            return properties(depth + 1, 1)
        return {"type": kind}

    def properties(depth: int, n: int) -> dict:
        names = rng.sample(words, n)
        return {"type": "object", "properties": {name: value(depth) for name in names},
                "required": sorted(rng.sample(names, rng.randint(0, n)))}

    return [properties(0, rng.randint(1, 3)) for _ in range(count)]


@pytest.mark.timeout(2400)
def test_declared_tools_return_schema_valid_tool_calls(client):
    schemas = generated_schemas(N_SCHEMAS)

    def ask(index: int):
        name = f"tool_{index}"
        schema = schemas[index]
        request = f"Use {name} with " + ", ".join(f"{key} set" for key in schema["properties"]) + "."
        answer = client.chat.completions.create(
            model=TEST_MODEL, messages=[{"role": "user", "content": request}], max_tokens=160,
            tools=[{"type": "function", "function": {"name": name, "description": f"Does task {index}.",
                                                     "parameters": schema}}],
            tool_choice={"type": "function", "function": {"name": name}}, parallel_tool_calls=False)
        return index, answer

    with ThreadPoolExecutor(4) as pool:  # a few at once: the rest would only wait in the run queue
        answers = list(pool.map(ask, range(N_SCHEMAS)))
    for index, answer in answers:
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", (index, choice)
        assert len(choice.message.tool_calls) == 1
        call = choice.message.tool_calls[0]
        assert call.function.name == f"tool_{index}" and call.id.startswith("call_")
        jsonschema.Draft202012Validator(schemas[index]).validate(json.loads(call.function.arguments))


def test_tool_choice_none_and_tool_results(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                               "parameters": {"type": "object", "required": ["city"],
                                                              "properties": {"city": {"type": "string"}}}}}]
    plain = say(client, "What is the weather in Oslo?", tools=tools, tool_choice="none")
    assert plain.choices[0].finish_reason != "tool_calls" and not plain.choices[0].message.tool_calls
    # the client ran the call: its result comes back and the model answers from it
    messages = [{"role": "user", "content": "What is the weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees"}]
    answer = client.chat.completions.create(model=TEST_MODEL, messages=messages, tools=tools, max_tokens=32)
    assert answer.choices[0].message.content.strip() and answer.model_extra["llmos"]["status"] == "ok"


def test_model_llmos_runs_the_os_drivers_under_the_approval_policy(client):
    wrote = client.chat.completions.create(
        model="llmos", max_tokens=48,
        messages=[{"role": "user", "content": "Write the text 'hello there' to /notes/served.txt"}])
    syscalls = wrote.model_extra["llmos"]["syscalls"]
    assert [(s["name"], s["status"]) for s in syscalls] == [("write_file", "ok")]
    denied = client.chat.completions.create(
        model="llmos", max_tokens=48, messages=[{"role": "user", "content": "Delete the file /notes/served.txt"}])
    extra = denied.model_extra["llmos"]
    assert extra["status"] == "denied" and [s["status"] for s in extra["syscalls"]] == ["denied"]
    assert "approval policy" in denied.choices[0].message.content


def test_errors_are_openai_json(server, client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=TEST_MODEL, messages=[])
    assert "messages" in caught.value.body["message"]
    garbled = httpx.post(server.url + "/v1/chat/completions", content=b'{"model": "llmos", "messages": [',
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert garbled.status_code == 400 and "not valid JSON" in garbled.json()["error"]["message"]
    bare = httpx.post(server.url + "/v1/chat/completions", json={"model": "llmos", "messages": []})
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(server.url + "/v2/nothing").json()["error"]["message"]


def test_eight_concurrent_clients_are_all_answered(server):
    barrier = threading.Barrier(8)

    def one(index: int):
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0, timeout=1800)
        barrier.wait()
        return say(client, f"Say the number {index}.", max_tokens=12)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert all(a.choices[0].message.content.strip() for a in answers)
    pids = [a.model_extra["llmos"]["pid"] for a in answers]
    assert len(set(pids)) == 8  # each its own process
    # one CPU worker: they waited their turn in the run queue
    assert max(a.model_extra["llmos"]["timing"]["queue_ms"] for a in answers) > \
        min(a.model_extra["llmos"]["timing"]["total_ms"] for a in answers)
