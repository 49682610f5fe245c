"""The turn engine: one request of one process, from its words in the context to the turn's end.

The engine owns the mechanism every turn shares, whoever decides what to call:

* the turn's life: the process marked running, the request added to its context, the planner
  run, every way a turn ends turned into a status (a cancel, a kernel error, a bug), the
  process marked with it, and the CPU settled (snapshots.py);
* the CPU's questions: a context switch before each prompt, p(call) (``wants_call``), the reply
  streamed token by token (``reply``);
* dispatch: each call validated, approved (the policy applied from the syscall's capabilities,
  never left to the model), run through the gate and audited; its result back into the context.

What to call is the planner's: the router's plan for requests over the drivers
(plan_router.py), the model's own choice for declared functions (plan_model.py), or the
client's own results to answer (``ResultsPlanner``: ``llmos serve`` after the client ran its
tool calls). Only the run queue (scheduler.py) starts a turn, through :meth:`Kernel.run`.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from llmos_shell.errors import Cancelled, Denied, LlmosError
from llmos_shell.fs.versions import acting
from llmos_shell.gate import Approval, Gate, one_line
from llmos_shell.kernel.destinations import Roles, roles
from llmos_shell.kernel.grounding import Source, all_said
from llmos_shell.kernel.language import WORDS
from llmos_shell.kernel.process import Process
from llmos_shell.kernel.turn import (Events, SyscallRecord, TurnResult, normalise_quietly, read_paths,
                                     result_text, stores)
from llmos_shell.syscalls import Syscall, SyscallTable

if TYPE_CHECKING:
    from llmos_shell.kernel.loop import Kernel

log = logging.getLogger("llmos.kernel")

# First tokens that start a tool call in the formats small models use.
CALL_STARTS = ("<tool_call>", "```", "{")


class KernelMachine(Protocol):
    """The parts the kernel runs on (a :class:`~llmos_shell.system.System` has them)."""

    fs: Any                # the filesystem: processes, messages, files
    cpu: Any               # the CPU, loaded on first use
    loaded_cpu: Any        # the CPU if already loaded, else None
    context_switch: Any    # whose context the CPU holds, the others' KV snapshots (snapshots.py); or None
    table: SyscallTable    # every driver's syscalls
    gate: Gate             # the one way a syscall runs
    config: Any


@dataclass
class Run:
    """How one turn runs: who hears of it, what stops it, how the reply is sampled."""

    events: Events
    cancel: threading.Event
    seed: int | None = None
    temperature: float = 0.0


class Planner(Protocol):
    """Decides what a turn calls. The request is in the context when :meth:`turn` starts."""

    def turn(self, process: Process, text: str, turn: TurnResult, run: Run) -> None:
        """Take the turn to its end: calls through :meth:`Engine.dispatch`, the reply through
        :meth:`Engine.reply`; set ``turn.status`` (and ``turn.error``). Raise Cancelled to stop."""


class Engine:
    """Runs a turn for a planner: the process's status, the CPU, dispatch, the reply, cancel, settle."""

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel          # the settings: approve, max_tokens, policy, force_call, stop, ...
        self.machine = kernel.machine

    @property
    def cpu(self):
        return self.machine.cpu

    # --- the turn's life --------------------------------------------------------------------

    def run(self, process: Process, text: str, planner: Planner, run: Run, *, role: str = "user") -> TurnResult:
        """One turn: ``text`` (a ``user`` request, or a client's ``tool`` results) into the context,
        then the planner, until a reply, a declared call, a denial, the step limit or a cancel."""
        with acting(process.pid):   # the files this request changes are one undoable request's
            turn = TurnResult(status="running")
            process.status = "running"
            self.machine.fs.set_process_status(process.pid, "running")
            if role == "user":
                process.memory.add("user", text, tokens=0)
            else:
                process.memory.add(role, text)
            try:
                planner.turn(process, text, turn, run)
            except (Cancelled, KeyboardInterrupt):
                turn.status = "interrupted"
                turn.error = "interrupted"
            except LlmosError as error:
                log.exception("turn failed")
                turn.status = "error"
                turn.error = str(error)
            except Exception as error:  # a bug must not leave the process running: record it, then raise
                turn.status = "error"     # (the caller logs the traceback: tasks, the shell)
                turn.error = f"internal error: {type(error).__name__}: {error}"
                raise
            finally:
                if turn.status == "running":  # left by an exception nobody expected (SystemExit, ...)
                    turn.status = "error"
                self.finish(process, turn.status)
                self.settle(process)
            return turn

    def finish(self, process: Process, status: str) -> None:
        process.status = status
        self.machine.fs.set_process_status(process.pid, status)

    def release(self, process: Process) -> None:
        """The process will not run again (a task that ended): no KV snapshot is kept for it."""
        switch = self.machine.context_switch
        if switch is not None:
            switch.release(process.pid)

    def settle(self, process: Process) -> None:
        """After a turn: a pinned prefix this process was the first to read is saved (snapshots.py)."""
        cpu = self.machine.loaded_cpu
        switch = self.machine.context_switch if self.kernel.snapshots else None
        if switch is not None and cpu is not None:
            switch.settle(cpu, process.pid)
        if cpu is not None:   # what `ps` shows: the context's size, and its KV state's
            try:
                # a routed process's prompts show only the syscalls of its plan (none when it replies)
                shown = process.memory.render(cpu, tools=[] if process.routed else None)
                self.machine.fs.set_process_usage(process.pid, cpu.count_tokens(shown), cpu.kv_bytes())
            except Exception:  # figures for people: a turn never fails for them
                log.exception("recording the usage of process %s", process.pid)

    # --- the CPU ----------------------------------------------------------------------------

    def on_cpu(self, process: Process, prompt: str, tools: list[dict] | None = None) -> None:
        """Before the CPU evaluates ``prompt``: if it holds another process's context, a context switch
        (that one's KV state saved, this one's restored, or its pinned prefix: see snapshots.py).
        ``tools``: the syscall table the prompt shows, as in Memory.render."""
        switch = self.machine.context_switch if self.kernel.snapshots else None
        if switch is not None:
            memory = process.memory
            # after an eviction the system prompt says so: not a prefix any other process shares
            switch.enter(self.cpu, process.pid, prompt,
                         pinned=None if memory.swapped else lambda: memory.pinned(self.cpu, tools))

    def wants_call(self, process: Process, prompt: str, threshold: float, turn: TurnResult) -> bool:
        """Is the model likely to start a call here (p(call) at least ``threshold``)?"""
        if self.kernel.force_call:
            return True
        self.on_cpu(process, prompt)
        try:
            logprobs = self.cpu.next_token_logprobs(prompt, CALL_STARTS)
        except NotImplementedError:
            return True
        turn.count(self.cpu.decision_stats, "decision")
        p_call = sum(math.exp(v) for v in logprobs.values())
        log.debug("p(call) = %.3f (threshold %.2f)", p_call, threshold)
        return p_call >= threshold

    def reply(self, process: Process, prompt: str, turn: TurnResult, run: Run,
              tools: list[dict] | None = None) -> str:
        """The model's reply to ``prompt``, streamed to ``run.events`` and kept in the context."""
        kernel = self.kernel
        self.on_cpu(process, prompt, tools)
        generation = None
        pieces: list[str] = []

        def on_token(piece: str) -> None:
            pieces.append(piece)
            run.events.token(piece)

        try:
            # Having decided to reply, don't let the reply open with a call-like token.
            if kernel.reply_grammar:
                generation = self.cpu.generate(prompt, max_tokens=kernel.max_tokens, grammar=kernel.reply_grammar,
                                               seed=run.seed, temperature=0.0, on_token=on_token, cancel=run.cancel)
            else:
                generation = self.cpu.generate(prompt, max_tokens=kernel.max_tokens, seed=run.seed, stop=kernel.stop,
                                               temperature=run.temperature, on_token=on_token, cancel=run.cancel,
                                               ban_first=CALL_STARTS if len(process.table) else ())
        finally:
            if generation is None or generation.cancelled:  # keep what was said, marked as interrupted
                process.memory.add("assistant", "".join(pieces) + " [interrupted]")
                turn.output = "".join(pieces).strip()
        turn.count(generation.stats, "reply")
        if generation.cancelled:
            raise Cancelled("cancelled")
        text = generation.text.strip()
        process.memory.add("assistant", text, tokens=generation.stats.decode_tokens)
        return text

    # --- dispatch ---------------------------------------------------------------------------

    def dispatch(self, process: Process, calls: list[dict], turn: TurnResult, run: Run, request: str = "") -> bool:
        """Run the calls; return True if the turn ends here (declared calls or a denial)."""
        declared = False
        for call in calls:
            syscall = process.table.get(call["name"])
            record = SyscallRecord(name=call["name"], arguments=call["arguments"])
            started = time.time()
            clock = time.perf_counter()
            run.events.syscall_started(record.name, record.arguments)
            if syscall.declared:  # returned to the caller, not run: the kernel audits it here
                try:  # where a schema says more than its grammar can (a lookahead pattern), check it
                    syscall.validate(record.arguments)
                    record.status = "declared"
                    declared = True
                except LlmosError as error:
                    record.status, record.error = "error", str(error)
                record.ms = 1000 * (time.perf_counter() - clock)
                self.machine.fs.record_syscall(process.pid, record.name, record.arguments, record.status,
                                               result=record.result, error=record.error, started=started,
                                               ms=record.ms)
            else:  # the gate validates, approves, runs and audits it
                self._execute(process, syscall, record, run, request, turn)
                record.ms = 1000 * (time.perf_counter() - clock)
            turn.syscalls.append(record)
            run.events.syscall_finished(record)
            if record.status == "denied":
                turn.status = "denied"
                turn.error = f"{record.name} was denied by the approval policy ({self.kernel.approve})"
                return True
            if not declared:
                content = result_text(record.result) if record.status == "ok" else f"error: {record.error}"
                process.memory.add("tool", content)
        if declared:
            turn.status = "tool_calls"
            return True
        return False

    def approval(self, syscall: Syscall, events: Events, request: str = "", roles: Roles | None = None) -> Approval:
        """The policy a call of ``syscall`` made for ``request`` runs under. ``roles``: the request's
        paths (destinations.py); replacing a destination it names is no loss (its old version is kept)."""
        def said(arguments: dict[str, Any]) -> bool:
            return all_said({"arguments": arguments}, syscall.parameters, Source([request]))

        # Text from tools is data: an irreversible call whose values the user never said (they came
        # from a file, OCR, a transcript) is asked about even under "auto".
        approval = Approval(self.kernel.approve, confirm=events.confirm, said=said if request else None,
                            destination=roles.is_destination if roles is not None else None)
        if self.kernel.advice:
            approval.advice = self.kernel.advice
        return approval

    def roles(self, request: str) -> Roles:
        """The request's paths, and which of them it names as where to store (before any step runs)."""
        return roles(request, lambda path: self.kind_of(path) is not None)

    def kind_of(self, path: str) -> str | None:
        """The MIME type of an existing file, ``inode/directory`` for a folder, None if nothing is there."""
        try:
            info = self.machine.fs.stat(path)
        except LlmosError:
            return None
        return "inode/directory" if info["kind"] == "dir" else (info.get("mime") or "application/octet-stream")

    def _execute(self, process: Process, syscall: Syscall, record: SyscallRecord, run: Run,
                 request: str = "", turn: TurnResult | None = None) -> None:
        path = record.arguments.get("path")
        if (turn is not None and stores(syscall) and isinstance(path, str) and not record.arguments.get("append")
                and not turn.roles.is_asked(path) and normalise_quietly(path) in read_paths(process, turn)):
            record.status = "error"
            record.error = (f"not storing over {path}: this request read it, and does not name it as where "
                            "to store; store to another path")
            self.machine.fs.record_syscall(process.pid, record.name, record.arguments, "error",
                                           error=record.error, started=time.time(), ms=0.0)
            return
        try:
            record.result = self.machine.gate.call(syscall, record.arguments,
                                                   approval=self.approval(syscall, run.events, request,
                                                                          turn and turn.roles),
                                                   pid=process.pid, cancel=run.cancel,
                                                   progress=functools.partial(run.events.progress, syscall.name))
            if isinstance(record.result, bytes):
                record.result = result_text(record.result)
        except Denied as error:
            record.status, record.error = "denied", str(error)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as error:  # a driver's failure is the model's information, not the kernel's end
            log.exception("syscall %s failed", syscall.name)
            record.status, record.error = "error", one_line(error)


class ResultsPlanner:
    """The client ran the calls (``llmos serve``): its results are in the context; the model answers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def turn(self, process: Process, text: str, turn: TurnResult, run: Run) -> None:
        engine = self.engine
        prompt, _used = process.memory.prompt(engine.cpu, reserve=engine.kernel.max_tokens,
                                              transient=WORDS.answer_now)
        turn.output = engine.reply(process, prompt, turn, run)
        turn.status = "ok"
