"""Whether `llmos serve` calls a declared tool under ``tool_choice: auto`` when one serves the request,
and replies in plain text when none does, through the official ``openai`` client.

Each case of bench/data/tool-choice.json (requests written before any tuning, split tune/held) is
sent to the CPU's own model name with its tools, an optional system prompt, and the user's text as
a string or as a list of text parts (LangChain's shape). A served case is right when the first tool
call names the expected tool with the expected argument values; an unserved one when no call comes
back. Prints one JSON object: accuracy per split, for calls and for replies.

    python bench/tool_choice.py [--model NAME] [--url http://127.0.0.1:8000/v1] [--split tune|held] [--verbose]

Without --url it starts its own `llmos serve` on 127.0.0.1 (a temporary home).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import llmos_serve  # noqa: E402  (the tests' server launcher)

DATA = Path(__file__).resolve().parent / "data" / "tool-choice.json"


def messages(case: dict) -> list[dict]:
    content: object = case["request"]
    if case.get("parts"):
        content = [{"type": "text", "text": case["request"]}]
    system = [{"role": "system", "content": case["system"]}] if case.get("system") else []
    return system + [{"role": "user", "content": content}]


def verdict(case: dict, message) -> bool:
    calls = message.tool_calls or []
    if case["expect"] is None:
        return not calls
    if not calls or calls[0].function.name != case["expect"]:
        return False
    arguments = json.loads(calls[0].function.arguments)
    return all(want in str(arguments.get(key, "")).lower() for key, want in (case.get("arguments") or {}).items())


@contextmanager
def server(model: str, url: str | None):
    if url:
        yield url
        return
    home = tempfile.mkdtemp(prefix="llmos-tool-choice-")
    try:
        with llmos_serve(home, model) as running:
            yield running.url + "/v1"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LLMOS_MODEL", "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--url", help="a running `llmos serve` (its /v1 URL) instead of starting one")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--split", help="only this split (tune or held)")
    parser.add_argument("--verbose", action="store_true", help="print each case's answer on stderr")
    args = parser.parse_args()
    data = json.loads(args.data.read_text())
    tally: dict[str, dict[str, list[int]]] = {}
    started = time.perf_counter()
    with server(args.model, args.url) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("LLMOS_TOKEN", "none"),
                               max_retries=0, timeout=1800)
        for case in [c for c in data["cases"] if args.split in (None, c["split"])]:
            answer = client.chat.completions.create(
                model=args.model, messages=messages(case), tool_choice="auto", max_tokens=64, temperature=0,
                tools=[{"type": "function", "function": data["tools"][name]} for name in case["tools"]])
            message = answer.choices[0].message
            right = verdict(case, message)
            kind = "call" if case["expect"] else "reply"
            tally.setdefault(case["split"], {}).setdefault(kind, []).append(int(right))
            if args.verbose:
                print(json.dumps({"split": case["split"], "right": right, "request": case["request"],
                                  "expect": case["expect"], "content": (message.content or "")[:60],
                                  "calls": [[c.function.name, c.function.arguments] for c in message.tool_calls or []]}),
                      file=sys.stderr)
    report: dict = {"model": args.model, "data": str(args.data), "splits": {}}
    for split, kinds in tally.items():
        everything = [r for results in kinds.values() for r in results]
        report["splits"][split] = {"n": len(everything), "accuracy": round(sum(everything) / len(everything), 3),
                                   **{f"{kind}_accuracy": round(sum(r) / len(r), 3) for kind, r in kinds.items()}}
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
