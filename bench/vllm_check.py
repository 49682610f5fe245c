"""The remote-CPU checks against a real vLLM: what tests/test_remote_cpu.py checks on a stub of its
API and tests/test_llama_server.py on a real llama-server, in one command for a GPU machine.

    vllm serve Qwen/Qwen2.5-Coder-7B-Instruct --max-model-len 8192 &
    LLMOS_VLLM_URL=http://127.0.0.1:8000/v1 python bench/vllm_check.py

Prints one JSON object per check ({"check", "ok", "detail"}), then a summary; exits 0 if every
check passed, 1 if one failed, 2 without LLMOS_VLLM_URL. LLMOS_CPU_API_KEY is sent if set.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import threading
import time
import traceback

import jsonschema

from llmos_shell.config import Config
from llmos_shell.cpu.models import load_cpu
from llmos_shell.kernel.grammar import CALL_OPEN, call_grammar, parse_call
from llmos_shell.kernel.loop import Kernel
from llmos_shell.syscalls import SyscallTable, declared_syscall
from llmos_shell.system import System

FLIGHT = {"name": "book_flight", "description": "Book a flight between two airports.",
          "parameters": {"type": "object", "properties": {"origin": {"type": "string", "maxLength": 3},
                                                          "destination": {"type": "string", "maxLength": 3},
                                                          "seats": {"type": "integer"}},
                         "required": ["origin", "destination", "seats"]}}
WEATHER = {"name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
STORY = "Write a long story about a lighthouse keeper and a storm, in many paragraphs."


def checks(system: System):
    cpu = system.cpu
    kernel = Kernel(system, max_steps=2, max_tokens=64)

    def detected():
        assert cpu.kind == "vllm", f"detected as {cpu.kind}"
        assert cpu.grammar_field in ("structured_outputs", "guided_grammar")
        return {"model": cpu.model_id, "n_ctx": cpu.n_ctx, "grammar_field": cpu.grammar_field, "notes": cpu.notes}

    def template_and_tokenizer():
        prompt = cpu.format_chat([{"role": "user", "content": "Hello there"}])
        assert "Hello there" in prompt and cpu.count_tokens(prompt) > 3
        return {"prompt_tail": prompt[-40:], "tokens": cpu.count_tokens(prompt)}

    def reply():
        process = kernel.spawn("reply", drivers=[])
        turn = kernel.run(process, "Say hello to my friend Ada.")
        assert turn.status == "ok" and turn.output.strip(), turn.error
        assert [m["role"] for m in system.fs.messages(process.pid)] == ["user", "assistant"]
        return {"output": turn.output[:80], "usage": turn.usage}

    def declared_call_under_grammar():
        table = SyscallTable.of([declared_syscall(FLIGHT)])
        prompt = cpu.format_chat([{"role": "user", "content": "Fly me from OSL to FCO, one seat."}],
                                 tools=[s.tool_schema() for s in table])
        generation = cpu.generate(prompt + CALL_OPEN, max_tokens=64, grammar=call_grammar(table))
        call = parse_call(generation.text)
        assert call["name"] == "book_flight", generation.text
        jsonschema.validate(call["arguments"], FLIGHT["parameters"])
        turn = kernel.run(kernel.spawn("call", functions=[WEATHER, FLIGHT]), "What is the weather in Oslo?")
        assert turn.status == "tool_calls" and turn.syscalls[0].name == "get_weather", (turn.status, turn.output)
        return {"call": call, "kernel_call": {"name": turn.syscalls[0].name, "arguments": turn.syscalls[0].arguments}}

    def p_call_from_logprobs():
        logprobs = cpu.next_token_logprobs("The capital of France is", ["Paris", "zebra"])
        assert -3 < logprobs["Paris"] <= 0 and logprobs["zebra"] < logprobs["Paris"], logprobs
        return {"p_paris": round(math.exp(logprobs["Paris"]), 3)}

    def relevance_logprob():
        near, n = cpu.logprob("The capital of France is", " Paris")
        far, _ = cpu.logprob("The capital of France is", " a zebra")
        assert n >= 1 and near > far, (near, far)
        return {"paris": round(near, 3), "zebra": round(far, 3)}

    def cancel_mid_stream():
        cancel = threading.Event()
        seen: list[str] = []

        def on_token(piece):
            seen.append(piece)
            if len(seen) == 3:
                cancel.set()

        prompt = cpu.format_chat([{"role": "user", "content": STORY}])
        generation = cpu.generate(prompt, max_tokens=400, on_token=on_token, cancel=cancel)
        assert generation.finish_reason == "cancelled" and generation.stats.decode_tokens <= 5
        after = cpu.generate(prompt, max_tokens=5)
        assert after.finish_reason == "length" and after.text
        return {"decoded_before_stop": generation.stats.decode_tokens, "cached_after": after.stats.cached_tokens}

    return [detected, template_and_tokenizer, reply, declared_call_under_grammar, p_call_from_logprobs,
            relevance_logprob, cancel_mid_stream]


def main() -> int:
    url = os.environ.get("LLMOS_VLLM_URL")
    if not url:
        print("bench/vllm_check.py: set LLMOS_VLLM_URL to a vLLM server (e.g. http://127.0.0.1:8000/v1)",
              file=sys.stderr)
        return 2
    config = Config.load(home=tempfile.mkdtemp(prefix="llmos-vllm-check-"), model=f"remote:{url}")
    system = System(config, cpu=load_cpu(config), entry_points=False, plugins=())
    passed = 0
    try:
        tests = checks(system)
        for check in tests:
            started = time.perf_counter()
            try:
                detail, ok = check(), True
            except Exception as error:  # a check that fails is reported, and the next one runs
                detail, ok = {"error": f"{type(error).__name__}: {error}",
                              "where": traceback.format_exc().splitlines()[-3].strip()}, False
            passed += ok
            print(json.dumps({"check": check.__name__, "ok": ok, "ms": round(1000 * (time.perf_counter() - started)),
                              "detail": detail}, default=str))
    finally:
        system.close()
    print(json.dumps({"url": url, "passed": passed, "checks": len(tests)}))
    return 0 if passed == len(tests) else 1


if __name__ == "__main__":
    sys.exit(main())
