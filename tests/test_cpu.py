"""The CPU: generation with both models, streaming, grammar, stop, seed, cancellation from another thread."""

from __future__ import annotations

import json
import threading
import time

import pytest


def chat(cpu, text: str) -> str:
    return cpu.format_chat([{"role": "user", "content": text}])


def test_generates_and_streams(small_cpu):
    pieces: list[str] = []
    generation = small_cpu.generate(chat(small_cpu, "Say hello."), max_tokens=24, on_token=pieces.append)
    assert generation.text.strip()
    assert "".join(pieces) == generation.text
    assert len(pieces) > 1  # streamed piece by piece, not in one block
    stats = generation.stats
    assert stats.prefill_tokens + stats.cached_tokens == small_cpu.count_tokens(chat(small_cpu, "Say hello."))
    assert stats.decode_tokens == len(pieces) and stats.ttft_ms > 0


def test_prefix_cache_is_reused(small_cpu):
    prompt = chat(small_cpu, "List three colours.")
    small_cpu.generate(prompt, max_tokens=4)
    again = small_cpu.generate(prompt, max_tokens=4)
    assert again.stats.cached_tokens >= small_cpu.count_tokens(prompt) - 1


def test_text_logprob_ranks_continuations(small_cpu):
    likely, n_tokens = small_cpu.logprob("The capital of France is", " Paris.")
    unlikely, _ = small_cpu.logprob("The capital of France is", " Broccoli.")
    assert n_tokens == len(small_cpu.tokenize(" Paris.")) and likely < 0
    assert likely > unlikely
    assert small_cpu.logprob("The capital of France is", " Paris.")[0] == pytest.approx(likely, abs=1e-3)


def test_a_decision_keeps_the_conversation_cache(small_cpu):
    prompt = chat(small_cpu, "Name a fruit.")
    first = small_cpu.generate(prompt, max_tokens=6)
    small_cpu.logprob("Function `eat`: Eats a fruit.\nA user's request:\n", "Name a fruit.")
    again = small_cpu.generate(prompt, max_tokens=6)
    assert again.stats.cached_tokens >= small_cpu.count_tokens(prompt) - 1
    assert again.text == first.text


def test_same_seed_same_text(small_cpu):
    prompt = chat(small_cpu, "Write a short line about the sea.")
    small_cpu.generate(prompt, max_tokens=1)  # both runs below then start from the same KV cache
    first = small_cpu.generate(prompt, max_tokens=20, temperature=0.9, seed=42).text
    second = small_cpu.generate(prompt, max_tokens=20, temperature=0.9, seed=42).text
    assert first == second


def test_stop_sequence(small_cpu):
    generation = small_cpu.generate(chat(small_cpu, "Count from 1 to 10, separated by commas."),
                                    max_tokens=60, stop=["5"])
    assert "5" not in generation.text and "6" not in generation.text


def test_grammar_constrains_output(small_cpu):
    grammar = 'root ::= "{" "\\"answer\\": " ("\\"yes\\"" | "\\"no\\"") "}"'
    generation = small_cpu.generate(chat(small_cpu, "Is the sky blue? Answer in JSON."), max_tokens=20,
                                    grammar=grammar)
    assert json.loads(generation.text)["answer"] in ("yes", "no")


def test_cancel_from_another_thread_stops_within_a_token(small_cpu):
    prompt = chat(small_cpu, "Tell me a very long story about a dragon.")
    cancel = threading.Event()
    seen: list[float] = []

    def on_token(piece: str) -> None:
        seen.append(time.perf_counter())
        if len(seen) == 5:
            threading.Thread(target=cancel.set).start()

    generation = small_cpu.generate(prompt, max_tokens=400, on_token=on_token, cancel=cancel)
    assert generation.cancelled
    assert 5 <= generation.stats.decode_tokens <= 7   # at most one more token after the cancel
    after = small_cpu.generate(chat(small_cpu, "Say hi."), max_tokens=8)   # and the CPU still works
    assert after.text.strip() and not after.cancelled


def test_many_threads_share_one_worker(small_cpu):
    results: list[str] = []
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            results.append(small_cpu.generate(chat(small_cpu, f"Say the number {n}."), max_tokens=6).text)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 4


def test_call_probability_signal(small_cpu):
    logprobs = small_cpu.next_token_logprobs(chat(small_cpu, "Hi"), ["{", "```"])
    assert set(logprobs) == {"{", "```"} and all(v <= 0 for v in logprobs.values())


@pytest.mark.model
def test_default_model_answers(default_cpu):
    generation = default_cpu.generate(chat(default_cpu, "What is the capital of France? One word."), max_tokens=10)
    assert "paris" in generation.text.lower()


def test_a_load_leaves_the_terminal_alone(small_model_path, monkeypatch, capfd):
    """llama-cpp-python's quiet load points the process's fds 1 and 2 at /dev/null while it loads; the
    shell loads in the background, so the output of commands typed meanwhile vanished. A load must not
    move them, and prints nothing of its own."""
    import os

    from llmos_shell.config import TEST_MODEL
    from llmos_shell.cpu import LlamaCpu

    moved = []
    real_dup2 = os.dup2

    def dup2(fd, fd2, *args):
        moved.append(fd2)
        return real_dup2(fd, fd2, *args)

    monkeypatch.setattr(os, "dup2", dup2)
    cpu = LlamaCpu(small_model_path, name=TEST_MODEL, max_ctx=512)
    try:
        assert chat(cpu, "Say hi.")
    finally:
        cpu.close()
    assert not {1, 2} & set(moved)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
