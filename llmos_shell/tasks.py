"""Headless tasks: `llmos run FILE...`.

A task file is Markdown or text (the request) with optional YAML front matter
(see README, "Task files"). Every file is checked before anything runs; a bad
one gives exit code 2 and one line naming the file, the field and what was
expected. Each task runs as a process of its own.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from llmos_shell.errors import EXIT_DENIED, EXIT_FAILED, EXIT_OK, LlmosError, UsageError

log = logging.getLogger("llmos.tasks")

FRONT_MATTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "drivers": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "approve": {"enum": ["ask", "auto", "never"]},
        "max_steps": {"type": "integer", "minimum": 1, "maximum": 100},
        "inputs": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "output": {"type": "string", "pattern": "^/"},
        "functions": {"type": "array", "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.]{0,63}$"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
            },
        }},
        "turns": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    },
}

STATUS_EXIT = {"ok": EXIT_OK, "tool_calls": EXIT_OK, "error": EXIT_FAILED, "max_steps": EXIT_FAILED,
               "interrupted": EXIT_FAILED, "denied": EXIT_DENIED}


@dataclass
class Task:
    """A checked task file."""

    source: str                       # the path as given, or "-"
    body: str
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


def _split_front_matter(text: str) -> tuple[str | None, str]:
    if not text.startswith("---"):
        return None, text
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        return None, text
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            return "".join(lines[1:index]), "".join(lines[index + 1:])
    raise UsageError("front matter opened with '---' is never closed")


def parse_task(text: str, source: str, base: Path) -> Task:
    """Parse and check a task; raise UsageError with "field: what was expected" on any problem."""
    front, body = _split_front_matter(text)
    settings: Any = {}
    if front is not None and front.strip():
        try:
            settings = yaml.safe_load(front)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 2}" if mark is not None else ""
            problem = getattr(error, "problem", None) or "invalid YAML"
            raise UsageError(f"front matter: bad YAML{where}: {problem}") from None
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise UsageError(f"front matter: expected a mapping of settings, got {type(settings).__name__}")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(FRONT_MATTER_SCHEMA).iter_errors(settings))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        message = error.message if len(error.message) < 200 else error.message[:200] + "…"
        raise UsageError(f"{where or 'front matter'}: {message}")
    for index, spec in enumerate(settings.get("functions", [])):
        from llmos_shell.syscalls import declared_syscall

        try:
            declared_syscall(spec)
        except (LlmosError, jsonschema.exceptions.SchemaError, RecursionError) as problem:
            text_ = (getattr(problem, "message", None) or str(problem) or type(problem).__name__).splitlines()[0]
            raise UsageError(f"functions.{index}.parameters: function {spec.get('name')!r}: "
                             f"not a valid JSON Schema ({text_[:200]})") from None
    if not body.strip():
        raise UsageError("the task has no request (the body after the front matter is empty)")
    inputs = []
    for index, name in enumerate(settings.get("inputs", [])):
        path = (base / name).expanduser()
        if not path.exists():
            raise UsageError(f"inputs.{index}: no such file {name!r} (relative to {base})")
        inputs.append(path)
    return Task(source=source, body=body.strip(), settings=settings, inputs=inputs)


def load_task(source: str) -> Task:
    """Read and check one task file ("-" is stdin). Errors name the file."""
    try:
        if source == "-":
            raw = sys.stdin.buffer.read()
            base = Path.cwd()
        else:
            path = Path(source)
            if path.is_dir():
                raise UsageError("is a directory, not a task file")
            raw = path.read_bytes()
            base = path.resolve().parent
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("not a UTF-8 text file") from None
        if "\x00" in text:
            raise UsageError("not a text file (contains NUL bytes)")
        return parse_task(text, source, base)
    except FileNotFoundError:
        raise UsageError(f"{source}: no such task file") from None
    except OSError as error:
        raise UsageError(f"{source}: cannot read ({error.strerror})") from None
    except UsageError as error:
        raise UsageError(f"{source}: {error}") from None


# --- running ------------------------------------------------------------------------------

def run_task(system, task: Task, *, approve: str | None, max_steps: int | None, queue=None) -> dict[str, Any]:
    """Run one checked task as a process; return its result object (DESIGN.md's JSON).

    Its requests go through ``queue``, the program's run queue (kernel/scheduler.py; one is made
    for this task if none is given), so ``llmos kill PID`` from elsewhere stops it.

    Whatever goes wrong inside (a bug, a driver's or the decoder's ``ValueError``), the task
    gets a result with status ``error`` and its process ends marked ``error``: one task never
    takes the rest of a batch down. Only a bad task (``UsageError``) and Ctrl-C escape.
    """
    from llmos_shell.kernel.loop import Kernel, TurnResult
    from llmos_shell.kernel.scheduler import RunQueue

    started = time.perf_counter()
    kernel = Kernel(system, approve=approve or task.get("approve", "never"),
                    max_steps=max_steps or task.get("max_steps", 8))
    own_queue = queue is None
    queue = queue or RunQueue(system.fs)
    process = None
    turns: list[TurnResult] = []
    try:
        if task.inputs:
            system.fs.mkdir("/inputs", parents=True)
        for path in task.inputs:  # /inputs/NAME, replacing the copy an earlier run left
            system.fs.import_host(str(path), "/inputs")
        process = kernel.spawn(task.source, functions=task.get("functions"), drivers=task.get("drivers"))
        seed, temperature = task.get("seed"), float(task.get("temperature", 0.0))
        for request in [task.body, *task.get("turns", [])]:
            turns.append(queue.run(process, request, kernel=kernel, seed=seed, temperature=temperature))
            if turns[-1].status != "ok":
                break
        last = turns[-1]
        if last.status == "ok" and task.get("output"):
            system.fs.write(task.get("output"), last.output)
    except UsageError:
        raise
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM outside the model's turn (copying inputs, spawning)
        turns.append(TurnResult(status="interrupted", error="interrupted"))
        if process is not None:
            _mark_failed(kernel, process, "interrupted")
    except Exception as error:  # not the user's fault: one line in the result, the traceback in the log
        log.exception("task %s failed", task.source)
        turns.append(TurnResult(status="error", error=_one_line(error)))
        if process is not None:
            _mark_failed(kernel, process)
    finally:
        if own_queue:
            queue.close()
    if process is not None:
        kernel.release(process)
    last = turns[-1]
    if last.status == "killed":   # DESIGN.md, task statuses: a task stopped by `kill` was interrupted
        last = replace(last, status="interrupted")
    cpu = system.cpu
    usage = {key: sum(t.usage[key] for t in turns) for key in last.usage}
    return {
        "task": task.source, "status": last.status, "output": last.output,
        "pid": process.pid if process is not None else None,
        "error": last.error,
        "syscalls": [record.as_dict() for t in turns for record in t.syscalls],
        "model": {"name": cpu.name, "sha256": cpu.sha256},
        "usage": usage,
        "timing": {"total_ms": round(1000 * (time.perf_counter() - started), 1),
                   "turns": [step for t in turns for step in t.timing]},
    }


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:299] + "…"
    return f"internal error: {type(error).__name__}: {text}" if text else f"internal error: {type(error).__name__}"


def _mark_failed(kernel, process, status: str = "error") -> None:
    try:
        kernel.finish(process, status)
    except Exception:  # the database itself is failing: the log has it, the result line still comes
        log.exception("could not mark process %s as failed", process.pid)
