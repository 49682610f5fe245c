"""Context switches: two processes with ~1,500-token contexts taking turns on one CPU.

Each turn is a short question, so a turn's time to first token is mostly the switch: with
snapshots, the outgoing process's KV state is saved and the incoming one's restored; without,
the incoming one's context is evaluated again (after the system prompt both share). Both are
measured in the same run, on the same two processes. Prints one JSON object: median time to
first token of a switched-to turn each way, their ratio (target >= 5), the save+restore time,
and the snapshot's bytes per token.

    python bench/switch.py [--model NAME] [--rounds 3]
    python bench/switch.py --remote http://127.0.0.1:8080 [--rounds 3]

--remote: the CPU is a llama.cpp ``llama-server``; a switch saves the outgoing process's slot
to a file on the server and restores the incoming one's (``POST /slots/0?action=save|restore``),
versus the server evaluating the incoming context again. Start the server with one slot, a
slot-save path, and its RAM prompt cache off (else it does its own switching in both modes):

    llama-server -m MODEL.gguf --parallel 1 --ctx-size 4096 --slot-save-path /tmp/slots --cache-ram 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from llmos_shell.config import Config
from llmos_shell.kernel.loop import Events, Kernel
from llmos_shell.system import System

FACTS = "Box {n} holds {m} marbles, {c} of them red; it sits on shelf {s} next to the {w} jar.\n"
WORDS = ["green", "tall", "empty", "striped", "old", "glass", "blue", "small"]


def notes(seed: int, lines: int) -> str:
    return "".join(FACTS.format(n=seed * 1000 + i, m=(i * 37 + seed) % 90 + 10, c=(i * 11 + seed) % 9 + 1,
                                s=i % 7 + 1, w=WORDS[(i + seed) % len(WORDS)]) for i in range(lines))


def turn(kernel: Kernel, process, text: str) -> float:
    """Time from the request to the reply's first token, in ms."""
    first: list[float] = []

    class FirstToken(Events):
        def token(self, piece):
            if not first:
                first.append(time.perf_counter())

    started = time.perf_counter()
    result = kernel.run(process, text, events=FirstToken())
    if result.status != "ok":
        raise SystemExit(f"bench/switch.py: a turn failed: {result.error}")
    return 1000 * ((first[0] if first else time.perf_counter()) - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LLMOS_MODEL", "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--rounds", type=int, default=3, help="turns of each process, each way")
    parser.add_argument("--context", type=int, default=1500, help="tokens of each process's context")
    parser.add_argument("--remote", metavar="URL", help="a llama-server started with --slot-save-path")
    args = parser.parse_args()
    model = f"remote:{args.remote}" if args.remote else args.model
    system = System(Config.load(home=tempfile.mkdtemp(prefix="llmos-bench-switch-"), model=model),
                    entry_points=False, plugins=())
    cpu = system.cpu
    if args.remote and not cpu.can_snapshot:
        raise SystemExit(f"bench/switch.py: {args.remote} cannot save slots (start llama-server with "
                         "--slot-save-path DIR --parallel 1)")
    kernel = Kernel(system, max_tokens=8)
    processes = [kernel.spawn(f"bench-switch-{i}", drivers=[]) for i in range(2)]
    sizes = []
    for index, process in enumerate(processes):  # fill each context to about --context tokens
        lines = 10
        while True:
            text = f"My notes:\n{notes(index + 1, lines)}Reply 'ok'."
            used = process.memory.prompt(cpu, reserve=0)[1] + cpu.count_tokens(text)
            if used >= args.context:
                break
            lines += max(1, (args.context - used) // 40)
        turn(kernel, process, text)
        sizes.append(process.memory.prompt(cpu, reserve=0)[1])
    timings: dict[str, list[float]] = {"snapshot": [], "re_prefill": []}
    switch_ms, restored = [], []
    question = "Which box is on shelf {s}? Answer with its number only."
    for mode in ("snapshot", "re_prefill"):
        kernel.snapshots = mode == "snapshot"
        for round_ in range(args.rounds):
            for process in processes:
                timings[mode].append(turn(kernel, process, question.format(s=round_ % 7 + 1)))
                if mode == "snapshot":
                    switch_ms.append(system.context_switch.last["ms"])
                    restored.append(system.context_switch.last["restored"])
    snapshot = statistics.median(timings["snapshot"])
    re_prefill = statistics.median(timings["re_prefill"])
    state = cpu.save_sequence_state()
    nbytes = state.nbytes
    if args.remote:   # the state names a file on the server; its size is what the server wrote
        nbytes = json.loads(state.data).get("n_bytes") or nbytes
    report = {
        "model": cpu.name, "context_tokens": sizes,
        "ttft_ms_switch_by_snapshot": round(snapshot, 1), "ttft_ms_switch_by_re_prefill": round(re_prefill, 1),
        "speedup": round(re_prefill / snapshot, 2),
        "save_and_restore_ms": round(statistics.median(switch_ms), 1),
        "switches": len(restored), "restored": restored.count("process"),
        "snapshot_bytes_per_token": round(nbytes / len(state.tokens)),
        "snapshot_mb": round(nbytes / 1e6, 1),
        "threads": system.config.threads or os.cpu_count(),
        **({"remote": args.remote, "server": cpu.kind} if args.remote else {}),
    }
    print(json.dumps(report))
    system.close()


if __name__ == "__main__":
    main()
