"""Syscall accuracy on the BFCL development subset, through the kernel path `llmos run` uses.

Each entry becomes a task with declared functions and one step; the calls the
kernel returns are scored with ../shared/eval/bfcl_check.py. Prints one JSON object.

    python bench/bfcl.py [--model NAME] [--limit N] [--categories simple_python,multiple,...] [--data DIR]
    python bench/bfcl.py --url http://127.0.0.1:8000/v1 [--model NAME] ...

--url scores a server through the OpenAI API instead (`llmos serve --max-steps 1`, to match the
one step here): each entry's functions go as `tools`, the `tool_calls` that come back are scored.

--data bench/data/bfcl-held scores the held-out subset (entries outside the dev set).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import jsonschema

from llmos_shell.config import Config
from llmos_shell.kernel.loop import Kernel
from llmos_shell.syscalls import normalise_schema
from llmos_shell.system import System

EVAL = Path(os.environ.get("LLMOS_EVAL_DIR", Path(__file__).resolve().parents[2] / "shared" / "eval"))
CATEGORIES = ("simple_python", "multiple", "irrelevance", "parallel")


def load_checker():
    spec = importlib.util.spec_from_file_location("bfcl_check", EVAL / "bfcl_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parallel_ok(check, calls, truth, functions) -> bool:
    if len(calls) != len(truth):
        return False
    remaining = list(truth)
    for call in calls:
        match = next((gt for gt in remaining if check.call_matches(call, [gt], functions)), None)
        if match is None:
            return False
        remaining.remove(match)
    return True


class Decisions(logging.Handler):
    """Collects the kernel's decision log lines (p(call), relevance) of the current case."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LLMOS_MODEL", "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--limit", type=int, default=0, help="at most N entries per category")
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--data", type=Path, default=EVAL / "bfcl-dev",
                        help="folder of <category>.questions.jsonl / .answers.jsonl (default: the dev subset)")
    parser.add_argument("--threshold", type=float, default=None, help="override the kernel's call threshold")
    parser.add_argument("--verbose", action="store_true", help="print each miss on stderr")
    parser.add_argument("--url", help="an OpenAI-compatible server to score instead of the in-process kernel")
    args = parser.parse_args()
    if args.url:
        return score_server(args)

    check = load_checker()
    decisions = Decisions()
    if args.verbose:
        kernel_log = logging.getLogger("llmos.kernel")
        kernel_log.setLevel(logging.DEBUG)
        kernel_log.addHandler(decisions)
    home = tempfile.mkdtemp(prefix="llmos-bfcl-")
    system = System(Config.load(home=home, model=args.model), entry_points=False, plugins=())
    cpu = system.cpu
    # Calls fit in 256 tokens; a reply (the right answer to an irrelevant request) is not scored.
    kernel = Kernel(system, approve="never", max_steps=1, max_tokens=256)
    if args.threshold is not None:
        kernel.call_threshold = args.threshold
    report: dict = {"model": cpu.name, "data": str(args.data), "call_threshold": kernel.call_threshold,
                    "relevance_threshold": kernel.relevance_threshold,
                    "unwanted_call_relevance": kernel.unwanted_call_relevance, "categories": {}}
    calls_made = calls_valid = 0
    seconds = []
    for category in args.categories.split(","):
        answers_file = args.data / f"{category}.answers.jsonl"
        entries = check.load(args.data / f"{category}.questions.jsonl",
                             answers_file if answers_file.exists() else None)
        if args.limit:
            entries = entries[: args.limit]
        correct = 0
        for question, truth in entries:
            functions = question["function"]
            messages = question["question"][0]
            request = "\n".join(m["content"] for m in messages if m["role"] == "user")
            process = kernel.spawn(question["id"], functions=functions)
            decisions.lines.clear()
            started = time.perf_counter()
            result = kernel.run(process, request)
            seconds.append(time.perf_counter() - started)
            calls = [{"name": r.name, "arguments": r.arguments} for r in result.syscalls]
            for call in calls:
                calls_made += 1
                spec = next((f for f in functions if f["name"] == call["name"]), None)
                if spec is not None:
                    schema = normalise_schema(spec["parameters"])
                    if jsonschema.Draft202012Validator(schema).is_valid(call["arguments"]):
                        calls_valid += 1
            ok = entry_ok(check, category, calls, truth, functions)
            correct += ok
            if args.verbose and not ok:
                print(json.dumps({"id": question["id"], "calls": calls, "output": result.output[:80],
                                  "truth": truth, "decisions": decisions.lines}), file=sys.stderr)
        report["categories"][category] = {"n": len(entries), "accuracy": round(correct / max(1, len(entries)), 3)}
    report["valid_call_rate"] = round(calls_valid / calls_made, 3) if calls_made else None
    report["calls"] = calls_made
    report["seconds_per_case"] = round(sum(seconds) / max(1, len(seconds)), 3)
    print(json.dumps(report))
    system.close()


class Served:
    """The kernel's ``run`` answered by a server: the entry's functions as tools, its tool calls back."""

    def __init__(self, url: str, model: str | None) -> None:
        import httpx

        token = os.environ.get("LLMOS_TOKEN")
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=1800,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
        served = [m["id"] for m in self.http.get("/models").raise_for_status().json()["data"]]
        # `llmos serve` lists the OS ("llmos") first and the CPU's own name: the CPU is what is compared
        self.model = model if model in served else next((m for m in served if m != "llmos"), served[0])

    def calls(self, functions: list[dict], request: str) -> tuple[list[dict], str]:
        answer = self.http.post("/chat/completions", json={
            "model": self.model, "messages": [{"role": "user", "content": request}], "max_tokens": 256,
            "temperature": 0, "tools": [{"type": "function", "function": f} for f in functions]})
        message = answer.raise_for_status().json()["choices"][0]["message"]
        calls = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                 for c in message.get("tool_calls") or []]
        return calls, message.get("content") or ""


def score_server(args) -> None:
    check = load_checker()
    served = Served(args.url, args.model)
    report: dict = {"model": served.model, "url": args.url, "data": str(args.data), "categories": {}}
    seconds = []
    for category in args.categories.split(","):
        answers_file = args.data / f"{category}.answers.jsonl"
        entries = check.load(args.data / f"{category}.questions.jsonl",
                             answers_file if answers_file.exists() else None)[: args.limit or None]
        correct = 0
        for question, truth in entries:
            functions = question["function"]
            request = "\n".join(m["content"] for m in question["question"][0] if m["role"] == "user")
            started = time.perf_counter()
            calls, output = served.calls(functions, request)
            seconds.append(time.perf_counter() - started)
            ok = entry_ok(check, category, calls, truth, functions)
            correct += ok
            if args.verbose and not ok:
                print(json.dumps({"id": question["id"], "calls": calls, "output": output[:80], "truth": truth}),
                      file=sys.stderr)
        report["categories"][category] = {"n": len(entries), "accuracy": round(correct / max(1, len(entries)), 3)}
    report["seconds_per_case"] = round(sum(seconds) / max(1, len(seconds)), 3)
    print(json.dumps(report))


def entry_ok(check, category: str, calls: list[dict], truth, functions) -> bool:
    """BFCL's verdict on one entry's calls."""
    if category == "irrelevance":
        return not calls
    if category == "parallel":
        return parallel_ok(check, calls, truth, functions)
    return len(calls) == 1 and check.call_matches(calls[0], truth, functions)


if __name__ == "__main__":
    main()
