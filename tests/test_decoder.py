"""Greedy decoding under a grammar (cpu/decoder.py): each token is the most likely one the grammar allows.

The decoder asks the grammar about few tokens per step; these tests hold it to the full answer,
the argmax of the raw logits over every token the grammar allows, and to llama-cpp-python's own
sampler chain (grammar, then greedy), on the small test model.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import raw_llama
from llmos_shell.cpu import decoder, llama_private

pytestmark = pytest.mark.slow

# Digits and lower-case letters in a fixed frame: the model's own favourite is often not allowed,
# so the decoder's fallbacks (the top 64, then the whole vocabulary) are taken too.
GRAMMAR = r'''root ::= "{\"city\": \"" [a-z]+ "\", \"count\": " [0-9]+ ", \"tag\": \"" [a-z ]+ "\"}"'''
PROMPT = "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def llm(small_model_path):
    model = raw_llama(small_model_path, n_ctx=512, n_threads=2)
    yield model
    model.close()


def end_tokens(llm) -> np.ndarray:
    import llama_cpp

    vocab = llama_private.vocab(llm)
    return np.array([i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)], dtype=np.int32)


def test_each_token_is_the_argmax_of_the_tokens_the_grammar_allows(llm, monkeypatch):
    """Every step checked against the whole vocabulary: the decoder's token, and how often the
    model's own first choice was not allowed (so the check means something)."""
    steps: list[tuple[int, int, bool]] = []
    best = decoder.GrammarSampler.best

    def checked(sampler, logits):
        chosen = best(sampler, logits)
        allowed = sampler.allowed(sampler._all)
        steps.append((chosen, int(np.argmax(np.where(allowed, logits, -np.inf))),
                      bool(allowed[int(np.argmax(logits))])))
        return chosen

    monkeypatch.setattr(decoder.GrammarSampler, "best", checked)
    llm.reset()
    llm.eval(llm.tokenize(PROMPT.encode(), add_bos=False, special=True))
    text, finish, count = decoder.decode(llm, GRAMMAR, 60, end_tokens=end_tokens(llm),
                                         emit=lambda piece: None, cancelled=lambda: False)
    assert finish == "stop" and text.startswith('{"city": "') and count == len(steps)
    wrong = [(i, chosen, argmax) for i, (chosen, argmax, _) in enumerate(steps) if chosen != argmax]
    assert not wrong, f"steps where the decoder did not take the best allowed token: {wrong}"
    assert sum(not top_allowed for *_, top_allowed in steps) >= 3, "the grammar rarely overruled the model"


def test_best_is_the_argmax_over_allowed_tokens_whatever_the_logits(llm):
    """Random logits over the real vocabulary, in two grammar states: where few tokens are allowed
    (the best is rarely among the top 64: the whole vocabulary is searched) and where thousands are
    (the top token is rarely allowed, several of the top 64 are: their order decides)."""
    rng = np.random.default_rng(0)
    sampler = decoder.GrammarSampler(llm, r'root ::= "\"" [a-z]+ "\""')
    try:
        for state in ("before the opening quote", "inside the word"):
            allowed = sampler.allowed(sampler._all)
            assert 0 < allowed.sum() < len(allowed)
            # the whole-vocabulary search is slow; the order of the top 64 needs many draws to catch
            for _ in range(40 if state == "before the opening quote" else 400):
                logits = rng.standard_normal(llm.n_vocab()).astype(np.float32)
                expected = int(np.argmax(np.where(allowed, logits, -np.inf)))
                assert sampler.best(logits) == expected, f"{state}: not the best allowed token"
            if state == "before the opening quote":
                sampler.accept(llm.tokenize(b'"', add_bos=False)[0])
    finally:
        sampler.close()


def test_same_text_as_llama_cpp_python_sampler(llm):
    """llama-cpp-python's sampler chain with the grammar and temperature 0 (grammar, then greedy)."""
    from llama_cpp import LlamaGrammar

    prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llm.reset()
    reference = llm.create_completion(prompt, max_tokens=60, temperature=0.0, repeat_penalty=1.0,
                                      grammar=LlamaGrammar.from_string(GRAMMAR, verbose=False))["choices"][0]["text"]
    llm.reset()
    llm.eval(prompt)
    text, finish, _ = decoder.decode(llm, GRAMMAR, 60, end_tokens=end_tokens(llm),
                                     emit=lambda piece: None, cancelled=lambda: False)
    assert finish == "stop"
    assert text == reference
