"""What the in-process CPU needs of a ``llama_cpp.Llama`` beyond its public Python API, in one place.

Most of it goes through llama.cpp's public C API on the handles ``Llama`` exposes (``llm.ctx``,
``llm.model``). Four needs have no public way in llama-cpp-python and use its private names:
decoding a batch that keeps every position's logits, marking the current logits stale after a
KV state is loaded, and quieting the library's logger after a verbose load. ``PRIVATE_NAMES``
lists them; tests/test_private_apis.py checks each against the pinned version (constraints.txt),
so an upgrade that renames one fails there by name instead of deep inside a generation.

Everything here runs on the CPU's worker thread, which owns the ``Llama``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: The private names used below: where each lives, and what it must be.
PRIVATE_NAMES = {
    "llama_cpp._logger.set_verbose": "a function (verbose: bool)",
    "Llama._batch.set_batch": "a method (batch, n_past, logits_all)",
    "Llama._ctx.decode": "a method (batch)",
    "Llama._requires_eval": "a bool attribute that Llama.generate reads before reusing the current logits",
}


def quiet_library_log() -> None:
    """llama-cpp-python's own logger: errors only from now on (as after ``Llama(verbose=False)``)."""
    import llama_cpp._logger

    llama_cpp._logger.set_verbose(False)


def vocab(llm):
    """The model's vocabulary handle (for llama.cpp's grammar and vocabulary functions)."""
    import llama_cpp

    return llama_cpp.llama_model_get_vocab(llm.model)


def token_text(llm, token: int) -> str:
    """A token's text in the vocabulary (with the tokenizer's marks, e.g. ``Ġ`` for a space)."""
    import llama_cpp

    return llama_cpp.llama_vocab_get_text(vocab(llm), token).decode("utf-8")


def token_bytes(llm, token: int) -> bytes:
    """The bytes a generated token adds to the text, special tokens written out."""
    return llm.detokenize([token], special=True)


def logits(llm, rows: int = 1) -> np.ndarray:
    """The logits of the last decode's output positions (a view: copy to keep it past the next decode)."""
    import llama_cpp

    array = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(rows, llm.n_vocab()))
    return array[0] if rows == 1 else array


def evaluated_tokens(llm) -> list[int]:
    """The token ids whose KV cells the context holds, in order."""
    return llm.input_ids[: llm.n_tokens].tolist()


def forget_from(llm, position: int) -> bool:
    """Drop the KV cells of sequence 0 from ``position`` on (``llm.n_tokens`` is the caller's to set)."""
    import llama_cpp

    return bool(llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), 0, position, -1))


def decode_keeping_all_logits(llm, tokens: Sequence[int]) -> None:
    """Evaluate ``tokens`` (at most ``llm.n_batch``) after what the context holds, keeping the logits
    of every position (``Llama.eval`` keeps only the last's); read them with ``logits(llm, len(tokens))``."""
    forget_from(llm, llm.n_tokens)
    llm._batch.set_batch(batch=list(tokens), n_past=llm.n_tokens, logits_all=True)
    llm._ctx.decode(llm._batch)
    llm.input_ids[llm.n_tokens: llm.n_tokens + len(tokens)] = tokens
    llm.n_tokens += len(tokens)


def mark_logits_stale(llm) -> None:
    """After a KV state is loaded no logits came with it: ``Llama.generate`` must evaluate the last
    prompt token again rather than sample from whatever logits the context last computed."""
    llm._requires_eval = True
