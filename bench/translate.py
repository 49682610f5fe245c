#!/usr/bin/env python3
"""Translation quality per pair and direction: Apertium against the CPU, on our own phrases.

    python bench/translate.py [--data bench/data/translations.tsv] [--model NAME] [--split tune|held|all]
                              [--backends apertium,cpu,auto] [-v]

`bench/data/translations.tsv` holds phrases we wrote with reference translations (one or more,
" | " between them), for every installed Apertium pair in both directions it has and for
languages without a pair. Each phrase is translated by each backend that can (Apertium only
where the pair is installed) and scored with chrF (character 6-grams, word-free, so it
forgives inflection; 0-100) against its best reference. ``auto`` is the translate syscall
as users get it: the backend it picks, with the source language guessed, not given.

Rows are split ``tune`` (the per-pair choice in plugins/translate.py was made looking at
these), ``held`` (never looked at while choosing) and ``held2`` (written in session 11 before
the CPU's prompt was changed, never looked at while changing it). Prints one JSON object: chrF per
direction and backend, per split, and the guessed-source accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmos_shell.testing import make_system  # noqa: E402
from plugins import translate as tr  # noqa: E402

DATA = Path(__file__).parent / "data" / "translations.tsv"


def _ngrams(text: str, n: int) -> Counter:
    chars = "".join(text.split())  # chrF ignores whitespace
    return Counter(chars[i:i + n] for i in range(len(chars) - n + 1))


def chrf(hypothesis: str, reference: str, order: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015): the F-beta score of character n-grams, n = 1..order, averaged; 0-100.
    Case and punctuation count as written; both texts are lowercased first, since users type
    casually and a capital letter is no translation error."""
    hypothesis, reference = hypothesis.lower(), reference.lower()
    precisions, recalls = [], []
    for n in range(1, order + 1):
        hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
        if not hyp or not ref:
            continue
        match = sum((hyp & ref).values())
        precisions.append(match / sum(hyp.values()))
        recalls.append(match / sum(ref.values()))
    if not precisions:
        return 0.0
    p, r = statistics.mean(precisions), statistics.mean(recalls)
    if p + r == 0:
        return 0.0
    return 100 * (1 + beta ** 2) * p * r / (beta ** 2 * p + r)


def best_chrf(hypothesis: str, references: list[str]) -> float:
    return max(chrf(hypothesis, ref) for ref in references)


def load(path: Path) -> list[dict]:
    rows = []
    header = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if header is None:
            header = cells
            continue
        row = dict(zip(header, cells))
        row["references"] = [r.strip() for r in row["references"].split(" | ")]
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default=os.environ.get("LLMOS_MODEL", "qwen2.5-coder-0.5b-instruct"))
    ap.add_argument("--split", default="all")
    ap.add_argument("--backends", default="apertium,cpu,auto")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    rows = [r for r in load(Path(args.data)) if args.split in ("all", r["split"])]
    backends = args.backends.split(",")
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    detected = Counter()
    seconds: dict[str, float] = Counter()
    with tempfile.TemporaryDirectory() as home:
        system = make_system(home, plugins=["plugins.translate"], model=args.model)
        cpu = system.cpu if {"cpu", "auto"} & set(backends) else None
        for row in rows:
            source, target = row["source"], row["target"]
            direction = f"{source}-{target}"
            guessed = tr.source_language(row["text"], target)
            detected[(row["split"], guessed == source or (source == "sh" and guessed in tr._HBS_VARIANTS.values()))] += 1
            for backend in backends:
                started = time.perf_counter()
                try:
                    if backend == "apertium":
                        route = tr.apertium_route(source, target)
                        if not route:
                            continue
                        out, _ = tr.apertium_route_with_unknowns(row["text"], route)
                    elif backend == "cpu":
                        out = tr.translate_cpu(row["text"], target, cpu, None)
                    else:
                        os.environ[tr.ENV] = "auto"
                        done = system.call("translate", {"text": row["text"], "target_lang": target})
                        out = done["translation"]
                        backend = "auto"
                except Exception as error:  # a failure scores 0: the user got no translation
                    out = f"<error: {error}>"
                seconds[backend] += time.perf_counter() - started
                score = best_chrf(out, row["references"])
                results.setdefault(direction, {}).setdefault(backend, {}).setdefault(row["split"], []).append(score)
                if args.verbose:
                    print(f"{direction} {row['split']:<4} {backend:<8} {score:5.1f}  {row['text']!r} -> {out!r}",
                          file=sys.stderr)
        system.close()
    table = {}
    for direction, by_backend in sorted(results.items()):
        table[direction] = {backend: {split: round(statistics.mean(v), 1) for split, v in sorted(by_split.items())}
                            | {"n": sum(len(v) for v in by_split.values()),
                               "all": round(statistics.mean([x for v in by_split.values() for x in v]), 1)}
                            for backend, by_split in by_backend.items()}
    splits = sorted({row["split"] for row in rows})
    overall = {}
    for backend in backends:
        for split in splits:
            values = [x for d in results.values() for x in d.get(backend, {}).get(split, [])]
            if values:
                overall[f"{backend} {split}"] = round(statistics.mean(values), 1)
    guessed = {split: f"{detected[(split, True)]}/{detected[(split, True)] + detected[(split, False)]}"
               for split in splits if detected[(split, True)] + detected[(split, False)]}
    print(json.dumps({"model": args.model, "rows": len(rows), "chrf": table, "overall": overall,
                      "source_guessed": guessed, "seconds": {k: round(v, 1) for k, v in seconds.items()}},
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
