"""The built-in commands' work, written once for both front ends: the shell and the `llmos` CLI.

Each function here is one built-in (``ls``, ``ps``, ``call``...): it takes plain
arguments and the part of the system it needs (the filesystem, the run queue,
the system), and returns data (entries, rows, a result) or raises a
:class:`~llmos_shell.errors.LlmosError` whose message is the one line shown.
The shell (``shell/commands.py``) and the CLI (``cli/``) only parse their
arguments, then format and print what comes back, each in its own way (a table
at the prompt; lines or ``--json`` on the command line), as litecli's special
commands do. ``tests/test_architecture.py`` checks that neither front end does a
built-in's work itself.

Paths are made absolute from ``cwd``: the shell's current directory, or ``/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from llmos_shell.errors import UsageError
from llmos_shell.fs.paths import ROOT, normalise

# --- files -------------------------------------------------------------------------------------


def ls(fs, paths: Iterable[str], cwd: str = ROOT) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each directory (default: ``cwd``) with its entries, sorted by name; a file lists itself."""
    for target in list(paths) or [cwd]:
        path = normalise(target, cwd)
        yield path, fs.ls(path)


def cat(fs, paths: Iterable[str], cwd: str = ROOT, *, text: bool) -> Iterator[str | bytes]:
    """Each file's content: text (a binary file is an error), or the bytes exactly as stored."""
    read = fs.read_text if text else fs.read
    for target in paths:
        yield read(normalise(target, cwd))


def rm(fs, paths: Iterable[str], cwd: str = ROOT, *, recursive: bool) -> None:
    """Remove files; ``recursive`` also directories with everything in them."""
    for target in paths:
        fs.rm(normalise(target, cwd), recursive=recursive)


def mkdir(fs, paths: Iterable[str], cwd: str = ROOT, *, parents: bool) -> None:
    """Create directories; ``parents`` makes the missing ones on the way, and one that exists is fine."""
    for target in paths:
        fs.mkdir(normalise(target, cwd), parents=parents)


def mv(fs, source: str, dest: str, cwd: str = ROOT) -> None:
    """Move or rename a file or directory (into ``dest`` if it is a directory)."""
    fs.mv(normalise(source, cwd), normalise(dest, cwd))


def cp(fs, source: str, dest: str, cwd: str = ROOT) -> None:
    """Copy a file, or a directory with everything in it (into ``dest`` if it is a directory)."""
    fs.cp(normalise(source, cwd), normalise(dest, cwd))


def find(fs, pattern: str, path: str | None = None, cwd: str = ROOT) -> list[dict[str, Any]]:
    """Files and directories under ``path`` (default: ``cwd``) whose name or path matches a glob."""
    return fs.find(pattern, path=normalise(path or cwd, cwd))


def grep(fs, pattern: str, path: str | None = None, cwd: str = ROOT, *, regex: bool,
         ignore_case: bool) -> list[dict[str, Any]]:
    """Lines of text files under ``path`` (default: ``cwd``) that match, as path, line, text."""
    return fs.grep(pattern, regex=regex, path=normalise(path or cwd, cwd), ignore_case=ignore_case)


# --- processes and the audit log ---------------------------------------------------------------


def ps(fs, last: int | None = None) -> list[dict[str, Any]]:
    """Processes, oldest first (only the ``last`` ones if given), with their live status."""
    rows = fs.processes()
    return rows[-last:] if last else rows


@dataclass(frozen=True)
class Killed:
    """How ``kill`` stopped a process: ``stopping`` (running here: it stops within a token),
    ``dequeued`` (waiting here: it never starts) or ``marked`` (another llmos program, OS pid
    ``owner``, runs it and stops it)."""

    pid: int
    how: str
    owner: int | None = None

    def __str__(self) -> str:
        if self.how == "dequeued":
            return f"killed {self.pid} (it had not started)"
        if self.how == "marked":
            return f"killed {self.pid} (the llmos program running it, OS pid {self.owner}, stops it)"
        return f"killed {self.pid}"


def kill(fs, pid: int, queue=None) -> Killed:
    """Stop process ``pid``: on this program's run ``queue`` if it has the process's work, else
    marked killed in the filesystem for the program that runs it (its run queue polls for that)."""
    how = queue.kill(pid) if queue is not None else None
    if how is not None:
        return Killed(pid, how)
    return Killed(pid, "marked", fs.kill_process(pid))


def log(fs, pid: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The syscall audit log, oldest first: the last ``limit`` entries, of every process or of ``pid``."""
    if pid is not None:
        fs.get_process(pid)   # "no such process", not an empty log
    return fs.syscalls(pid=pid, limit=limit)


# --- drivers, models, syscalls -----------------------------------------------------------------


def drivers(system) -> list[dict[str, Any]]:
    """One row per driver: status ok / unavailable / broken, backend or reason, its syscalls."""
    from llmos_shell.drivers import driver_report

    return driver_report(system)


#: how a driver's status is shown: the kind of text (the shell's console kinds; the CLI colours them)
STATUS_KINDS = {"ok": "ok", "unavailable": "warning", "broken": "error"}


def driver_lines(rows: Iterable[dict[str, Any]]) -> Iterator[list[tuple[str, str | None]]]:
    """The ``drivers`` listing, one line a driver (and one of its syscalls), as (text, kind) pieces."""
    for row in rows:
        detail = row.get("backend") if row["status"] == "ok" else row.get("detail")
        yield [(f"{row['driver']:<12} ", None), (f"{row['status']:<12}", STATUS_KINDS.get(row["status"])),
               (f" {detail or ''}".rstrip(), None)]
        if row["syscalls"]:
            yield [(f"{'':<12}  syscalls: {', '.join(row['syscalls'])}", "muted")]


def models(config) -> list[dict[str, Any]]:
    """Every known model: name, status (installed / available / missing), default, size, context..."""
    from llmos_shell.cpu.models import list_models

    return list_models(config)


def json_arguments(text: str) -> Any:
    """A syscall's arguments as typed: JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"arguments are not valid JSON: {error.msg} at column {error.colno}") from None


def call(system, name: str, arguments: Any, **gate: Any) -> Any:
    """One syscall by hand, no model: through the gate the kernel's calls take (arguments checked,
    the approval policy applied to irreversible syscalls, the call audited). ``gate`` is what
    :meth:`System.call` takes: approve, confirm, pid, cancel, progress."""
    return system.call(name, arguments, by_user=True, **gate)
