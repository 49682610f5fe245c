"""Several llmos programs on one machine: N `llmos run` one-liners started together against the
same N run one after another, in one run of this script (each with its own home).

Prints one JSON object: the wall time of each way and their ratio (together / one after another;
target <= 1.0), and each concurrent run's time. ``--share off`` runs the concurrent ones with
``LLMOS_SHARE=off`` (no machine-wide turn) to show what the turn buys.

    python bench/share.py [--model NAME] [--runs 3] [--share on|off]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REQUESTS = ["Hello! Who are you?", "Name three colours.", "What is the capital of France?",
            "Say something kind.", "Name a large animal."]


def start(request: str, model: str, share: str) -> tuple[subprocess.Popen, float]:
    home = tempfile.mkdtemp(prefix="llmos-bench-share-")
    atexit.register(shutil.rmtree, home, True)   # its models are hard links: only the home goes
    env = {**os.environ, "LLMOS_SHARE": share}
    process = subprocess.Popen([sys.executable, "-m", "llmos_shell", "--home", home, "--model", model,
                                "run", "-", "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    process.stdin.write(request)
    process.stdin.close()
    return process, time.perf_counter()


def finish(process: subprocess.Popen, started: float) -> float:
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"llmos run failed ({process.returncode}): {process.stderr.read()[-500:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LLMOS_MODEL", "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--share", choices=("on", "off"), default="on")
    args = parser.parse_args()
    requests = [REQUESTS[i % len(REQUESTS)] for i in range(args.runs)]
    finish(*start(requests[0], args.model, "on"))   # warm: weights paged in, probe cached

    began = time.perf_counter()
    for request in requests:
        finish(*start(request, args.model, "on"))
    sequential = time.perf_counter() - began

    began = time.perf_counter()
    running = [start(request, args.model, args.share) for request in requests]
    each = [finish(*run) for run in running]
    together = time.perf_counter() - began
    print(json.dumps({"model": args.model, "runs": args.runs, "share": args.share,
                      "sequential_s": round(sequential, 2), "together_s": round(together, 2),
                      "each_together_s": [round(t, 2) for t in each],
                      "ratio": round(together / sequential, 3)}))


if __name__ == "__main__":
    main()
