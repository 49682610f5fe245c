"""Greedy grammar-constrained decoding, checking the grammar on few tokens per step.

llama-cpp-python's sampler chain applies a grammar to every token of the
vocabulary at every step (151k tokens for Qwen): that, not the model, halved
decode speed. Greedy decoding only needs the best token the grammar allows, so
each step asks the grammar about the model's top token first, then about the
top ``TOP_K`` in logit order, and only when none of those fit about the whole
vocabulary. The chosen token is the same as with the full check (the best
allowed token is among the top ``TOP_K`` or found by the full pass), at a
fraction of the cost. llama.cpp's own sampler (common/sampling.cpp) takes the
same shortcut.

Everything here runs on the CPU's worker thread, which owns the ``Llama``.
"""

from __future__ import annotations

import codecs
import ctypes
from typing import Callable

import numpy as np

from llmos_shell.cpu import llama_private

TOP_K = 64
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class GrammarSampler:
    """One llama.cpp grammar sampler: which tokens may come next, and advancing past a token."""

    def __init__(self, llm, gbnf: str) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(llama_private.vocab(llm), gbnf.encode("utf-8"), b"root")
        if not self._sampler:
            raise ValueError("llama.cpp rejected the grammar")
        self._all = np.arange(llm.n_vocab(), dtype=np.int32)

    def allowed(self, ids: np.ndarray) -> np.ndarray:
        """A mask over ``ids``: True where the grammar allows that token next."""
        data = np.zeros(len(ids), dtype=_TOKEN_DATA)
        data["id"] = ids
        array = self._lib.llama_token_data_array(
            data=ctypes.cast(data.ctypes.data, self._lib.llama_token_data_p),
            size=len(ids), selected=-1, sorted=False)
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return np.isfinite(data["logit"])

    def best(self, logits: np.ndarray) -> int:
        """The highest-logit token the grammar allows (-1 if it allows none)."""
        top = np.array([int(np.argmax(logits))], dtype=np.int32)
        if self.allowed(top)[0]:
            return int(top[0])
        candidates = np.argpartition(-logits, TOP_K)[:TOP_K].astype(np.int32)
        candidates = candidates[np.argsort(-logits[candidates], kind="stable")]
        mask = self.allowed(candidates)
        if mask.any():
            return int(candidates[np.argmax(mask)])
        mask = self.allowed(self._all)
        if not mask.any():
            return -1
        return int(np.argmax(np.where(mask, logits, -np.inf)))

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None


def decode(llm, gbnf: str, max_tokens: int, *, end_tokens: np.ndarray,
           emit: Callable[[str], None], cancelled: Callable[[], bool]) -> tuple[str, str, int]:
    """Continue what ``llm`` has evaluated under ``gbnf``, greedily, until the text is complete
    under the grammar (the grammar would accept an end token), or ``max_tokens``.

    Stopping at the first complete point, rather than when the model picks an end
    token, keeps trailing whitespace out and leaves what comes next to the caller.
    Returns (text, finish_reason, tokens generated). The caller has already
    evaluated the prompt, so the context's last logits are the first step's."""
    end_tokens = np.asarray(end_tokens, dtype=np.int32)
    sampler = GrammarSampler(llm, gbnf)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces: list[str] = []
    count = 0
    finish = "length"
    try:
        while count < max_tokens:
            if cancelled():
                finish = "cancelled"
                break
            if sampler.allowed(end_tokens).any():
                finish = "stop"
                break
            logits = llama_private.logits(llm)
            token = sampler.best(logits)
            if token < 0:
                raise ValueError("the grammar allows no token here")
            sampler.accept(token)
            count += 1
            piece = utf8.decode(llama_private.token_bytes(llm, token))
            if piece:
                pieces.append(piece)
                emit(piece)
            llm.eval([token])
    finally:
        sampler.close()
    tail = utf8.decode(b"", final=True)
    if tail:
        pieces.append(tail)
        emit(tail)
    return "".join(pieces), finish, count
