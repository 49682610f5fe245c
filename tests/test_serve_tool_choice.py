"""`tool_choice: auto` as clients use it: the README's weather example through the official `openai`
client and through LangChain (`langchain-openai`), against a real `llmos serve` on the default model.

A request that a declared tool serves gets the call, whatever the client sends around it (a system
prompt or none, LangChain's message shapes); a request no declared tool serves gets a plain reply."""

from __future__ import annotations

import json

import openai
import pytest

from llmos_shell.config import DEFAULT_MODEL
from servers import llmos_serve

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(1800)]

# The README's example (section "Serving llmos to OpenAI clients").
GET_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def server(tmp_path_factory, default_model_path):
    home = tmp_path_factory.mktemp("tool-choice-home")
    plugins = tmp_path_factory.mktemp("no-plugins")
    with llmos_serve(home, DEFAULT_MODEL, env={"LLMOS_PLUGINS_DIR": str(plugins)}) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    # long time-outs: requests wait their turn for the one CPU worker, on a machine others share
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=1800)


def ask(client, text: str, system: str | None = None, model: str = DEFAULT_MODEL, **options):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    answer = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=64, **options)
    return answer.choices[0]


@pytest.mark.parametrize("system", [None, SYSTEM], ids=["no-system-prompt", "system-prompt"])
def test_the_readme_weather_example_gets_the_call(client, system):
    choice = ask(client, "Weather in Oslo?", system, tools=[GET_WEATHER], tool_choice="auto")
    assert choice.finish_reason == "tool_calls", choice.message.content
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"].lower() == "oslo"


@pytest.mark.parametrize("text", ["Tell me a joke", "What is 2+2?"])
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["no-system-prompt", "system-prompt"])
def test_a_request_no_tool_serves_gets_a_plain_reply(client, text, system):
    choice = ask(client, text, system, tools=[GET_WEATHER], tool_choice="auto")
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.content.strip()


def test_langchain_bind_tools_invoke_gets_the_call(server):
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        raise AssertionError("the client runs its tools, not llmos")

    llm = ChatOpenAI(model=DEFAULT_MODEL, base_url=server.url + "/v1", api_key="none", temperature=0,
                     max_retries=0, timeout=1800).bind_tools([get_weather])
    for messages in ("Weather in Oslo?", [SystemMessage(SYSTEM), HumanMessage("Weather in Oslo?")]):
        answer = llm.invoke(messages)
        assert [c["name"] for c in answer.tool_calls] == ["get_weather"], answer.content
        assert answer.tool_calls[0]["args"]["city"].lower() == "oslo"
