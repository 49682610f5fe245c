"""The CPU interface the kernel talks to: tokenize, chat template, generate with
streaming, grammar, stop sequences, seed and cancellation, and the likelihoods the
kernel's decisions use. :mod:`llmos_shell.cpu.llama` implements it in-process.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from llmos_shell.errors import Cancelled

TokenCallback = Callable[[str], None]


@dataclass
class GenerationStats:
    """Timing of one generation, as ``llmos run --json`` reports it per turn."""

    prefill_tokens: int = 0      # prompt tokens evaluated this time
    cached_tokens: int = 0       # prompt tokens reused from the KV cache
    ttft_ms: float = 0.0         # time to first token
    decode_tokens: int = 0
    decode_tok_s: float = 0.0
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def clock(self, started: float, first: float | None, last: float | None) -> None:
        """Fill in the times from when the request started and its first and last tokens came."""
        if first is not None:
            self.ttft_ms = 1000 * (first - started)
            if self.decode_tokens > 1 and last > first:
                self.decode_tok_s = (self.decode_tokens - 1) / (last - first)
        self.total_ms = 1000 * (time.perf_counter() - started)


@dataclass(frozen=True)
class SequenceState:
    """One sequence's KV cache, as a context switch saves it: the model, the exact tokens the cache
    holds, and llama.cpp's bytes for them (``llama_state_seq_get_data``; no logits)."""

    model_sha256: str
    tokens: tuple[int, ...]
    data: bytes

    @property
    def nbytes(self) -> int:
        return len(self.data) + 4 * len(self.tokens)


@dataclass
class Generation:
    text: str
    finish_reason: str            # "stop", "length" or "cancelled"
    stats: GenerationStats = field(default_factory=GenerationStats)

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"


class Cpu(ABC):
    """What the kernel needs from a model."""

    name: str = "cpu"
    sha256: str | None = None
    n_ctx: int = 2048
    # What the last decision (next_token_logprobs, logprob) cost: tokens evaluated and reused, time.
    decision_stats: GenerationStats | None = None

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` (special tokens such as ``<|im_start|>`` parsed as such)."""

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    @abstractmethod
    def format_chat(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None) -> str:
        """The prompt for ``messages`` in the model's own chat template, ending with the assistant prompt."""

    @abstractmethod
    def generate(self, prompt: str, *, max_tokens: int = 512, grammar: str | None = None,
                 stop: Sequence[str] = (), seed: int | None = None, temperature: float = 0.0,
                 on_token: TokenCallback | None = None, cancel: threading.Event | None = None,
                 ban_first: Sequence[str] = ()) -> Generation:
        """Continue ``prompt``. Under a ``grammar`` (GBNF) decoding is greedy and ends as soon as the
        text is complete under it; ``on_token`` gets each piece of text as it comes;
        setting ``cancel`` stops generation within one token (finish_reason "cancelled");
        the first token may not start with any of ``ban_first`` (e.g. a reply must not open a call)."""

    def next_token_logprobs(self, prompt: str, candidates: Iterable[str]) -> dict[str, float]:
        """Log-probability that the next token starts with each candidate string (for decisions)."""
        raise NotImplementedError

    def logprob(self, prefix: str, text: str) -> tuple[float, int]:
        """Log-probability of ``text`` right after ``prefix`` (plain text, no chat template), and the
        number of tokens of ``text`` (for decisions that compare likelihoods)."""
        raise NotImplementedError

    # --- KV state, for context switches (a CPU that keeps none leaves these as they are) ---------

    #: True if this CPU can save and restore its KV state (:meth:`save_sequence_state`).
    can_snapshot: bool = False

    def model_sha256(self) -> str | None:
        """The sha256 of the model file: what a saved state is tied to."""
        return self.sha256

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading ``tokens`` the KV cache already holds."""
        return 0

    def save_sequence_state(self, n_tokens: int | None = None) -> SequenceState | None:
        """The KV cache as it is now, or only its first ``n_tokens`` (None if it is empty)."""
        return None

    def load_sequence_state(self, state: SequenceState) -> bool:
        """Make ``state`` the KV cache, so the next prompt that starts with its tokens only evaluates
        the rest. False (and an empty cache) if it does not fit this CPU: nothing is ever half-loaded."""
        return False

    def kv_bytes(self) -> int | None:
        """The size in bytes of the KV state the cache holds now (what a snapshot of it takes); None
        if unknown (a remote CPU)."""
        return None

    def prefill(self, tokens: Sequence[int]) -> int:
        """Make the KV cache hold exactly ``tokens``, evaluating what it lacks; returns how many were evaluated."""
        raise NotImplementedError

    def chat(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> str:
        """Convenience for drivers: one reply to ``messages``, as text."""
        generation = self.generate(self.format_chat(messages), **kwargs)
        if generation.cancelled:
            raise Cancelled("cancelled")
        return generation.text

    def close(self) -> None:
        pass
