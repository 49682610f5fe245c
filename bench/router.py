#!/usr/bin/env python3
"""How often the router plans the right syscalls, on requests it was not tuned on.

    python bench/router.py [--cases bench/data/requests.json] [--os-tasks PATH] [-v]

`bench/data/requests.json` holds our own requests, each with the files that
exist and the plan expected, split into `tune` (the examples and thresholds were
chosen looking at these) and `held` (never looked at while tuning). With
`--os-tasks`, the shared everyday-request cases are scored too (their `calls`,
or no call). No model runs: this measures the choice alone, in milliseconds.
Prints one JSON object: accuracy per split, and the misses with -v.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmos_shell.fs.mime import guess_from_name  # noqa: E402
from llmos_shell.kernel.router import Router  # noqa: E402
from llmos_shell.testing import make_system  # noqa: E402


def kind_of_files(paths: list[str]):
    def kind_of(path: str) -> str | None:
        for p in paths:
            if p.rstrip("/") == path.rstrip("/"):
                return "inode/directory" if p.endswith("/") else (guess_from_name(p) or "application/octet-stream")
        return None
    return kind_of


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=str(Path(__file__).parent / "data" / "requests.json"))
    ap.add_argument("--os-tasks", default="")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    cases = json.loads(Path(args.cases).read_text())
    if args.os_tasks:
        for case in json.loads(Path(args.os_tasks).read_text()):
            if not case.get("calls") and not case.get("no_calls"):
                continue  # it checks the reply only
            cases.append({"split": "os-tasks", "request": case["request"], "files": list(case.get("files") or {}),
                          "plan": [] if case.get("no_calls") else case.get("calls", []), "id": case["id"]})
    with tempfile.TemporaryDirectory() as home:
        system = make_system(home)
        router = Router()
        score: dict[str, list[int]] = {}
        misses = []
        started = time.perf_counter()
        for case in cases:
            plan = router.plan(case["request"], system.table, kind_of_files(case.get("files", [])))
            ok = plan.names == case["plan"]
            s = score.setdefault(case["split"], [0, 0])
            s[0] += ok
            s[1] += 1
            if not ok:
                top = sorted(plan.scores.items(), key=lambda kv: -kv[1])[:3]
                misses.append({"split": case["split"], "request": case["request"], "want": case["plan"],
                               "got": plan.names, "top": [(n or "chat", round(v, 3)) for n, v in top]})
        ms = 1000 * (time.perf_counter() - started) / max(1, len(cases))
        system.close()
    out = {"accuracy": {k: round(v[0] / v[1], 3) for k, v in score.items()},
           "counts": score, "ms_per_request": round(ms, 1)}
    if args.verbose:
        out["misses"] = misses
    print(json.dumps(out, indent=1 if args.verbose else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
