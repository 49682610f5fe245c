"""Serving throughput: `llmos serve` against llama-cpp-python's own server on the same model, in one run.

8 clients (by default) send short chat requests at once; each server answers them all in turn.
Both get the same prompt text (llmos adds its system prompt; llama_cpp.server is sent it), greedy
decoding and the same token limit, one at a time on a fresh server. Prints one JSON object:
requests per second, p50/p95 latency and completion tokens for each, and llmos's ratios.

    python bench/serve.py [--model NAME] [--clients 8] [--requests 32] [--max-tokens 16]
                          [--busy N] [--peer-threads T]

``--busy N`` keeps N other programs spinning (``while True: pass``) through both measurements: a
shared machine. llama_cpp.server gets ``--peer-threads`` threads (default: one per core; on a
shared machine its best is the free cores); llmos runs with its default settings.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import llama_server, llmos_serve  # noqa: E402  (the tests' server launcher)

from llmos_shell.cpu import models  # noqa: E402
from llmos_shell.config import Config  # noqa: E402
from llmos_shell.kernel.language import WORDS  # noqa: E402

WORDS = ["apple", "river", "candle", "mountain", "piano", "garden", "rocket", "window", "forest", "silver",
         "pencil", "harbour", "lantern", "meadow", "violin", "castle"]


def load(url: str, model: str, *, clients: int, requests: int, max_tokens: int, system: bool) -> dict:
    """``requests`` chats from ``clients`` threads at once; latency of each, throughput of all."""
    def body(index: int) -> dict:
        messages = [{"role": "user", "content": f"Say the word {WORDS[index % len(WORDS)]} once."}]
        if system:
            messages.insert(0, {"role": "system", "content": WORDS.system_prompt})
        return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}

    http = httpx.Client(base_url=url, timeout=600)
    http.post("/v1/chat/completions", json=body(len(WORDS) - 1)).raise_for_status()  # warm: weights paged in
    latencies: list[float] = []
    tokens: list[int] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            started = time.perf_counter()
            response = http.post("/v1/chat/completions", json=body(index))
            response.raise_for_status()
            with lock:
                latencies.append(time.perf_counter() - started)
                tokens.append(response.json()["usage"]["completion_tokens"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "seconds": round(wall, 2), "req_s": round(len(latencies) / wall, 3),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p95_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
            "completion_tokens": sum(tokens), "completion_tok_s": round(sum(tokens) / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LLMOS_MODEL", "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--busy", type=int, default=0, help="spinning programs beside both servers")
    parser.add_argument("--peer-threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        measure(args)
    finally:
        for spinner in spinners:
            spinner.kill()


def measure(args) -> None:

    home = tempfile.mkdtemp(prefix="llmos-bench-serve-")
    atexit.register(shutil.rmtree, home, True)
    config = Config.load(home=home, model=args.model)
    resolved = models.resolve(config, args.model, progress=False)
    n_ctx = min(resolved.context_length or config.max_ctx, config.max_ctx)  # what LlamaCpu allocates
    options = {"clients": args.clients, "requests": args.requests, "max_tokens": args.max_tokens}
    report: dict = {"model": resolved.name, **options, "cores": os.cpu_count(), "busy": args.busy,
                    "peer_threads": args.peer_threads}
    with llama_server(resolved.path, n_ctx=n_ctx, threads=args.peer_threads) as server:
        served = httpx.get(server.url + "/v1/models").json()["data"][0]["id"]
        report["llama_cpp_server"] = load(server.url, served, system=True, **options)
    with llmos_serve(config.home, args.model) as server:
        report["llmos_serve"] = load(server.url, resolved.name, system=False, **options)
    ours, theirs = report["llmos_serve"], report["llama_cpp_server"]
    report["throughput_ratio"] = round(ours["req_s"] / theirs["req_s"], 3)
    report["p50_ratio"] = round(ours["p50_ms"] / theirs["p50_ms"], 3)
    report["tok_s_ratio"] = round(ours["completion_tok_s"] / theirs["completion_tok_s"], 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
