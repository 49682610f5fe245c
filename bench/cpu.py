"""CPU speed: raw llama-cpp-python against LlamaCpu, same model, prompt and threads, in one run.

Prints one JSON object: prefill and decode tokens/s of each, and LlamaCpu / raw ratios
(target >= 0.95). Rounds alternate between the two and the median is kept, since
machines here are noisy.

    python bench/cpu.py [--model NAME_OR_PATH] [--rounds 3] [--decode-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import llama_cpp

from llmos_shell.config import Config
from llmos_shell.cpu import LlamaCpu
from llmos_shell.cpu.models import resolve

PROMPT_TEXT = ("The following is a detailed report on the history of the printing press, its spread across "
               "Europe, and its effect on literacy, science and religion. " * 12)
DECODE_REQUEST = "Count from 1 to 300, one number per line."


def raw_prefill(llm: llama_cpp.Llama, tokens: list[int]) -> float:
    llm.reset()
    started = time.perf_counter()
    for _ in llm.create_completion(tokens, max_tokens=1, temperature=0.0, top_k=1, stream=True):
        pass
    return len(tokens) / (time.perf_counter() - started)


def raw_decode(llm: llama_cpp.Llama, tokens: list[int], n: int) -> float:
    llm.reset()
    stamps = []
    for _ in llm.create_completion(tokens, max_tokens=n, temperature=0.0, top_k=1, stream=True):
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def ours_prefill(cpu: LlamaCpu, prompt: str, n_tokens: int) -> float:
    cpu.reset()
    started = time.perf_counter()
    cpu.generate(prompt, max_tokens=1)
    return n_tokens / (time.perf_counter() - started)


def ours_decode(cpu: LlamaCpu, prompt: str, n: int) -> float:
    cpu.reset()
    stamps: list[float] = []
    cpu.generate(prompt, max_tokens=n, on_token=lambda _: stamps.append(time.perf_counter()))
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LLMOS_MODEL", "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=128)
    args = parser.parse_args()

    resolved = resolve(Config.load(), args.model, progress=False)
    threads = os.cpu_count() or 1
    n_ctx = 2048
    ours = LlamaCpu(resolved.path, name=resolved.name, n_ctx=n_ctx, max_ctx=n_ctx, n_threads=threads)
    raw = llama_cpp.Llama(model_path=str(resolved.path), n_ctx=n_ctx, n_threads=threads,
                          n_threads_batch=threads, use_mmap=True, verbose=False)
    prefill_prompt = ours.format_chat([{"role": "user", "content": PROMPT_TEXT + "\nSummarise this."}])
    decode_prompt = ours.format_chat([{"role": "user", "content": DECODE_REQUEST}])
    prefill_tokens = ours.tokenize(prefill_prompt)
    decode_tokens = ours.tokenize(decode_prompt)

    results: dict[str, list[float]] = {"raw_prefill": [], "ours_prefill": [], "raw_decode": [], "ours_decode": []}
    raw_prefill(raw, prefill_tokens)  # warm up both (page cache, thread pools)
    ours_prefill(ours, prefill_prompt, len(prefill_tokens))
    for round_ in range(args.rounds):
        # Alternate which goes first, so neither always runs right after the other's work.
        order = ("raw", "ours") if round_ % 2 == 0 else ("ours", "raw")
        for who in order:
            if who == "raw":
                results["raw_prefill"].append(raw_prefill(raw, prefill_tokens))
            else:
                results["ours_prefill"].append(ours_prefill(ours, prefill_prompt, len(prefill_tokens)))
        for who in order:
            if who == "raw":
                results["raw_decode"].append(raw_decode(raw, decode_tokens, args.decode_tokens))
            else:
                results["ours_decode"].append(ours_decode(ours, decode_prompt, args.decode_tokens))
    median = {key: statistics.median(values) for key, values in results.items()}
    print(json.dumps({
        "model": resolved.name, "threads": threads, "prompt_tokens": len(prefill_tokens),
        "decode_tokens": args.decode_tokens, "rounds": args.rounds,
        "prefill_tok_s": {"raw": round(median["raw_prefill"], 1), "llmos": round(median["ours_prefill"], 1),
                          "ratio": round(median["ours_prefill"] / median["raw_prefill"], 3)},
        "decode_tok_s": {"raw": round(median["raw_decode"], 1), "llmos": round(median["ours_decode"], 1),
                         "ratio": round(median["ours_decode"] / median["raw_decode"], 3)},
    }))
    ours.close()
    raw.close()


if __name__ == "__main__":
    main()
