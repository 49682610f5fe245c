"""What this machine's processor can safely do for llama.cpp.

llama.cpp's CPU backend puts weights in "extra" buffer types when the processor has matching
instructions: AMX tiles on recent Xeons, and repacked (interleaved) quantised blocks on AVX2 and
ARM. The AMX path crashes at the first matrix product (ggml-org/llama.cpp#20824: a segmentation
fault in ``ggml_backend_amx_mul_mat``), so on a CPU with AMX llmos loads models without extra
buffers. Measured on a 2-core Sapphire Rapids Xeon (issue 23), that is also the fastest build that
does not crash: 194-196 tok/s prefill and 24.2 tok/s decode against 151-189 and 23.7-24.3 for a
build with AMX compiled out. Elsewhere the repacked buffers stay on: they speed up prefill.

``LLMOS_WEIGHT_REPACK=on|off|auto`` (default ``auto``) overrides the choice.
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from llmos_shell.errors import UsageError

SETTING = "LLMOS_WEIGHT_REPACK"
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags the kernel reports for this processor (empty where /proc is absent)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_amx(flags: frozenset[str] | None = None) -> bool:
    return any(flag in (cpu_flags() if flags is None else flags) for flag in AMX_FLAGS)


def extra_buffers(flags: frozenset[str] | None = None, setting: str | None = None) -> bool:
    """Whether llama.cpp may put weights in extra buffer types (AMX, repacked blocks) here."""
    value = (os.environ.get(SETTING, "auto") if setting is None else setting).strip().lower()
    if value in ("on", "1", "yes", "true"):
        return True
    if value in ("off", "0", "no", "false"):
        return False
    if value not in ("", "auto"):
        raise UsageError(f"{SETTING} must be on, off or auto, not {value!r}")
    return not has_amx(flags)


def describe(flags: frozenset[str] | None = None) -> str:
    """A short phrase for messages: what about this CPU matters to llama.cpp."""
    return "a CPU with AMX" if has_amx(flags) else "this CPU"


_loading = threading.Lock()


@contextmanager
def model_params(use_extra_bufts: bool):
    """Load a ``llama_cpp.Llama`` inside this block to set ``use_extra_bufts`` on its model.

    ``Llama()`` takes no argument for it: it starts from ``llama_model_default_params()``, so the
    block wraps that function (one load at a time). ``tests/test_hardware.py`` fails loudly if a
    new llama-cpp-python stops reading it.
    """
    import llama_cpp.llama_cpp as raw

    if use_extra_bufts:  # the library's default
        yield
        return
    with _loading:
        original = raw.llama_model_default_params

        def defaults():
            params = original()
            params.use_extra_bufts = False
            return params

        raw.llama_model_default_params = defaults
        try:
            yield
        finally:
            raw.llama_model_default_params = original
