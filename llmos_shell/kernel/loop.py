"""The kernel: context -> CPU -> decode -> syscalls -> results -> again, until a reply.

Each step asks the CPU one cheap question first: how likely is the model to
start a tool call here (the probability mass of call-like first tokens such as
``<tool_call>``, ``{`` or a code fence)? Above a threshold, it decodes a call
under the grammar of the process's syscall table, so the call always names a
real syscall with schema-valid arguments; otherwise it decodes a plain reply,
streamed token by token. Below the threshold, the first step of a turn still
writes a candidate call and keeps it only if the request spells out every value
in it (small models answer from memory what a function would look up). A call
is then checked against what the user said: the first call of a turn must be
about the request (``_relevant``), values nobody said leave it, further calls
must be grounded or bring something new (grounding.py). Arguments are validated
again, the approval policy is applied from the syscall's capabilities (never
left to the model), the syscall runs through the plugin wrappers, and its result
(or error) goes back into the context. Declared functions (from task files) are returned to the caller.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from llmos_shell.config import machine_cache
from llmos_shell.cpu import GenerationStats
from llmos_shell.errors import Cancelled, Denied, LlmosError
from llmos_shell.gate import Approval, Approve, Gate, one_line
from llmos_shell.kernel.grammar import CALL_OPEN, MAX_PARALLEL_CALLS, call_grammar, parse_call, write_calls
from llmos_shell.fs.paths import normalise as normalise_path
from llmos_shell.fs.versions import acting
from llmos_shell.kernel.destinations import Roles, roles, store_choices
from llmos_shell.kernel.grounding import Source, all_said, grounded, refines, repeats, without_inventions
from llmos_shell.kernel.memory import Memory, sanitise
from llmos_shell.kernel.process import Process
from llmos_shell.kernel.places import ANY_PATH, PATH, named_paths
from llmos_shell.kernel.router import LEAD_IN, QUOTED, Router, Step
from llmos_shell.syscalls import Syscall, SyscallTable, declared_syscall

log = logging.getLogger("llmos.kernel")


SYSTEM_PROMPT = (
    "You are llmos, the assistant built into a local operating system. "
    "When one of the functions can do what the user asks, call it, taking argument values from the "
    "user's words. When no function fits, answer directly in plain text. Keep answers short."
)

# Shown (not kept) before the reply that follows syscall results: small models otherwise
# echo the results' JSON instead of answering.
ANSWER_NOW = {"role": "user", "content": "Based on the function results, what is your reply to my request?"}
# The question again, after the results it is answered from (requests over the drivers).
ANSWER_FROM = "Using the text above, answer this request: {request}"
# Shown before the reply when the model wanted a call the kernel did not make (an unrelated or
# repeated one): left alone, it writes that call out as text ("name: delete_file, arguments: ...").
NO_FUNCTION_FITS = {"role": "user", "content": "Reply to my last message in plain words, without calling a function."}

# The relevance test (Kernel._relevant) compares the likelihood of the function's own text (its
# name and description) after the request and after a request that says nothing. This direction
# scores only tokens about what the function does. The other one (the request's tokens after the
# description) was swung by the request's incidental tokens (a city, a "?", an address): "Weather
# in Oslo?" came out 0.48 nats a token less likely after get_weather's description than without.
RELEVANCE_ASKED = "A user's request: {request}\nThe function that handles this request:\n"
RELEVANCE_BASE = RELEVANCE_ASKED.format(request="Do what I ask.")
RELEVANCE_FUNCTION = "Function `{name}`: {description}"
# The other direction, still asked of a call the model did not want to make: both must agree.
# Its baseline is a function too, so that only what the description says makes the difference.
REQUEST_GIVEN = "Function `{name}`: {description}\nA user's request that this function handles:\n"
REQUEST_BASE = REQUEST_GIVEN.format(name="do", description="Does what it is asked.")
RELEVANCE_CHARS = 2000

# A file name without a folder ("report.txt"), and where such names are looked for.
BARE_NAME = re.compile(r"(?<![\w./-])[\w-]+\.[A-Za-z0-9]{1,5}\b(?!/)")
INPUT_FOLDERS = ("/inputs/", "/")

# A short request that gives no text of its own and opens like a follow-up ("And into Catalan?", "Now
# in German please") or points back ("translate it into French") works on the text the same syscall
# worked on last turn.
FOLLOW_UP_WORDS = 8
FOLLOW_UP = re.compile(r"(?i)^\s*(?:and|now|also|what about|how about|then|same|again|ok|okay)\b"
                       r"|\b(?:it|that|this|them|the same)\b")

# Syscalls that work on the filesystem.
FILE_CAPABILITIES = ("reads_fs", "writes_fs")


# First tokens that start a tool call in the formats small models use.
CALL_STARTS = ("<tool_call>", "```", "{")


@dataclass
class SyscallRecord:
    """One syscall of a turn, as the audit log and ``--json`` show it."""

    name: str
    arguments: dict[str, Any]
    status: str = "ok"            # ok, error, denied, declared
    result: Any = None
    error: str | None = None
    ms: float = 0.0

    @property
    def call(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments, "status": self.status,
                "result": self.result, "error": self.error, "ms": round(self.ms, 1)}


@dataclass
class TurnResult:
    status: str                   # ok, tool_calls, error, denied, max_steps, interrupted
    output: str = ""
    syscalls: list[SyscallRecord] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0,
                                                          "cached_tokens": 0})
    timing: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    plan: list[str] | None = None     # the router's plan, for requests over the drivers
    #: which paths the request reads and which it stores to (destinations.py), set as the turn starts
    roles: Roles = field(default_factory=Roles, repr=False, compare=False)

    def count(self, stats: GenerationStats | None, kind: str) -> None:
        """Add one pass of the CPU: a ``decision`` (p(call), relevance), a ``call`` or a ``reply``."""
        if stats is None:  # a CPU that does not report decisions
            return
        self.usage["prompt_tokens"] += stats.prefill_tokens + stats.cached_tokens
        self.usage["cached_tokens"] += stats.cached_tokens
        self.usage["completion_tokens"] += stats.decode_tokens
        self.timing.append({"kind": kind, **stats.as_dict()})


class Events:
    """What the kernel tells its caller while it works. The shell overrides these; the defaults are silent."""

    def token(self, text: str) -> None:
        """A piece of the reply, as it is generated."""

    def syscall_started(self, name: str, arguments: dict[str, Any]) -> None:
        """A syscall is about to run."""

    def syscall_finished(self, record: SyscallRecord) -> None:
        """A syscall ran (or failed, or was denied)."""

    def progress(self, name: str, done: float, total: float | None, message: str | None) -> None:
        """The running syscall ``name`` reported how far it has got (``ctx.progress``, see hookspecs)."""

    def approve(self, syscall: Syscall, arguments: dict[str, Any]) -> bool:
        """Policy ``ask``: may this irreversible syscall run? Default: no."""
        return False


def result_text(result: Any) -> str:
    """A syscall's result as the model reads it. An object is written one field per line
    (``translation: "El gato…"``): given JSON, small models echo it back instead of answering;
    given lines they quote the value asked for."""
    if isinstance(result, str):
        return result
    if isinstance(result, bytes):
        return f"<{len(result)} bytes>"
    if isinstance(result, dict) and result:
        return "\n".join(f"{key}: {_json(value)}" for key, value in result.items())
    return _json(result)


def shown(result: Any, output: str | None) -> str:
    """What the user sees of a result: the field a syscall declares as its output, as text; for
    ``"*"`` (an MCP tool's) the whole result as a person reads it."""
    if output == "*":
        return _as_read(result)
    if output and isinstance(result, dict) and output in result:
        result = result[output]
    if isinstance(result, list):
        return "\n".join(item if isinstance(item, str) else result_text(item) for item in result)
    return result_text(result)


def _as_read(result: Any) -> str:
    """A whole result for people: a dict of one field is that field (``{"content": "[FILE] a.txt..."}``,
    ``{"result": "buy milk"}``); otherwise a line per field, text without JSON quotes."""
    if isinstance(result, dict) and len(result) == 1:
        result = next(iter(result.values()))
    if isinstance(result, dict):
        return "\n".join(f"{key}: {_as_read(value)}" for key, value in result.items())
    if isinstance(result, list):
        joined = ", " if all(isinstance(item, (str, int, float)) and len(str(item)) < 40 for item in result) else "\n"
        return joined.join(_as_read(item) for item in result)
    return result if isinstance(result, str) else result_text(result)


def _nothing_shown(result: Any, output: str) -> bool:
    """A result whose declared output field is empty (None, "", []): nothing for the user to see,
    so the model replies instead (see hookspecs: ``output``)."""
    if output == "*":
        return result in (None, "", [], {})
    return isinstance(result, dict) and output in result and result[output] in (None, "", [], {})


_NOT_CONTENT = frozenset("""the and for with from into onto this that these those what which when where who how
are was were can could would should will you your yours our its it's not like such as any all also only than then
give leave out instead file files folder path text there here have has had been them they their one some
""".split())


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{3,}", text.lower()) if w not in _NOT_CONTENT}


def _literal(request: str) -> str | None:
    """Text the request gives to work on: its one quoted span, or what follows a short lead-in
    ("Read this aloud: the train is late")."""
    quoted = QUOTED.findall(request)
    if len(quoted) == 1:
        return quoted[0][1:-1]
    match = LEAD_IN.match(request.strip())
    return sanitise(match.group(2).strip()) if match and not quoted else None


def _stores(syscall: Syscall) -> bool:
    """It keeps what it is given at a path (write_file, speak's WAV, a driver's output file)."""
    return bool(syscall.capabilities & {"writes_fs", "audio_out"} and not syscall.irreversible
                and "path" in syscall.parameters.get("properties", {}))


def normalise_quietly(path: str) -> str | None:
    try:
        return normalise_path(path)
    except LlmosError:
        return None


def _read_paths(process: Process, turn: TurnResult) -> set[str]:
    """The files earlier steps of this turn read (the ``path`` of each successful call that does not store)."""
    read = set()
    for record in turn.syscalls:
        path = record.arguments.get("path")
        if record.status == "ok" and isinstance(path, str) and record.name in process.table \
                and not _stores(process.table.get(record.name)):
            read.add(normalise_quietly(path))
    return read - {None}


# A request for the items of a text that are of some kind: "Which errors are in ...", "list the
# warnings in ...", "show me the lines about ...". Not "how many", "when", "is there": those the model
# answers.
SELECTING = re.compile(r"(?i)^\W*(?:(?:please|pls|can you|could you)\W+)?"
                       r"(?:which|what|list|show|find|give me|tell me|print|display|get|grep)\b")
# Words of such a request that name no kind of item.
_NOT_A_KIND = frozenset("""list show find give tell print display get grep lines line items item entries entry
everything anything mentioned mention mentions say says written there please can could about
does did have whats
""".split())
# A text of more lines than this is not answered line by line.
MAX_SELECT_LINES = 200


def _stem(word: str) -> str:
    for ending in ("ies", "es", "s"):
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[:-len(ending)] + ("y" if ending == "ies" else "")
    return word


def lines_asked_for(request: str, results: list[Any]) -> str | None:
    """The lines of a read text that a selecting request asks for (SELECTING), all of them, as
    written: the lines that contain a word of the request's kind ("errors" -> lines with "ERROR",
    "warnings" -> "WARN"). None when the request does not select, or its words pick out no line, or
    every line (then the model answers: "what appointments are in ..." names no word of the text)."""
    texts = [r for r in results if isinstance(r, str)]
    if len(texts) != 1 or not SELECTING.search(request):
        return None
    lines = [line for line in texts[0].splitlines() if line.strip()]
    if not 2 <= len(lines) <= MAX_SELECT_LINES:
        return None
    words = {_stem(w) for w in _content_words(ANY_PATH.sub(" ", QUOTED.sub(" ", request))) if w not in _NOT_A_KIND}

    def names_one(line: str) -> bool:
        for w in re.findall(r"[a-z]{3,}", line.lower()):
            if any(w == k or (len(w) >= 4 and k.startswith(w)) or (len(k) >= 4 and _stem(w) == k) for k in words):
                return True
        return False

    picked = [line for line in lines if names_one(line)]
    return "\n".join(picked) if 0 < len(picked) < len(lines) else None


def _unmended_failure(records: list[SyscallRecord]) -> SyscallRecord | None:
    """A syscall of the turn that failed with no later successful call of the same syscall
    (the model mending its arguments), else None."""
    for i, record in enumerate(records):
        if record.status == "error" and not any(r.name == record.name and r.status == "ok"
                                                for r in records[i + 1:]):
            return record
    return None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class KernelMachine(Protocol):
    """The parts the kernel runs on (a :class:`~llmos_shell.system.System` has them)."""

    fs: Any                # the filesystem: processes, messages, files
    cpu: Any               # the CPU, loaded on first use
    loaded_cpu: Any        # the CPU if already loaded, else None
    context_switch: Any    # whose context the CPU holds, the others' KV snapshots (snapshots.py); or None
    table: SyscallTable    # every driver's syscalls
    gate: Gate             # the one way a syscall runs
    config: Any


class Kernel:
    """Runs processes on the machine's CPU."""

    def __init__(self, machine: "KernelMachine", *, approve: Approve = "never", max_steps: int = 8, max_tokens: int = 512,
                 call_threshold: float = 0.5, chain_threshold: float = 0.8, relevance_threshold: float = 0.1,
                 unwanted_call_relevance: float = 0.1, events: Events | None = None,
                 snapshots: bool = True, force_call: bool = False, stop: tuple[str, ...] = (),
                 reply_grammar: str | None = None) -> None:
        self.machine = machine
        self.approve = approve
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.call_threshold = call_threshold
        # After a syscall has answered, small models tend to call again (often the same thing);
        # a further call must be clearly wanted.
        self.chain_threshold = chain_threshold
        # Pointwise mutual information (nats per token) a first call's syscall must have with the
        # request: how much likelier the request makes the syscall's name and description.
        self.relevance_threshold = relevance_threshold
        # A call the model did not want to make (p(call) below the threshold) but the request spells
        # out must also pass the other direction (the request likelier after the description) by this:
        # without the model's intent, both must agree that the syscall is about the request.
        self.unwanted_call_relevance = unwanted_call_relevance
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
        self._router: Router | None = None

    @property
    def cpu(self):
        return self.machine.cpu

    # --- processes ------------------------------------------------------------------------

    def spawn(self, name: str, *, functions: Iterable[dict] | None = None, drivers: Iterable[str] | None = None,
              system_prompt: str = SYSTEM_PROMPT, parent: int | None = None) -> Process:
        """A new process whose table holds the allowed drivers' syscalls and any declared functions."""
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
        memory = Memory(system_prompt=system_prompt, tools=[s.tool_schema() for s in table],
                        store=self.machine.fs, pid=pid)
        return Process(pid=pid, name=name, table=table, memory=memory)

    def finish(self, process: Process, status: str) -> None:
        process.status = status
        self.machine.fs.set_process_status(process.pid, status)

    def release(self, process: Process) -> None:
        """The process will not run again (a task that ended): no KV snapshot is kept for it."""
        switch = self.machine.context_switch
        if switch is not None:
            switch.release(process.pid)

    def _settle(self, process: Process) -> None:
        """After a turn: a pinned prefix this process was the first to read is saved (snapshots.py)."""
        cpu = self.machine.loaded_cpu
        switch = self.machine.context_switch if self.snapshots else None
        if switch is not None and cpu is not None:
            switch.settle(cpu, process.pid)
        if cpu is not None:   # what `ps` shows: the context's size, and its KV state's
            try:
                # a routed process's prompts show only the syscalls of its plan (none when it replies)
                shown = process.memory.render(cpu, tools=[] if process.routed else None)
                self.machine.fs.set_process_usage(process.pid, cpu.count_tokens(shown), cpu.kv_bytes())
            except Exception:  # figures for people: a turn never fails for them
                log.exception("recording the usage of process %s", process.pid)

    def _on_cpu(self, process: Process, prompt: str, tools: list[dict] | None = None) -> None:
        """Before the CPU evaluates ``prompt``: if it holds another process's context, a context switch
        (that one's KV state saved, this one's restored, or its pinned prefix: see snapshots.py).
        ``tools``: the syscall table the prompt shows, as in Memory.render."""
        switch = self.machine.context_switch if self.snapshots else None
        if switch is not None:
            memory = process.memory
            # after an eviction the system prompt says so: not a prefix any other process shares
            switch.enter(self.cpu, process.pid, prompt,
                         pinned=None if memory.swapped else lambda: memory.pinned(self.cpu, tools))

    # --- the loop -------------------------------------------------------------------------

    def run(self, process: Process, text: str, *, cancel: threading.Event | None = None,
            seed: int | None = None, temperature: float = 0.0, events: Events | None = None) -> TurnResult:
        """One user request: steps until a reply, a declared call, a denial, the step limit or a cancel."""
        with acting(process.pid):   # the files this request changes are one undoable request's
            return self._run(process, text, cancel=cancel or threading.Event(), seed=seed,
                             temperature=temperature, events=events or self.events)

    def _run(self, process: Process, text: str, *, cancel: threading.Event, seed: int | None,
             temperature: float, events: Events) -> TurnResult:
        turn = TurnResult(status="running")
        process.status = "running"
        self.machine.fs.set_process_status(process.pid, "running")
        process.memory.add("user", text, tokens=0)
        try:
            turn.roles = self._roles(text)
            if process.routed:
                self._run_plan(process, text, turn, seed, temperature, events, cancel)
                return turn
            for _step in range(self.max_steps):
                if cancel.is_set():
                    raise Cancelled("cancelled")
                prompt, _used = process.memory.prompt(self.cpu, reserve=self.max_tokens)
                # A syscall already answered in this turn is not offered again: small models loop on
                # the call they just made; a chain goes on to other syscalls (ocr, then translate).
                # One that failed stays, so the model can mend its arguments.
                table = process.table.without({r.name for r in turn.syscalls if r.status == "ok"})
                if turn.syscalls:
                    threshold = self.chain_threshold
                elif self._names_a_file(text):
                    # A request about a file needs a syscall on that file: the model cannot know what
                    # it holds otherwise, and left to choose it "translates" a text it never saw.
                    threshold = 0.0
                    table = table.with_capability(*FILE_CAPABILITIES) or table
                else:
                    threshold = self.call_threshold
                wants_call = bool(len(table)) and self._wants_call(process, prompt, threshold, turn)
                if not wants_call and not turn.syscalls:
                    # Small models answer questions from memory (and wrongly: "radium was discovered
                    # in 1984") even when a function looks the answer up. So the first step writes a
                    # call anyway, kept only if the request spells out every value in it. Not a
                    # file syscall: a request about a file names it (see above).
                    table = table.without({s.name for s in table.with_capability(*FILE_CAPABILITIES)})
                if len(table) and (wants_call or not turn.syscalls):
                    calls, tokens = self._decode_calls(process, prompt, table, turn, text, seed, cancel,
                                                       wanted=wants_call)
                    calls = self._worth_making(calls, process, turn, text, wanted=wants_call)
                    if calls:
                        process.memory.add("assistant", write_calls(calls), tokens=tokens)
                        if self._dispatch(process, calls, turn, events, cancel, request=text):
                            break
                        continue
                    # a repeated or unrelated call: have the model answer instead
                if turn.syscalls:
                    prompt, _used = process.memory.prompt(self.cpu, reserve=self.max_tokens, transient=ANSWER_NOW)
                elif wants_call:
                    prompt, _used = process.memory.prompt(self.cpu, reserve=self.max_tokens,
                                                          transient=NO_FUNCTION_FITS)
                turn.output = self._reply(process, prompt, turn, seed, temperature, events, cancel)
                turn.status = "ok"
                failed = _unmended_failure(turn.syscalls)
                if failed is not None:   # the reply can only tell of the failure: the task failed
                    turn.status = "error"
                    turn.error = f"{failed.name} failed: {failed.error}"
                break
            else:
                turn.status = "max_steps"
                turn.error = f"no reply after {self.max_steps} steps"
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
            self._settle(process)
        return turn

    # --- requests over the drivers: the router plans, the model fills in arguments ----------

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router(cache_dir=machine_cache("router"))
        return self._router

    def prepare(self, process: Process) -> None:
        """Train the router on this process's table now: the shell does it while the model loads,
        so the first request does not wait for it."""
        if process.routed:
            self.router.prepare(process.table)

    def _with_full_paths(self, text: str) -> str:
        """The request with bare file names that exist written as paths: "summarise report.txt" in a
        task whose inputs landed in /inputs/ is about /inputs/report.txt."""
        def full(match: re.Match) -> str:
            for folder in INPUT_FOLDERS:
                if self.kind_of(folder + match.group(0)) is not None:
                    return folder + match.group(0)
            return match.group(0)

        return BARE_NAME.sub(full, text)

    def kind_of(self, path: str) -> str | None:
        """The MIME type of an existing file, ``inode/directory`` for a folder, None if nothing is there."""
        try:
            info = self.machine.fs.stat(path)
        except LlmosError:
            return None
        return "inode/directory" if info["kind"] == "dir" else (info.get("mime") or "application/octet-stream")

    def _run_plan(self, process: Process, text: str, turn: TurnResult, seed, temperature, events: Events,
                  cancel: threading.Event) -> None:
        """The router's plan, one step after another (each step's output piped into the next), then the
        reply: the last step's output where its syscall declares one, else the model's answer."""
        turn_start = len(process.memory.messages) - 1   # this turn's messages: the request onwards
        text = self._with_full_paths(text)
        turn.roles = self._roles(text)
        plan = self.router.plan(text, process.table, self.kind_of)
        if not plan.steps and (again := self._follow_up_syscall(process, text, plan.scores)) is not None:
            plan.steps.append(Step(again, plan.scores.get(again.name, 0.0)))   # "And into Catalan?"
        candidate = self.router.described_candidate(plan, process.table)
        if candidate is not None and self._would_call(process, candidate, turn):
            plan.steps.append(Step(candidate, plan.scores[candidate.name]))
        log.debug("plan for %r: %s", text[:200], plan.names)
        turn.plan = plan.names
        piped: str | None = _literal(text)
        last: SyscallRecord | None = None
        for step in plan.steps[:self.max_steps]:
            if cancel.is_set():
                raise Cancelled("cancelled")
            call = self._fill(process, step.syscall, text, step.path, piped, turn, seed, cancel)
            process.memory.add("assistant", write_calls([call]))
            if self._dispatch(process, [call], turn, events, cancel, request=text):
                return  # denied
            last = turn.syscalls[-1]
            if last.status != "ok":
                break
            if step.syscall.output and _nothing_shown(last.result, step.syscall.output):
                continue   # nothing found (recall): the next step reads what it would have read anyway
            # text from a tool is data: no chat-template control tokens go on to the next step
            piped = sanitise(shown(last.result, step.syscall.output) if step.syscall.output
                             else result_text(last.result))
        output = process.table.get(last.name).output if last is not None else None
        if last is not None and last.status != "ok":
            # A failed step is a failed task: the user asked for its result and did not get it.
            self._failed(process, turn, last)
            return
        if output and not _nothing_shown(last.result, output):
            turn.output = sanitise(self._outputs(process, turn))  # shown, and kept in the context
        else:
            if last is None:   # a request the model answers itself
                prompt, _used = process.memory.prompt(self.cpu, reserve=self.max_tokens, tools=[])
            elif output:       # the syscall had nothing to show (recall found nothing): as if it never ran
                prompt, _used = process.memory.prompt(self.cpu, reserve=self.max_tokens, tools=[],
                                                      transient={"role": "user", "content": text},
                                                      hide_last=len(process.memory.messages) - turn_start)
            elif (picked := lines_asked_for(text, [r.result for r in turn.syscalls if r.status == "ok"])):
                # "Which errors are in /logs/app.log?": every line that names them, as written (the
                # model, asked, lists one of two)
                turn.output = picked
                process.memory.add("assistant", picked)
                events.token(picked)
                turn.status = "ok"
                return
            else:
                # A result the model answers a question from (a file read for "how many eggs?"). Small
                # models lose a result behind call and tool turns ("I don't have any function results"):
                # the request is asked again with the results as plain data, in place of this turn.
                data = "\n\n".join(f"[{r.name} {json.dumps(r.arguments.get('path') or '', ensure_ascii=False)}]\n"
                                     f"{sanitise(result_text(r.result))}" for r in turn.syscalls if r.status == "ok")
                transient = {"role": "user", "content": f"{data}\n\n{ANSWER_FROM.format(request=text)}"}
                prompt, _used = process.memory.prompt(self.cpu, reserve=self.max_tokens, transient=transient,
                                                      tools=[], hide_last=len(process.memory.messages) - turn_start)
            turn.output = self._reply(process, prompt, turn, seed, temperature, events, cancel,
                                      tools=[])  # kept by _reply
            turn.status = "ok"
            return
        process.memory.add("assistant", turn.output)
        events.token(turn.output)
        turn.status = "ok"

    @staticmethod
    def _failed(process: Process, turn: TurnResult, record: SyscallRecord) -> None:
        """End the turn as failed by ``record``: status ``error`` (exit 1 for a task), the error as one
        line; the context keeps a note of it so that a later turn knows it was not done."""
        turn.status = "error"
        turn.error = f"{record.name} failed: {record.error}"
        process.memory.add("assistant", f"I could not do that: {turn.error}")

    def _would_call(self, process: Process, syscall: Syscall, turn: TurnResult) -> bool:
        """Shown only this syscall, is the model likely to call it now? (A syscall the router knows
        from its description alone: see Router.described_candidate.)"""
        prompt, _used = process.memory.prompt(self.cpu, reserve=self.max_tokens, tools=[syscall.tool_schema()])
        return self._wants_call(process, prompt, self.call_threshold, turn)

    def _outputs(self, process: Process, turn: TurnResult) -> str:
        """What the user sees after the last step: its output; for a step that only stores or plays
        what an earlier step made (write_file, speak), that text too."""
        last = turn.syscalls[-1]
        syscall = process.table.get(last.name)
        text = shown(last.result, syscall.output)
        feeds = [r for r in turn.syscalls[:-1] if r.status == "ok"]
        if feeds and syscall.capabilities & {"writes_fs", "audio_out"} and syscall.input:
            before = feeds[-1]
            made = process.table.get(before.name)
            if made.output and not _nothing_shown(before.result, made.output):
                text = shown(before.result, made.output) + "\n\n" + text
        # a driver that may be wrong says so (hookspecs: ``unsure``): told to the user, never piped on
        doubts = [r.result["unsure"] for r in turn.syscalls
                  if r.status == "ok" and isinstance(r.result, dict) and r.result.get("unsure")]
        if doubts:
            text += "\n\n" + "\n".join(f"(unsure: {doubt})" for doubt in dict.fromkeys(doubts))
        return text

    def _fill(self, process: Process, syscall: Syscall, request: str, path: str | None, piped: str | None,
              turn: TurnResult, seed, cancel) -> dict:
        """The call of one planned step. The kernel sets what it knows: the file the step reads, the
        previous step's output (or the request's quoted text) for its ``input``, a path when the request
        names one; the model decodes the rest under the grammar, seeing only this syscall."""
        properties = dict(syscall.parameters.get("properties", {}))
        required = list(syscall.parameters.get("required", []))
        fixed: dict[str, Any] = {}
        if "path" in properties:
            named = named_paths(request)
            if path is None and _stores(syscall):
                # never over a file an earlier step read, unless the request says to store there
                named = store_choices(turn.roles, _read_paths(process, turn))
                if not named and ANY_PATH.search(request) and "path" in required:
                    raise LlmosError(f"{syscall.name}: the request names no file to store to besides "
                                     f"{', '.join(turn.roles.paths)}, which it reads: say where "
                                     "(\"... and save it to /notes/new.txt\")")
            if path is not None:
                fixed["path"] = path
            elif len(named) == 1:
                fixed["path"] = named[0]
            elif named:
                properties["path"] = {**properties["path"], "enum": named}
            elif "path" not in required:
                properties.pop("path")   # nobody named one: the driver's default, never an invented path
        if syscall.input and piped is None and path is None:
            piped = self._followed_up(process, syscall, request)
        if syscall.input and piped is not None:
            fixed[syscall.input] = piped
        elif path is not None and syscall.input and syscall.input not in required:
            properties.pop(syscall.input, None)   # it reads the file: no text besides (summarise's text)
        if syscall.from_request is not None:   # values the request's phrasing gives away ("... in Catalan")
            said_values = syscall.from_request(request) or {}
            fixed.update({k: v for k, v in said_values.items() if k in properties and k not in fixed})
        for key in fixed:
            properties.pop(key, None)
        said = _content_words(request)
        for key in [k for k in properties if k not in required]:
            # An optional argument is offered only when the request speaks of it ("add ... to the end"
            # for append): otherwise small models fill it anyway (a source language "water").
            if not said & _content_words(key.replace("_", " ") + " " + properties[key].get("description", "")):
                properties.pop(key)
        arguments: dict[str, Any] = dict(fixed)
        if properties:
            schema = {**syscall.parameters, "properties": properties,
                      "required": [r for r in required if r in properties]}
            free = dataclasses.replace(syscall, parameters=schema)
            prompt, _used = process.memory.prompt(self.cpu, reserve=self.max_tokens, tools=[free.tool_schema()])
            self._on_cpu(process, prompt, tools=[free.tool_schema()])
            generation = self.cpu.generate(prompt + CALL_OPEN, max_tokens=self.max_tokens,
                                           grammar=call_grammar(SyscallTable.of([free])), seed=seed,
                                           temperature=0.0, cancel=cancel)
            turn.count(generation.stats, "call")
            if generation.cancelled:
                raise Cancelled("cancelled")
            if generation.finish_reason != "stop":
                raise LlmosError(f"the model's call of {syscall.name} was cut short after "
                                 f"{generation.stats.decode_tokens} tokens")
            call = without_inventions(parse_call(generation.text), schema, Source([request, piped or ""]))
            arguments.update(call["arguments"])
        return {"name": syscall.name, "arguments": arguments}

    def _follow_up_syscall(self, process: Process, request: str, scores: dict[str, float]) -> Syscall | None:
        """The syscall a follow-up fragment asks for again: "And into Catalan?" right after a
        translation reads as chat to the router, yet it is the same action on the same text. The
        last syscall this process ran, when the request reads as a follow-up (FOLLOW_UP) and that
        syscall is the router's first choice among syscalls."""
        if not FOLLOW_UP.search(request) or len(request.split()) > FOLLOW_UP_WORDS:
            return None
        earlier = [r for r in self.machine.fs.syscalls(process.pid) if r["status"] == "ok"]
        if not earlier or earlier[-1]["name"] not in process.table:
            return None
        best = max((n for n in scores if n), key=scores.get, default=None)
        if best != earlier[-1]["name"]:
            return None
        syscall = process.table.get(best)
        return syscall if syscall.input and self._followed_up(process, syscall, request) else None

    def _followed_up(self, process: Process, syscall: Syscall, request: str) -> str | None:
        """The text a follow-up request works on: "And into Catalan?" after "Translate 'good night'
        into Spanish" is the same text again. A short request that gives no text of its own (no
        quotes, no path, no lead-in) and reads as a follow-up (FOLLOW_UP) takes the ``input`` of this
        process's last successful call of the same syscall; else None."""
        if QUOTED.search(request) or ANY_PATH.search(request) or LEAD_IN.match(request.strip()) \
                or len(request.split()) > FOLLOW_UP_WORDS or not FOLLOW_UP.search(request):
            return None
        earlier = [r for r in self.machine.fs.syscalls(process.pid)
                   if r["name"] == syscall.name and r["status"] == "ok"]
        value = earlier[-1]["arguments"].get(syscall.input) if earlier else None
        return value if isinstance(value, str) and value.strip() else None

    def _worth_making(self, calls: list[dict], process: Process, turn: TurnResult, request: str, *,
                      wanted: bool) -> list[dict]:
        """The decoded calls the kernel makes; none means the model answers instead.

        ``wanted``: the model was likely to call here (p(call) at least the threshold)."""
        if turn.syscalls:
            # Small models go on calling after the answer is in (read the file just summarised,
            # search for its name): a further call must bring something new.
            done = [r.call for r in turn.syscalls]
            return [c for c in calls if not repeats(c, done, process.table.get(c["name"]).parameters)]
        if not calls:
            return []
        # The first call of a turn must be about the request: small models call whatever function
        # they are shown (a BMI function for a triangle's area).
        return calls if self._relevant(request, process.table.get(calls[0]["name"]), turn, wanted=wanted) else []

    def _names_a_file(self, text: str) -> bool:
        """Does the request name a file or folder that exists in the filesystem?"""
        for match in PATH.finditer(text):
            try:
                if self.machine.fs.exists(match.group(0)):
                    return True
            except LlmosError:  # not a valid path after all
                continue
        return False

    def _wants_call(self, process: Process, prompt: str, threshold: float, turn: TurnResult) -> bool:
        """Is the model likely to start a call here (p(call) at least ``threshold``)?"""
        if self.force_call:
            return True
        self._on_cpu(process, prompt)
        try:
            logprobs = self.cpu.next_token_logprobs(prompt, CALL_STARTS)
        except NotImplementedError:
            return True
        turn.count(self.cpu.decision_stats, "decision")
        p_call = sum(math.exp(v) for v in logprobs.values())
        log.debug("p(call) = %.3f (threshold %.2f)", p_call, threshold)
        return p_call >= threshold

    def _decode_calls(self, process: Process, prompt: str, table: SyscallTable, turn: TurnResult,
                      request: str, seed, cancel, wanted: bool = True) -> tuple[list[dict], int]:
        """Decode one call, then candidate further calls of the same syscall, kept while grounded;
        return the calls and the tokens decoded for them.

        ``wanted``: the model was likely to call here. If not, the first call must be spelled out
        by the request (every value said), else there is no call; and a first call cut short by
        the token limit is no call rather than an error.

        Small models end their turn after one call whatever the request, so the kernel opens the
        next call itself and keeps it only if its new values come from the request or this turn's
        results (see grounding.py). Another syscall waits for the next step: it usually needs this
        one's result (read the sign, then translate what it says), which a call now could only guess.
        Values nobody said are taken out of every call where the schema allows."""
        source = Source([request] + [result_text(r.result) for r in turn.syscalls if r.status == "ok"])
        self._on_cpu(process, prompt)
        calls: list[dict] = []
        tokens = 0
        for _ in range(MAX_PARALLEL_CALLS if process.parallel_calls else 1):
            prefix = write_calls(calls) + "\n" if calls else ""
            generation = self.cpu.generate(prompt + prefix + CALL_OPEN, max_tokens=self.max_tokens,
                                           grammar=call_grammar(table), seed=seed, temperature=0.0, cancel=cancel)
            turn.count(generation.stats, "call")
            if generation.cancelled:
                raise Cancelled("cancelled")
            if generation.finish_reason != "stop":
                if calls or not wanted:
                    break
                raise LlmosError(f"the model's call was cut short after {generation.stats.decode_tokens} tokens")
            call = parse_call(generation.text)
            parameters = process.table.get(call["name"]).parameters
            call = without_inventions(call, parameters, source)
            if not calls and not wanted and not all_said(call, parameters, source):
                return [], 0  # further candidates would repeat its values: don't decode them
            if calls and not grounded(call, calls, source):
                break
            tokens += generation.stats.decode_tokens
            # A call that only adds arguments to an earlier one is that call made more precise.
            calls = [c for c in calls if not refines(call, c)] + [call]
            table = process.table.subset([call["name"]])
        return calls, tokens

    def _relevant(self, request: str, syscall: Syscall, turn: TurnResult, *, wanted: bool) -> bool:
        """Does the request make the syscall's name and description more likely, per token, than a
        request that says nothing? For a call the model did not want (``wanted`` False), is also the
        request more likely after the description than after one that says nothing?

        Pointwise mutual information from the model itself: a small model judges relevance poorly
        when asked (its yes/no hovers at 50 %) but its likelihoods separate related from unrelated."""
        if self.force_call:
            return True
        request = request[:RELEVANCE_CHARS]
        function = RELEVANCE_FUNCTION.format(name=syscall.name, description=syscall.description)[:RELEVANCE_CHARS]
        try:
            pmi = self._pmi(function, RELEVANCE_ASKED.format(request=request), RELEVANCE_BASE, turn)
            log.debug("relevance of %s: %.3f per token (threshold %.2f)", syscall.name, pmi,
                      self.relevance_threshold)
            if pmi < self.relevance_threshold or wanted:
                return pmi >= self.relevance_threshold
            given = REQUEST_GIVEN.format(name=syscall.name, description=syscall.description)
            back = self._pmi(request, given, REQUEST_BASE, turn)
        except NotImplementedError:
            return True
        log.debug("request given %s: %.3f per token (threshold %.2f)", syscall.name, back,
                  self.unwanted_call_relevance)
        return back >= self.unwanted_call_relevance

    def _pmi(self, text: str, given: str, base: str, turn: TurnResult) -> float:
        """How much likelier ``text`` is after ``given`` than after ``base``, in nats per token."""
        after_base, n_tokens = self.cpu.logprob(base, text)
        turn.count(self.cpu.decision_stats, "decision")
        after_given, _ = self.cpu.logprob(given, text)
        turn.count(self.cpu.decision_stats, "decision")
        return (after_given - after_base) / max(1, n_tokens)

    def _reply(self, process: Process, prompt: str, turn: TurnResult, seed, temperature, events, cancel,
               tools: list[dict] | None = None) -> str:
        self._on_cpu(process, prompt, tools)
        generation = None
        pieces: list[str] = []

        def on_token(piece: str) -> None:
            pieces.append(piece)
            events.token(piece)

        try:
            # Having decided to reply, don't let the reply open with a call-like token.
            if self.reply_grammar:
                generation = self.cpu.generate(prompt, max_tokens=self.max_tokens, grammar=self.reply_grammar,
                                               seed=seed, temperature=0.0, on_token=on_token, cancel=cancel)
            else:
                generation = self.cpu.generate(prompt, max_tokens=self.max_tokens, seed=seed, stop=self.stop,
                                               temperature=temperature, on_token=on_token, cancel=cancel,
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

    def _dispatch(self, process: Process, calls: list[dict], turn: TurnResult, events: Events,
                  cancel: threading.Event, request: str = "") -> bool:
        """Run the calls; return True if the turn ends here (declared calls or a denial)."""
        declared = False
        for call in calls:
            syscall = process.table.get(call["name"])
            record = SyscallRecord(name=call["name"], arguments=call["arguments"])
            started = time.time()
            clock = time.perf_counter()
            events.syscall_started(record.name, record.arguments)
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
                self._execute(process, syscall, record, events, cancel, request, turn)
                record.ms = 1000 * (time.perf_counter() - clock)
            turn.syscalls.append(record)
            events.syscall_finished(record)
            if record.status == "denied":
                turn.status = "denied"
                turn.error = f"{record.name} was denied by the approval policy ({self.approve})"
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
        approval = Approval(self.approve, confirm=events.approve, said=said if request else None,
                            destination=roles.is_destination if roles is not None else None)
        if self.advice:
            approval.advice = self.advice
        return approval

    def _roles(self, request: str) -> Roles:
        """The request's paths, and which of them it names as where to store (before any step runs)."""
        return roles(request, lambda path: self.kind_of(path) is not None)

    def _execute(self, process: Process, syscall: Syscall, record: SyscallRecord, events: Events,
                 cancel: threading.Event, request: str = "", turn: TurnResult | None = None) -> None:
        path = record.arguments.get("path")
        if (turn is not None and _stores(syscall) and isinstance(path, str) and not record.arguments.get("append")
                and not turn.roles.is_asked(path) and normalise_quietly(path) in _read_paths(process, turn)):
            record.status = "error"
            record.error = (f"not storing over {path}: this request read it, and does not name it as where "
                            "to store; store to another path")
            self.machine.fs.record_syscall(process.pid, record.name, record.arguments, "error",
                                           error=record.error, started=time.time(), ms=0.0)
            return
        try:
            record.result = self.machine.gate.call(syscall, record.arguments,
                                                   approval=self.approval(syscall, events, request, turn and turn.roles),
                                                   pid=process.pid, cancel=cancel,
                                                   progress=functools.partial(events.progress, syscall.name))
            if isinstance(record.result, bytes):
                record.result = result_text(record.result)
        except Denied as error:
            record.status, record.error = "denied", str(error)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as error:  # a driver's failure is the model's information, not the kernel's end
            log.exception("syscall %s failed", syscall.name)
            record.status, record.error = "error", one_line(error)

