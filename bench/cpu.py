"""CPU speed: LlamaCpu with its default settings against the best raw llama-cpp-python
configuration that does not crash on this machine, same model and prompt, in one run.

The raw configurations: ``stock`` (``Llama()`` as documented, extra weight buffers on: AMX or
repacked blocks) and ``no-extra-buffers`` (``use_extra_bufts = False``). Each is first tried in a
child process (a configuration that crashes, such as stock on an AMX CPU, is listed and skipped).
Both use one thread per core; llmos picks its threads from the free cores.

Prints one JSON object: prefill and decode tokens/s of each, and llmos / best-raw ratios
(target >= 0.95). Rounds alternate who goes first and the median is kept, since machines here
are noisy.

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
from llmos_shell.cpu import LlamaCpu, hardware, probe
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
    ours = LlamaCpu(resolved.path, name=resolved.name, n_ctx=n_ctx, max_ctx=n_ctx)
    raws: dict[str, llama_cpp.Llama] = {}
    crashed: dict[str, str] = {}
    for label, extra in (("stock", True), ("no-extra-buffers", False)):
        crash = probe.first_decode(str(resolved.path), extra)
        if crash:
            crashed[label] = crash
            continue
        with hardware.model_params(extra):
            raws[label] = llama_cpp.Llama(model_path=str(resolved.path), n_ctx=n_ctx, n_threads=threads,
                                          n_threads_batch=threads, use_mmap=True, verbose=False)
    prefill_prompt = ours.format_chat([{"role": "user", "content": PROMPT_TEXT + "\nSummarise this."}])
    decode_prompt = ours.format_chat([{"role": "user", "content": DECODE_REQUEST}])
    prefill_tokens = ours.tokenize(prefill_prompt)
    decode_tokens = ours.tokenize(decode_prompt)

    results: dict[str, dict[str, list[float]]] = {who: {"prefill": [], "decode": []} for who in [*raws, "llmos"]}
    for llm in raws.values():  # warm up every one (page cache, thread pools)
        raw_prefill(llm, prefill_tokens)
    ours_prefill(ours, prefill_prompt, len(prefill_tokens))
    for round_ in range(args.rounds):
        # Rotate who goes first, so none always runs right after another's work.
        order = [*raws, "llmos"]
        order = order[round_ % len(order):] + order[:round_ % len(order)]
        for who in order:
            results[who]["prefill"].append(ours_prefill(ours, prefill_prompt, len(prefill_tokens)) if who == "llmos"
                                           else raw_prefill(raws[who], prefill_tokens))
        for who in order:
            results[who]["decode"].append(ours_decode(ours, decode_prompt, args.decode_tokens) if who == "llmos"
                                          else raw_decode(raws[who], decode_tokens, args.decode_tokens))
    median = {who: {kind: statistics.median(values) for kind, values in kinds.items()}
              for who, kinds in results.items()}
    figures = {}
    for kind in ("prefill", "decode"):
        best = max(raws, key=lambda who: median[who][kind])
        figures[f"{kind}_tok_s"] = {**{who: round(median[who][kind], 1) for who in raws},
                                    "llmos": round(median["llmos"][kind], 1), "best_raw": best,
                                    "ratio": round(median["llmos"][kind] / median[best][kind], 3)}
    print(json.dumps({
        "model": resolved.name, "cpu_has_amx": hardware.has_amx(), "raw_threads": threads,
        "llmos": {"threads": ours.n_threads, "extra_buffers": ours.extra_buffers},
        "crashed": crashed, "prompt_tokens": len(prefill_tokens),
        "decode_tokens": args.decode_tokens, "rounds": args.rounds, **figures,
    }))
    ours.close()
    for llm in raws.values():
        llm.close()


if __name__ == "__main__":
    main()
