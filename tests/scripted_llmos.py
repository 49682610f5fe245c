"""The real `llmos` command line with scripted models, for tests that need a separate OS process.

Usage: python tests/scripted_llmos.py SCRIPT.json [LLMOS ARGUMENTS...]

SCRIPT.json is ``{"replies": [...], "topics": [...], "token_delay": 0.0, "load_seconds": 0}``.
``replies`` are the texts the CPU generates, in order (llmos_shell.testing.FakeCpu), a word every
``token_delay`` seconds. ``load_seconds`` makes loading the model take that long, the way
LlamaCpu loads one: on a worker thread, the main thread waiting for it (a file ``loading``
beside SCRIPT.json appears when it starts). ``topics`` script the
router's sentence encoder: texts that contain a topic word share a strong axis
(a request with the word "echo" is routed to a syscall whose examples say
"echo"), any other text points somewhere random (such a request matches no
syscall in particular: the model answers it).
Everything else is `llmos` as a user runs it (`run task.md`, or nothing for the
shell): the kernel, router, drivers, filesystem and CLI are the real ones, so a
test can SIGKILL `llmos run` mid-task or press Ctrl-C in the shell without
waiting for real models.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmos_shell.cpu import models  # noqa: E402
from llmos_shell.kernel import embed  # noqa: E402
from llmos_shell.cli.app import main  # noqa: E402
from llmos_shell.testing import FakeCpu  # noqa: E402


class TopicEncoder:
    """Texts of one topic share a strong axis of their own; every other text gets a random direction
    (seeded by the text) in the remaining dimensions, so it is close to nothing in particular."""

    DIMENSIONS = 64
    STRENGTH = 3.0   # a topic outweighs whatever else a router weighs (its bias for answering itself)

    def __init__(self, topics: list[str]) -> None:
        self.topics = [topic.lower() for topic in topics]

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), len(self.topics) + self.DIMENSIONS), dtype=np.float32)
        for row, text in enumerate(texts):
            words = set(re.findall(r"\w+", text.lower()))
            axis = next((i for i, topic in enumerate(self.topics) if topic in words), None)
            if axis is not None:
                vectors[row, axis] = self.STRENGTH
            else:
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
                direction = np.random.default_rng(seed).standard_normal(self.DIMENSIONS)
                vectors[row, len(self.topics):] = direction / np.linalg.norm(direction)
        return vectors


def run() -> None:
    script = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    cpu = FakeCpu(script.get("replies", []), token_delay=script.get("token_delay", 0.0))
    encoder = TopicEncoder(script.get("topics", []))
    load_seconds = script.get("load_seconds", 0)

    def load_cpu(config, model=None):   # what System.cpu calls to load the model
        if load_seconds:
            (Path(sys.argv[1]).parent / "loading").write_text("loading")
            loaded: Future = Future()
            threading.Thread(target=lambda: (time.sleep(load_seconds), loaded.set_result(cpu)), daemon=True).start()
            return loaded.result()
        return cpu

    models.load_cpu = load_cpu
    embed.shared_encoder = lambda: encoder              # what the kernel's router loads
    main(sys.argv[2:])


if __name__ == "__main__":
    run()
