"""Helpers drivers share (public: import from here): backend settings, and sentence vectors.

A driver lets the user choose its backend with an environment variable
(``LLMOS_OCR_BACKEND=auto|tesseract|rapidocr``) and reports what it can use in
``llmos drivers``::

    from llmos_shell.toolkit import Backend, backend_setting, usable

    backend = backend_setting("LLMOS_OCR_BACKEND", ("auto", "tesseract", "rapidocr"))
    labels, fixes = usable(backend, [Backend("tesseract", ok=..., fix="apt-get install tesseract-ocr"),
                                     Backend("rapidocr", ok=..., fix="pip install rapidocr-onnxruntime")])

A driver that compares texts by meaning (which sentences of a document matter) uses the
kernel's own sentence encoder through :func:`sentence_vectors`, never a model of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from llmos_shell.errors import UsageError
from llmos_shell.fs.paths import normalise as normalise_path  # noqa: F401  (a path as the filesystem writes it)


@dataclass
class Backend:
    """One way a driver can do its work, as ``llmos drivers`` reports it."""

    name: str
    ok: bool
    label: str = ""   # what the status shows when it is in use (default: the name)
    fix: str = ""     # why it cannot be used, and how to install it


def backend_setting(env: str, choices: Sequence[str], default: str = "auto") -> str:
    """The backend the user chose in ``env`` (case and spaces ignored); UsageError names the choices."""
    value = os.environ.get(env, default).strip().lower() or default
    if value not in choices:
        raise UsageError(f"{env}={value!r}: choose one of {', '.join(choices)}")
    return value


def usable(chosen: str, backends: Sequence[Backend]) -> tuple[list[str], list[str]]:
    """Of the backends the choice allows (``auto``: all of them, in order of preference), the
    labels of those that can run and the fixes of those that cannot, each as ``name: fix``
    unless the fix already says the name."""
    wanted = [b for b in backends if chosen == "auto" or b.name == chosen]
    labels = [b.label or b.name for b in wanted if b.ok]
    fixes = [b.fix if b.fix.startswith(b.name) else f"{b.name}: {b.fix}" for b in wanted if not b.ok and b.fix]
    return labels, fixes


def sentence_vectors(texts: Sequence[str], on_batch: Callable[[int, int], None] | None = None) -> Any:
    """Unit vectors of ``texts``, one NumPy row each in their order (a dot product is the cosine
    similarity): all-MiniLM-L6-v2, the encoder the kernel's router uses, on NumPy. Texts past 128
    tokens are read up to there. ``on_batch(done, total)`` is called after each batch (raise in it
    to stop). Raises :class:`~llmos_shell.errors.LlmosError` when the model's package is missing."""
    from llmos_shell.kernel.embed import shared_encoder

    return shared_encoder().encode_many(list(texts), on_batch=on_batch)
