"""The CPU: a language model behind the small interface the kernel talks to.

``base`` (the :class:`Cpu` interface and generation results), ``llama`` (a GGUF
model in-process), ``decoder`` (greedy grammar-constrained decoding), ``gguf_check``
(a model file checked before llama.cpp reads it), ``models`` (manifests,
installation, loading the configured model), ``hardware`` (what this processor can
safely do: no AMX buffers), ``probe`` (the first decode tried in a child process)
and ``sharing`` (threads that fit the free cores; one llmos program computes at a time, opt-in).
"""

from llmos_shell.cpu.base import Cpu, Generation, GenerationStats, SequenceState
from llmos_shell.cpu.llama import LlamaCpu

__all__ = ["Cpu", "Generation", "GenerationStats", "LlamaCpu", "SequenceState"]
