"""Kernel speed with the default model. Prints one JSON object:

(a) ttft_ratio: time to first reply token of turn 8 over turn 1, in a conversation that grows
    to about 2,000 tokens (the KV cache reuses the unchanged prefix; target <= 1.5);
(b) constrained_over_unconstrained: decode tokens/s under the syscall grammar over free decoding
    (target >= 0.8);
(c) overhead_ms_per_step: kernel time per step excluding time inside the CPU (target <= 5 ms);
(d) cold start: time to first token of a fresh `llmos run` of a one-line task with a warm
    pinned-prefix snapshot over the time with none (LLMOS_SNAPSHOTS=0; target <= 0.15), for a task
    whose model sees the syscall table (the bundled drivers' syscalls, declared) and for a plain
    question, which the router has the model answer with the system prompt alone. Both the first
    CPU token (what the snapshot replaces: reading the pinned prefix) and the reply's first token
    (after the kernel's further passes: a candidate call, relevance checks) are timed from the
    command's start.

    python bench/kernel.py [--model NAME] [--part ttft|grammar|overhead|cold_start]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmos_shell import hookimpl
from llmos_shell.config import Config
from llmos_shell.kernel.grammar import CALL_OPEN, call_grammar
from llmos_shell.kernel.loop import Events, Kernel
from llmos_shell.plugins import PluginLoader
from llmos_shell.system import System

PARAGRAPH = ("Here are my notes for today: the garden needs water, the blue shed door sticks, the "
             "neighbours lent us a ladder, and the tomatoes are nearly ripe. ") * 4


class TimedCpu:
    """Wraps a CPU and adds up the wall time spent inside it."""

    def __init__(self, cpu) -> None:
        self.cpu = cpu
        self.seconds = 0.0

    def __getattr__(self, name):
        attribute = getattr(self.cpu, name)
        if not callable(attribute):
            return attribute

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed


def note(text: str) -> str:
    """Save a short note.

    Args:
        text: The note.
    """
    return "saved"


class NoteDriver:
    @hookimpl
    def register_syscalls(self, register):
        register(note)


def ttft_ratio(system) -> dict:
    kernel = Kernel(system, max_tokens=48)
    process = kernel.spawn("bench-ttft", drivers=[])
    ttfts, sizes = [], []
    for turn in range(8):
        started = time.perf_counter()
        first: list[float] = []

        class FirstToken(Events):
            def token(self, text):
                if not first:
                    first.append(time.perf_counter())

        kernel.run(process, f"Turn {turn + 1}. {PARAGRAPH} What is the first thing on the list?", events=FirstToken())
        ttfts.append(1000 * ((first[0] if first else time.perf_counter()) - started))
        prompt, used = process.memory.prompt(system.cpu, reserve=48)
        sizes.append(used)
    return {"ttft_ms_turn1": round(ttfts[0], 1), "ttft_ms_turn8": round(ttfts[-1], 1),
            "ttft_ratio": round(ttfts[-1] / ttfts[0], 3), "context_tokens_turn8": sizes[-1]}


def grammar_ratio(system) -> dict:
    cpu = system.cpu
    functions = [{"name": "create_event", "description": "Create a calendar event.",
                  "parameters": {"type": "object", "properties": {
                      "title": {"type": "string"}, "day": {"type": "string"}, "hour": {"type": "integer"},
                      "attendees": {"type": "array", "items": {"type": "string"}}},
                      "required": ["title", "day", "hour", "attendees"]}}]
    kernel = Kernel(system)
    process = kernel.spawn("bench-grammar", functions=functions)
    process.memory.add("user", "Create an event titled quarterly planning review with the whole product "
                               "team on Thursday at 14, attendees Alice Johnson, Bob Smith, Carol White, "
                               "Dan Brown, Erin Green and Frank Black.")
    prompt, _ = process.memory.prompt(cpu, reserve=256)
    grammar = call_grammar(process.table)
    rates = {"constrained": [], "free": []}
    for _ in range(3):
        for kind in rates:
            stamps: list[float] = []
            cpu.generate(prompt + CALL_OPEN, max_tokens=96, grammar=grammar if kind == "constrained" else None,
                         on_token=lambda _: stamps.append(time.perf_counter()))
            rates[kind].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    constrained, free = statistics.median(rates["constrained"]), statistics.median(rates["free"])
    return {"constrained_tok_s": round(constrained, 1), "free_tok_s": round(free, 1),
            "constrained_over_unconstrained": round(constrained / free, 3)}


def overhead(system) -> dict:
    system.pm.register(NoteDriver(), name="bench-notes")
    PluginLoader(system.pm, system.table).register_syscalls()
    timed = TimedCpu(system.cpu)
    system._cpu = timed
    kernel = Kernel(system, max_steps=2, max_tokens=32)
    process = kernel.spawn("bench-overhead", drivers=["bench-notes"])
    steps, total = 0, 0.0
    for index in range(6):
        timed.seconds = 0.0
        started = time.perf_counter()
        result = kernel.run(process, f"Save a note saying 'item {index}'.")
        total += (time.perf_counter() - started) - timed.seconds
        steps += max(1, len(result.timing))
    system._cpu = timed.cpu
    return {"overhead_ms_per_step": round(1000 * total / steps, 2), "steps": steps}


def llmos_run(home: str, model: str, task: Path, snapshots: bool) -> tuple[float, float]:
    """One `llmos run --json TASK`, timed from the command's start: ms to its first CPU token (the end
    of its first CPU pass: the prompt read, or restored, up to the next token's distribution) and ms
    to the reply's first token. Whatever the JSON does not account for (start-up, the kernel's own
    time, printing) counts as before the first token."""
    env = {**os.environ, "LLMOS_SNAPSHOTS": "1" if snapshots else "0"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llmos_shell", "--home", home, "--model", model, "run", "--json",
                           str(task)], capture_output=True, text=True, env=env)
    wall = 1000 * (time.perf_counter() - started)
    if done.returncode != 0:
        raise SystemExit(f"bench/kernel.py: llmos run failed: {done.stderr.strip()}")
    passes = json.loads(done.stdout)["timing"]["turns"]

    def after_first_token(step: dict) -> float:
        return step["total_ms"] - step["ttft_ms"] if step["decode_tokens"] else 0.0

    first = wall - sum(step["total_ms"] for step in passes[1:]) - after_first_token(passes[0])
    return first, wall - after_first_token(passes[-1])


def cold_start(model: str, runs: int = 2) -> dict:
    home = tempfile.mkdtemp(prefix="llmos-bench-cold-")
    system = System(Config.load(home=home, model=model), entry_points=False)
    functions = [tool["function"] for tool in (s.tool_schema() for s in system.table)]
    system.close()
    question = "What is the capital of France?"
    tasks = {"table": Path(home) / "table.md", "question": Path(home) / "question.md"}
    tasks["table"].write_text(f"---\nfunctions: {json.dumps(functions)}\nmax_steps: 2\n---\n{question}\n")
    tasks["question"].write_text(question + "\n")
    report = {}
    for name, task in tasks.items():
        llmos_run(home, model, task, snapshots=True)  # the router's cache, the page cache, the snapshot
        times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(runs):
            for snapshots in (False, True):
                times[snapshots].append(llmos_run(home, model, task, snapshots))
        for index, what in enumerate(("ttft", "reply_ttft")):
            warm = statistics.median(t[index] for t in times[True])
            none = statistics.median(t[index] for t in times[False])
            report.update({f"cold_start_{name}_{what}_ms_none": round(none, 1),
                           f"cold_start_{name}_{what}_ms_warm": round(warm, 1),
                           f"cold_start_{name}_{what}_ratio": round(warm / none, 3)})
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LLMOS_MODEL", "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--part", action="append", choices=["ttft", "grammar", "overhead", "cold_start"],
                        help="only these parts (repeatable) [default: all]")
    args = parser.parse_args()
    parts = args.part or ["ttft", "grammar", "overhead", "cold_start"]
    report = {"model": args.model}
    in_process = [part for part in parts if part != "cold_start"]
    if in_process:
        system = System(Config.load(home=tempfile.mkdtemp(prefix="llmos-bench-"), model=args.model),
                        entry_points=False, plugins=())
        for part in in_process:
            report.update({"ttft": ttft_ratio, "grammar": grammar_ratio, "overhead": overhead}[part](system))
        system.close()
    if "cold_start" in parts:
        report.update(cold_start(args.model))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
