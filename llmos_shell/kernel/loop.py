"""The kernel: runs processes on the machine's CPU, one turn at a time.

:class:`Kernel` is the kernel as its callers see it: its settings (the approval policy, the step
and token limits, the :class:`KernelPolicy`), processes (``spawn``, ``finish``, ``release``) and
the turn (``run``), which only the run queue calls (scheduler.py). The work is done behind it:

* engine.py, the turn engine: the turn's life, the CPU's questions, dispatch, the reply;
* a planner decides what the turn calls: plan_router.py (the router's plan, for requests over
  the drivers), plan_model.py (the model chooses, for declared functions), or the engine's
  ResultsPlanner (an API client's tool results to answer);
* turn.py, what a turn is made of; policy.py, the thresholds; language.py, every English word.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Iterable

from llmos_shell.gate import Approval, Approve
from llmos_shell.kernel.destinations import Roles
from llmos_shell.kernel.engine import CALL_STARTS, Engine, KernelMachine, ResultsPlanner, Run
from llmos_shell.kernel.language import WORDS
from llmos_shell.kernel.memory import Memory
from llmos_shell.kernel.plan_model import ModelPlanner
from llmos_shell.kernel.plan_router import RouterPlanner
from llmos_shell.kernel.policy import KernelPolicy
from llmos_shell.kernel.process import Process
from llmos_shell.kernel.router import Router
from llmos_shell.kernel.turn import Events, SyscallRecord, TurnResult, lines_asked_for, result_text, shown
from llmos_shell.syscalls import Syscall, SyscallTable, declared_syscall

__all__ = ["Events", "Kernel", "KernelPolicy", "SyscallRecord", "TurnResult", "lines_asked_for", "result_text",
           "shown"]


def _policy_setting(name: str) -> property:
    """A threshold of the kernel's policy, settable on the kernel (``kernel.call_threshold = 0``)."""
    def get(kernel: "Kernel") -> float:
        return getattr(kernel.policy, name)

    def set_(kernel: "Kernel", value: float) -> None:
        kernel.policy = dataclasses.replace(kernel.policy, **{name: value})

    return property(get, set_, doc=f"KernelPolicy.{name}")


class Kernel:
    """Runs processes on the machine's CPU."""

    call_threshold = _policy_setting("call_threshold")
    chain_threshold = _policy_setting("chain_threshold")
    relevance_threshold = _policy_setting("relevance_threshold")
    unwanted_call_relevance = _policy_setting("unwanted_call_relevance")

    def __init__(self, machine: KernelMachine, *, approve: Approve = "never", max_steps: int = 8,
                 max_tokens: int = 512, policy: KernelPolicy | None = None, events: Events | None = None,
                 snapshots: bool = True, force_call: bool = False, stop: tuple[str, ...] = (),
                 reply_grammar: str | None = None) -> None:
        self.machine = machine
        self.approve = approve
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.policy = policy or KernelPolicy()
        self.events = events or Events()
        # Context switches by KV snapshot (off: another process's prompt is evaluated in full).
        self.snapshots = snapshots
        # The caller wants a call (an API client's tool_choice "required" or a named function): the
        # two questions whether to call (the model's p(call), the syscall's relevance) are not asked;
        # the call is still decoded under the grammar and checked.
        self.force_call = force_call
        # An API client's ``stop`` sequences, and its ``response_format`` as a grammar (GBNF) the reply
        # is decoded under: they shape the reply only, never a call.
        self.stop = tuple(stop)
        self.reply_grammar = reply_grammar
        self.advice: str | None = None   # what a denial says to do, where the CLI's --approve is not the way
        self.engine = Engine(self)
        self._planners = {"routed": RouterPlanner(self.engine), "model": ModelPlanner(self.engine),
                          "results": ResultsPlanner(self.engine)}

    @property
    def cpu(self):
        return self.machine.cpu

    @property
    def router(self) -> Router:
        return self._planners["routed"].router

    # --- processes ------------------------------------------------------------------------

    def spawn(self, name: str, *, functions: Iterable[dict] | None = None, drivers: Iterable[str] | None = None,
              system_prompt: str | None = None, instructions: str | None = None,
              parent: int | None = None) -> Process:
        """A new process whose table holds the allowed drivers' syscalls and any declared functions.
        ``instructions``: a caller's own system text, after the kernel's system prompt."""
        table = SyscallTable()
        functions = list(functions or [])
        if drivers is None:
            drivers = [] if functions else None
        allowed = None if drivers is None else set(drivers)
        for syscall in self.machine.table:
            if allowed is None or syscall.driver in allowed or syscall.name in allowed:
                table.add(syscall)
        for spec in functions:
            table.add(declared_syscall(spec))
        model = getattr(self.machine.loaded_cpu, "name", None) or self.machine.config.model
        pid = self.machine.fs.create_process(name, model=model, parent=parent)
        system_prompt = (system_prompt or WORDS.system_prompt) + (f"\n\n{instructions}" if instructions else "")
        memory = Memory(system_prompt=system_prompt, tools=[s.tool_schema() for s in table],
                        store=self.machine.fs, pid=pid)
        return Process(pid=pid, name=name, table=table, memory=memory)

    def finish(self, process: Process, status: str) -> None:
        self.engine.finish(process, status)

    def release(self, process: Process) -> None:
        """The process will not run again (a task that ended): no KV snapshot is kept for it."""
        self.engine.release(process)

    def prepare(self, process: Process) -> None:
        """Train the router on this process's table now: the shell does it while the model loads,
        so the first request does not wait for it."""
        if process.routed:
            self.router.prepare(process.table)

    def warm_up(self, process: Process, cpu) -> None:
        """Have ``cpu`` read this process's prompt and ask it the call question once, before the first
        request: its KV cache then holds the pinned prefix and the decision's tables are built."""
        try:
            cpu.next_token_logprobs(process.memory.render(cpu), CALL_STARTS)
        except NotImplementedError:
            pass

    def kind_of(self, path: str) -> str | None:
        """The MIME type of an existing file, ``inode/directory`` for a folder, None if nothing is there."""
        return self.engine.kind_of(path)

    def approval(self, syscall: Syscall, events: Events, request: str = "", roles: Roles | None = None) -> Approval:
        """The policy a call of ``syscall`` made for ``request`` runs under (see Engine.approval)."""
        return self.engine.approval(syscall, events, request, roles)

    # --- the turn -------------------------------------------------------------------------

    def run(self, process: Process, text: str, *, cancel: threading.Event | None = None,
            seed: int | None = None, temperature: float = 0.0, events: Events | None = None,
            role: str = "user") -> TurnResult:
        """One turn of ``process``: a user's request (``role`` user), or an API client's tool results
        to answer (``role`` tool). Callers go through the run queue (scheduler.py), which calls this."""
        if role == "user":
            planner = self._planners["routed" if process.routed else "model"]
        elif role == "tool":
            planner = self._planners["results"]
        else:
            raise ValueError(f"a turn starts with a user's request or tool results, not {role!r}")
        run = Run(events=events or self.events, cancel=cancel or threading.Event(), seed=seed,
                  temperature=temperature)
        return self.engine.run(process, text, planner, run, role=role)
