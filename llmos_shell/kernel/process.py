"""Processes: each conversation or task is a process with a pid, a status and its own context."""

from __future__ import annotations

from dataclasses import dataclass

from llmos_shell.kernel.memory import Memory
from llmos_shell.syscalls import SyscallTable


@dataclass
class Process:
    """One conversation: its pid in the filesystem, the syscalls it may use, its memory."""

    pid: int
    name: str
    table: SyscallTable
    memory: Memory
    status: str = "ready"           # ready, running, done, error, denied, max_steps, interrupted, tool_calls
    parallel_calls: bool = True

    @property
    def declared(self) -> bool:
        """True if the process calls declared functions (returned to the caller, not run)."""
        return any(s.declared for s in self.table)

    @property
    def routed(self) -> bool:
        """True if the router chooses this process's syscalls (see router.py): its table holds drivers
        that declare example requests and no declared functions. Otherwise the model chooses (BFCL-style
        declared functions, drivers without examples) and the kernel checks its choice."""
        return not self.declared and any(s.examples for s in self.table)
