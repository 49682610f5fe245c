#!/usr/bin/env python3
"""Summarising a long document: the extractive first pass (issue 26) against reading every word.

    python bench/summarise.py [--model NAME] [--document PATH] [--length medium] [--no-cli]

In one run, one process, one loaded model: the whole document (default: Debian's GPL-3,
``/usr/share/common-licenses/GPL-3``, 35 KB) is copied into the SQLite filesystem of a temporary
llmos home and summarised through the syscall gate, as ``llmos call summarise '{"path": ...}'``
does, first the old way (``LLMOS_SUMMARISE_LONG=map-reduce``: every chunk read, then the partial
summaries), then the new (``extract``: the most salient sentences, then one call). Then the same
for a 4 KB excerpt (its first paragraphs), which fits one call: both ways must take the same path
and time. Last, unless ``--no-cli``, the new way end to end as a user runs it: a fresh
``llmos call`` process, model load included.

Each summary is checked by the same criteria: the key facts a GPL summary should state
(``KEY_FACTS``: regular expressions written before any summary was looked at), as the share
found; and the cosine similarity of the summary to the document (MiniLM, the mean of each one's
sentence vectors). The extractive pass chooses sentences near the document's centroid, so the
similarity leans its way a little; the key facts do not.

Prints one JSON object; the load average is recorded next to every figure (a shared machine
inflates absolute times: compare the ratio, measured in one run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmos_shell.config import DEFAULT_MODEL, Config  # noqa: E402

GPL = Path("/usr/share/common-licenses/GPL-3")
EXCERPT_CHARS = 4096

# What a summary of the GPL should say, each fact as patterns any one of which counts (case
# ignored). Written before looking at any summary the two ways produce.
KEY_FACTS = {
    "free software: freedom to share and change": [r"\bfreedoms?\b", r"free software", r"\bfree to\b"],
    "copyleft: the same freedoms passed on": [r"copyleft", r"share[- ]?alike", r"same freedoms",
                                              r"pass (on|along)\b.{0,60}\b(freedom|rights)",
                                              r"(same|identical) (rights|terms)"],
    "source code must be provided": [r"source code", r"corresponding source",
                                     r"\bsource\b.{0,60}\b(provid|avail|offer|access|distribut|convey|give)",
                                     r"\b(provid|avail|offer|access|distribut|convey|give)\w*\b.{0,60}\bsource\b"],
    "no warranty": [r"warrant", r"\bas is\b", r"liabilit"],
    "derivatives under the same licence": [
        r"(modif|derivat|based on|adapt|changed)\w*\b.{0,100}\b(same|this|the gpl|gnu gpl|general public) licen[cs]e",
        r"(same|this) licen[cs]e\b.{0,100}\b(modif|derivat|based on|whole)",
        r"licen[cs]e the (entire|whole) work", r"\bunder (the )?(gpl|this licen[cs]e)\b.{0,60}\b(modif|derivat)"],
    "patents": [r"patent"],
    "names the GNU GPL": [r"general public licen[cs]e", r"\bgpl\b"],
}


def key_facts(summary: str) -> dict[str, bool]:
    text = " ".join(summary.lower().split())
    return {fact: any(re.search(pattern, text) for pattern in patterns) for fact, patterns in KEY_FACTS.items()}


def similarity(summary: str, document: str) -> float:
    """Cosine similarity of the summary's and the document's mean sentence vectors (MiniLM)."""
    import numpy as np

    from llmos_plugins.summarise import split_sentences
    from llmos_shell.toolkit import sentence_vectors

    def mean_vector(text: str):
        vector = sentence_vectors(split_sentences(text)).mean(axis=0)
        return vector / np.linalg.norm(vector)

    return round(float(mean_vector(summary) @ mean_vector(document)), 3)


def load() -> float:
    return round(os.getloadavg()[0], 2)


@contextmanager
def long_texts(way: str):
    old = os.environ.get("LLMOS_SUMMARISE_LONG")
    os.environ["LLMOS_SUMMARISE_LONG"] = way
    try:
        yield
    finally:
        os.environ.pop("LLMOS_SUMMARISE_LONG") if old is None else os.environ.update(LLMOS_SUMMARISE_LONG=old)


def summarise(system, path: str, way: str, length: str, document: str) -> dict:
    """One call of the syscall through the gate, as ``llmos call`` makes it, timed."""
    events: list[tuple] = []
    before = load()
    system.cpu.reset()   # each way reads its prompt from scratch: no KV cache left by the other
    with long_texts(way):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = system.call("summarise", {"path": path, "length": length}, by_user=True,
                             progress=lambda done, total, message: events.append((done, total, message)))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    found = key_facts(result["summary"])
    # CPU seconds (every thread of this process) move less with the machine's load than wall seconds
    return {"seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "load_1m": [before, load()],
            "model_calls": result["model_calls"],
            "chunks": result["chunks"], "extract": result.get("extract"),
            "key_facts": round(sum(found.values()) / len(found), 2),
            "missing": [fact for fact, ok in found.items() if not ok],
            "similarity": similarity(result["summary"], document),
            "progress_reports": len(events), "summary": result["summary"]}


def compare(system, path: str, length: str, document: str) -> dict:
    old = summarise(system, path, "map-reduce", length, document)
    new = summarise(system, path, "extract", length, document)
    return {"old_map_reduce": old, "new_extract": new, "ratio_new_over_old": round(new["seconds"] / old["seconds"], 3)}


def excerpt_of(text: str, chars: int) -> str:
    """The first paragraphs of ``text``, as many as fit ``chars``."""
    kept = ""
    for paragraph in text.split("\n\n"):
        if len(kept) + len(paragraph) + 2 > chars:
            break
        kept += paragraph + "\n\n"
    return kept


def cli_seconds(home: str, path: str, length: str) -> dict:
    """The new way end to end: a fresh ``llmos call`` process (model load included)."""
    before = load()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llmos_shell", "--home", home, "call", "summarise",
                           json.dumps({"path": path, "length": length}), "--json"],
                          capture_output=True, text=True, env={**os.environ, "LLMOS_SUMMARISE_LONG": "extract"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"llmos call failed ({done.returncode}): {done.stderr[-500:]}")
    return {"seconds": round(seconds, 1), "load_1m": [before, load()],
            "model_calls": json.loads(done.stdout)["model_calls"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LLMOS_MODEL", DEFAULT_MODEL))
    parser.add_argument("--document", type=Path, default=GPL)
    parser.add_argument("--length", default="medium", choices=("short", "medium", "long"))
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end `llmos call` timing")
    args = parser.parse_args()
    if not args.document.is_file():
        raise SystemExit(f"{args.document} is missing (Debian's base-files has it); give --document PATH")

    from llmos_shell.system import System

    text = args.document.read_text(encoding="utf-8")
    home = tempfile.mkdtemp(prefix="llmos-bench-summarise-")
    try:
        system = System(Config.load(home=home, model=args.model), entry_points=False)
        system.fs.write("/docs/whole.txt", text)   # through the real SQLite filesystem
        system.fs.write("/docs/excerpt.txt", excerpt_of(text, EXCERPT_CHARS))
        cpu = system.cpu   # loaded once, before any timing
        report = {
            "model": cpu.name, "n_ctx": cpu.n_ctx, "length": args.length, "document": str(args.document),
            "tokens": {"whole": cpu.count_tokens(text), "excerpt": cpu.count_tokens(system.fs.read_text("/docs/excerpt.txt"))},
            "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "whole": compare(system, "/docs/whole.txt", args.length, text),
            "excerpt": compare(system, "/docs/excerpt.txt", args.length, system.fs.read_text("/docs/excerpt.txt")),
        }
        system.close()
        if not args.no_cli:
            report["whole_by_llmos_call"] = cli_seconds(home, "/docs/whole.txt", args.length)
        report["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
