"""What a turn is made of, and how its results read: the records the engine keeps (SyscallRecord,
TurnResult), what it tells its caller while it works (Events), and the pure helpers the planners
share (how a result reads to the model and to the user, which files a turn has read)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from llmos_shell.cpu import GenerationStats
from llmos_shell.errors import LlmosError
from llmos_shell.fs.paths import normalise as normalise_path
from llmos_shell.kernel.destinations import Roles
from llmos_shell.kernel.language import WORDS
from llmos_shell.kernel.memory import sanitise
from llmos_shell.kernel.places import ANY_PATH
from llmos_shell.kernel.process import Process
from llmos_shell.kernel.policy import KernelPolicy
from llmos_shell.syscalls import Syscall


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

    def confirm(self, syscall: Syscall, arguments: dict[str, Any]) -> bool:
        """The approval policy asks (gate.Confirm): may this irreversible syscall run? Default: no."""
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
        return "\n".join(f"{key}: {as_json(value)}" for key, value in result.items())
    return as_json(result)


def shown(result: Any, output: str | None) -> str:
    """What the user sees of a result: the field a syscall declares as its output, as text; for
    ``"*"`` (an MCP tool's) the whole result as a person reads it."""
    if output == "*":
        return as_read(result)
    if output and isinstance(result, dict) and output in result:
        result = result[output]
    if isinstance(result, list):
        return "\n".join(item if isinstance(item, str) else result_text(item) for item in result)
    return result_text(result)


def as_read(result: Any) -> str:
    """A whole result for people: a dict of one field is that field (``{"content": "[FILE] a.txt..."}``,
    ``{"result": "buy milk"}``); otherwise a line per field, text without JSON quotes."""
    if isinstance(result, dict) and len(result) == 1:
        result = next(iter(result.values()))
    if isinstance(result, dict):
        return "\n".join(f"{key}: {as_read(value)}" for key, value in result.items())
    if isinstance(result, list):
        joined = ", " if all(isinstance(item, (str, int, float)) and len(str(item)) < 40 for item in result) else "\n"
        return joined.join(as_read(item) for item in result)
    return result if isinstance(result, str) else result_text(result)


def nothing_shown(result: Any, output: str) -> bool:
    """A result whose declared output field is empty (None, "", []): nothing for the user to see,
    so the model replies instead (see hookspecs: ``output``)."""
    if output == "*":
        return result in (None, "", [], {})
    return isinstance(result, dict) and output in result and result[output] in (None, "", [], {})


def content_words(text: str) -> set[str]:
    """The words of ``text`` that say what it is about (WORDS.not_content left out)."""
    return {w for w in re.findall(r"[a-z]{3,}", text.lower()) if w not in WORDS.not_content}


def literal(request: str) -> str | None:
    """Text the request gives to work on: its one quoted span, or what follows a short lead-in
    ("Read this aloud: the train is late")."""
    quoted = WORDS.quoted.findall(request)
    if len(quoted) == 1:
        return quoted[0][1:-1]
    match = WORDS.lead_in.match(request.strip())
    return sanitise(match.group(2).strip()) if match and not quoted else None


def stores(syscall: Syscall) -> bool:
    """It keeps what it is given at a path (write_file, speak's WAV, a driver's output file)."""
    return bool(syscall.capabilities & {"writes_fs", "audio_out"} and not syscall.irreversible
                and "path" in syscall.parameters.get("properties", {}))


def normalise_quietly(path: str) -> str | None:
    try:
        return normalise_path(path)
    except LlmosError:
        return None


def read_paths(process: Process, turn: TurnResult) -> set[str]:
    """The files earlier steps of this turn read (the ``path`` of each successful call that does not store)."""
    read = set()
    for record in turn.syscalls:
        path = record.arguments.get("path")
        if record.status == "ok" and isinstance(path, str) and record.name in process.table \
                and not stores(process.table.get(record.name)):
            read.add(normalise_quietly(path))
    return read - {None}


def lines_asked_for(request: str, results: list[Any], policy: KernelPolicy = KernelPolicy()) -> str | None:
    """The lines of a read text that a selecting request asks for (WORDS.selecting), all of them, as
    written: the lines that contain a word of the request's kind ("errors" -> lines with "ERROR",
    "warnings" -> "WARN"). None when the request does not select, or its words pick out no line, or
    every line (then the model answers: "what appointments are in ..." names no word of the text)."""
    texts = [r for r in results if isinstance(r, str)]
    if len(texts) != 1 or not WORDS.selecting.search(request):
        return None
    lines = [line for line in texts[0].splitlines() if line.strip()]
    if not 2 <= len(lines) <= policy.max_select_lines:
        return None
    asked = content_words(ANY_PATH.sub(" ", WORDS.quoted.sub(" ", request)))
    words = {WORDS.stem(w) for w in asked if w not in WORDS.not_a_kind}

    def names_one(line: str) -> bool:
        for w in re.findall(r"[a-z]{3,}", line.lower()):
            if any(w == k or (len(w) >= 4 and k.startswith(w)) or (len(k) >= 4 and WORDS.stem(w) == k)
                   for k in words):
                return True
        return False

    picked = [line for line in lines if names_one(line)]
    return "\n".join(picked) if 0 < len(picked) < len(lines) else None


def unmended_failure(records: list[SyscallRecord]) -> SyscallRecord | None:
    """A syscall of the turn that failed with no later successful call of the same syscall
    (the model mending its arguments), else None."""
    for i, record in enumerate(records):
        if record.status == "error" and not any(r.name == record.name and r.status == "ok"
                                                for r in records[i + 1:]):
            return record
    return None


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


