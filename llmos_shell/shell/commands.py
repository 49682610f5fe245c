"""The shell's built-in commands: a decorator registry, with ``help`` generated from it.

A command is a function ``(shell, args) -> None`` registered with
:func:`command`. Its docstring is its help: the first line is the summary
``help`` lists, the rest is what ``help NAME`` adds. ``complete`` names what
each argument completes to (``path``, ``host``, ``syscall``, ``model``,
``command``, ``approve``); the last one repeats. A ``raw`` command gets the
rest of the line unsplit (``call`` takes JSON, whose quotes shell splitting
would eat); the others get shell-like words (``shlex``).

Anything that is not a command is a request to the model.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from llmos_shell import builtins
from llmos_shell.errors import UsageError
from llmos_shell.format import human_size, when
from llmos_shell.shell.console import short
from llmos_shell.fs.paths import ROOT, basename

if TYPE_CHECKING:  # pragma: no cover
    from llmos_shell.shell.app import Shell

Handler = Callable[["Shell", Any], None]


@dataclass
class Command:
    name: str
    function: Handler
    usage: str
    summary: str
    details: str
    complete: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    raw: bool = False
    group: str = ""

    def completion_kind(self, index: int) -> str | None:
        """What argument ``index`` (from 0) completes to."""
        if not self.complete:
            return None
        return self.complete[min(index, len(self.complete) - 1)]


COMMANDS: dict[str, Command] = {}     # by name and by alias
GROUPS = ("files", "model", "system", "shell")


def command(name: str, usage: str = "", *, complete: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
            raw: bool = False, group: str = "shell") -> Callable[[Handler], Handler]:
    """Register a built-in command. The docstring is its help."""

    def decorator(function: Handler) -> Handler:
        doc = textwrap.dedent(function.__doc__ or "").strip()
        summary, _, details = doc.partition("\n")
        entry = Command(name=name, function=function, usage=f"{name} {usage}".strip(), summary=summary.strip(),
                        details=textwrap.dedent(details).strip(), complete=complete, aliases=aliases, raw=raw,
                        group=group)
        for key in (name, *aliases):
            if key in COMMANDS:
                raise ValueError(f"shell command {key!r} is registered twice")
            COMMANDS[key] = entry
        return function

    return decorator


def commands() -> list[Command]:
    """Every command once (aliases aside), in registration order."""
    seen: list[Command] = []
    for entry in COMMANDS.values():
        if entry not in seen:
            seen.append(entry)
    return seen


def split(text: str) -> list[str]:
    """Shell-like words: quotes group, backslashes escape."""
    try:
        return shlex.split(text)
    except ValueError as error:  # "No closing quotation"
        raise UsageError(f"{str(error).lower()}: {text}") from None


def flags(args: list[str], allowed: str, valued: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """Split ``-r``-style flags (letters in ``allowed``, combinable) and ``--name VALUE`` or ``-n VALUE``
    options (names in ``valued``) from positional words. ``--`` ends the options."""
    found: dict[str, Any] = {}
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            rest.extend(words)
            break
        if word.startswith("--") and word[2:].split("=")[0] in valued:
            key, eq, value = word[2:].partition("=")
            if not eq:
                value = next(words, None)
                if value is None:
                    raise UsageError(f"--{key} needs a value")
            found[key] = value
        elif word.startswith("-") and word[1:] in valued:
            value = next(words, None)
            if value is None:
                raise UsageError(f"{word} needs a value")
            found[word[1:]] = value
        elif word.startswith("-") and len(word) > 1 and not word[1:].isdigit():
            for letter in word[1:]:
                if letter not in allowed:
                    raise UsageError(f"unknown option -{letter}")
                found[letter] = True
        else:
            rest.append(word)
    return found, rest


def need(args: list[str], low: int, high: int | None, usage: str) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        raise UsageError(f"usage: {usage}")


# --- the shell itself ---------------------------------------------------------------------------

@command("help", "[COMMAND]", complete=("command",), aliases=("?",))
def help_command(shell: "Shell", args: list[str]) -> None:
    """List the commands, or show how to use one.

    Anything that is not a command goes to the model. To send a request that
    starts with a command's name, begin it with `ask`.
    """
    out = shell.console
    if args:
        entry = COMMANDS.get(args[0])
        if entry is None:
            raise UsageError(f"no command {args[0]!r}; `help` lists them (to ask the model, type: ask {' '.join(args)})")
        out.line(entry.usage, "heading")
        out.line(f"  {entry.summary}")
        if entry.details:
            for line in entry.details.splitlines():
                out.line(f"  {line}".rstrip())
        if entry.aliases:
            out.line(f"  aliases: {', '.join(entry.aliases)}")
        return
    width = max(len(c.usage) for c in commands())
    for group in GROUPS:
        members = [c for c in commands() if c.group == group]
        if not members:
            continue
        out.line(f"{group}:", "heading")
        for entry in members:
            out.line(f"  {entry.usage.ljust(width)}  {entry.summary}")
    out.line()
    out.line("Anything else is a request to the model. Keys: Tab completes, Ctrl-R searches the history,")
    out.line("Alt-Enter or a trailing \\ continues on a new line, Ctrl-C interrupts, Ctrl-D exits.")


@command("exit", aliases=("quit",))
def exit_command(shell: "Shell", args: list[str]) -> None:
    """Leave the shell (Ctrl-D does too)."""
    need(args, 0, 0, "exit  (to ask the model: ask exit ...)")
    shell.running = False


@command("clear")
def clear_command(shell: "Shell", args: list[str]) -> None:
    """Clear the screen."""
    need(args, 0, 0, "clear  (to ask the model: ask clear ...)")
    shell.clear_screen()


@command("history", "[N]")
def history_command(shell: "Shell", args: list[str]) -> None:
    """Show the last N lines typed (default 20); they are kept in $LLMOS_HOME/history.

    Ctrl-R at the prompt searches them; the Up key walks back through them.
    """
    need(args, 0, 1, "history [N]")
    try:
        count = int(args[0]) if args else 20
    except ValueError:
        raise UsageError("history N: N is a number") from None
    entries = list(shell.session.history.get_strings())
    start = max(0, len(entries) - count)
    for number, entry in enumerate(entries[start:], start + 1):
        shell.console.line(f"{number:>5}  {entry.replace(chr(10), chr(10) + ' ' * 7)}")


@command("ask", "TEXT", raw=True, group="model")
def ask_command(shell: "Shell", text: str) -> None:
    """Send TEXT to the model, even if it starts with a command's name (`ask find me a recipe`)."""
    if not text.strip():
        raise UsageError("usage: ask TEXT")
    shell.ask(text.strip())


@command("reset", group="model")
def reset_command(shell: "Shell", args: list[str]) -> None:
    """Start a new conversation: a new process with an empty context (the old one stays in `ps`)."""
    need(args, 0, 0, "reset  (to ask the model: ask reset ...)")
    shell.new_process()
    shell.console.muted(f"new conversation: pid {shell.process.pid}")


# --- files --------------------------------------------------------------------------------------

@command("pwd", group="files")
def pwd_command(shell: "Shell", args: list[str]) -> None:
    """Print the current directory of the SQLite filesystem."""
    need(args, 0, 0, "pwd  (to ask the model: ask pwd ...)")
    shell.console.line(shell.cwd)


@command("cd", "[PATH]", complete=("dir",), group="files")
def cd_command(shell: "Shell", args: list[str]) -> None:
    """Change the current directory (no PATH: /; `-`: the previous one)."""
    need(args, 0, 1, "cd [PATH]")
    target = args[0] if args else ROOT
    if target == "-":
        target = shell.previous_cwd
    path = shell.path(target)
    if not shell.fs.is_dir(path):
        if shell.fs.exists(path):
            raise UsageError(f"not a directory: {path}")
        raise UsageError(f"no such directory: {path}")
    shell.previous_cwd, shell.cwd = shell.cwd, path


@command("ls", "[-l] [PATH...]", complete=("path",), group="files")
def ls_command(shell: "Shell", args: list[str]) -> None:
    """List a directory (default: the current one); -l adds size, type and date.

    Directories end with /.
    """
    options, paths = flags(args, "la")
    out = shell.console
    several = len(paths) > 1
    for index, (path, entries) in enumerate(builtins.ls(shell.fs, paths, shell.cwd)):
        if several:
            out.line(f"{path}:", "heading")
        if options.get("l"):
            out.table([[human_size(e["size"]) if e["kind"] == "file" else "-", e["mime"] or "-",
                        when(e["modified"]), e["name"] + ("/" if e["kind"] == "dir" else "")] for e in entries])
        elif entries:
            names = [e["name"] + ("/" if e["kind"] == "dir" else "") for e in entries]
            out.line("  ".join(shlex.quote(n) if " " in n else n for n in names))
        if several and index < len(paths) - 1:
            out.line()


@command("cat", "PATH...", complete=("path",), group="files")
def cat_command(shell: "Shell", args: list[str]) -> None:
    """Print text files."""
    need(args, 1, None, "cat PATH...")
    for text in builtins.cat(shell.fs, args, shell.cwd, text=True):
        shell.console.write(text)
        shell.console.end_line()


@command("write", "PATH [TEXT...]", complete=("path",), group="files")
def write_command(shell: "Shell", args: list[str]) -> None:
    """Write TEXT to a file (replacing it); with no TEXT, open the file in $EDITOR.

    Parent directories are created. `write notes/todo.txt "buy milk"`.
    """
    need(args, 1, None, "write PATH [TEXT...]")
    if len(args) == 1:
        edit_command(shell, args)
        return
    path = shell.path(args[0])
    info = shell.fs.write(path, " ".join(args[1:]) + "\n")
    shell.console.muted(f"wrote {info['path']} ({human_size(info['size'])})")


@command("edit", "PATH", complete=("path",), group="files")
def edit_command(shell: "Shell", args: list[str]) -> None:
    """Edit a file of the SQLite filesystem in $EDITOR (or $VISUAL); it is created if missing.

    The file is copied to a temporary host file, the editor runs, and what it
    saved is written back (nothing is written if it did not change).
    """
    need(args, 1, 1, "edit PATH")
    path = shell.path(args[0])
    fs = shell.fs
    if fs.exists(path):
        if fs.is_dir(path):
            raise UsageError(f"is a directory: {path}")
        original = fs.read(path)
    else:
        original = None
    editor = find_editor()
    suffix = "-" + basename(path) if basename(path) else ""
    with tempfile.TemporaryDirectory(prefix="llmos-edit-") as folder:
        host = Path(folder) / ("file" + suffix)
        host.write_bytes(original or b"")
        try:
            code = subprocess.call([*shlex.split(editor), str(host)])
        except OSError as error:
            raise UsageError(f"cannot run the editor {editor!r}: {error.strerror}") from None
        if code != 0:
            raise UsageError(f"the editor exited with status {code}; {path} is unchanged")
        data = host.read_bytes()
    if original is not None and data == original:
        shell.console.muted(f"{path} unchanged")
        return
    info = fs.write(path, data)
    shell.console.muted(f"wrote {info['path']} ({human_size(info['size'])})")


def find_editor() -> str:
    for variable in ("VISUAL", "EDITOR"):
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    for candidate in ("editor", "nano", "vi", "vim"):
        if shutil.which(candidate):
            return candidate
    raise UsageError("no editor found: set $EDITOR (for example `export EDITOR=nano`)")


@command("rm", "[-r] PATH...", complete=("path",), group="files")
def rm_command(shell: "Shell", args: list[str]) -> None:
    """Remove files; -r also removes directories with everything in them."""
    options, paths = flags(args, "rf")
    need(paths, 1, None, "rm [-r] PATH...")
    builtins.rm(shell.fs, paths, shell.cwd, recursive=bool(options.get("r")))


@command("undo", group="files")
def undo_command(shell: "Shell", args: list[str]) -> None:
    """Revert every change to files that this shell's last request made; again, the one before.

    A request is one line: a request to the model, or a command such as write, rm, mv. Each file goes back to what it held before that request; a file it made is removed. Nothing
    is lost: what the files held is kept as versions (`llmos fs versions PATH`).
    """
    need(args, 0, 0, "undo")
    undone = shell.fs.undo(pids=shell.pids)
    if undone is None:
        shell.console.line("nothing to undo")
        return
    if not undone["reverted"]:
        shell.console.line("the last request's changes were already reverted")
    for change in undone["reverted"]:
        if change["action"] == "removed":
            shell.console.line(f"removed {change['path']} (the request made it)")
        else:
            shell.console.line(f"restored {change['path']} ({human_size(change['size'])}, as before the request)")


@command("mkdir", "PATH...", complete=("dir",), group="files")
def mkdir_command(shell: "Shell", args: list[str]) -> None:
    """Create directories, with their parents (like mkdir -p)."""
    _, paths = flags(args, "p")
    need(paths, 1, None, "mkdir PATH...")
    builtins.mkdir(shell.fs, paths, shell.cwd, parents=True)


@command("mv", "SOURCE DEST", complete=("path",), group="files")
def mv_command(shell: "Shell", args: list[str]) -> None:
    """Move or rename a file or directory (into DEST if it is a directory)."""
    need(args, 2, 2, "mv SOURCE DEST")
    builtins.mv(shell.fs, *args, cwd=shell.cwd)


@command("cp", "SOURCE DEST", complete=("path",), group="files")
def cp_command(shell: "Shell", args: list[str]) -> None:
    """Copy a file, or a directory with everything in it (into DEST if it is a directory)."""
    _, paths = flags(args, "r")
    need(paths, 2, 2, "cp SOURCE DEST")
    builtins.cp(shell.fs, *paths, cwd=shell.cwd)


@command("find", "PATTERN [PATH]", complete=("none", "dir"), group="files")
def find_command(shell: "Shell", args: list[str]) -> None:
    """Find files and directories whose name matches a glob (`find '*.txt'`, `find 'notes/**/*.md'`)."""
    need(args, 1, 2, "find PATTERN [PATH]")
    for entry in builtins.find(shell.fs, *args, cwd=shell.cwd):
        shell.console.line(entry["path"] + ("/" if entry["kind"] == "dir" else ""))


@command("grep", "[-E] [-i] PATTERN [PATH]", complete=("none", "path"), group="files")
def grep_command(shell: "Shell", args: list[str]) -> None:
    """Lines of text files that match: words by default (full-text search), -E a regular expression.

    -i ignores case (with -E). Searches under PATH, default the current directory.
    """
    options, rest = flags(args, "Eei")
    need(rest, 1, 2, "grep [-E] [-i] PATTERN [PATH]")
    regex = bool(options.get("E") or options.get("e"))
    for hit in builtins.grep(shell.fs, *rest, cwd=shell.cwd, regex=regex, ignore_case=bool(options.get("i"))):
        shell.console.line(f"{hit['path']}:{hit['line']}: {hit['text']}")


@command("import", "HOST_PATH [DEST]", complete=("host", "dir"), group="files")
def import_command(shell: "Shell", args: list[str]) -> None:
    """Copy a file or folder of the host into the SQLite filesystem (default: the current directory)."""
    need(args, 1, 2, "import HOST_PATH [DEST]")
    dest = shell.path(args[1]) if len(args) > 1 else shell.cwd
    summary = shell.fs.import_host(os.path.expanduser(args[0]), dest)
    shell.console.muted(f"imported {summary['path']}: {summary['files']} files, {summary.get('dirs', 0)} "
                        f"directories, {human_size(summary['bytes'])}")
    for skipped in summary.get("skipped") or []:
        shell.console.warning(f"skipped {skipped.get('host')}: {skipped.get('why')}")


@command("export", "PATH [HOST_DIR]", complete=("path", "host"), group="files")
def export_command(shell: "Shell", args: list[str]) -> None:
    """Copy a file or directory out into a host directory (default: the host's current directory)."""
    need(args, 1, 2, "export PATH [HOST_DIR]")
    host_dir = os.path.expanduser(args[1]) if len(args) > 1 else os.getcwd()
    summary = shell.fs.export(shell.path(args[0]), host_dir)
    shell.console.muted(f"exported {summary['path']}: {summary['files']} files, {human_size(summary['bytes'])}")


# --- processes, syscalls, drivers, models -----------------------------------------------------

PS_LAST = 20   # processes `ps` lists without -a


@command("ps", "[-a]", group="system")
def show_processes(shell: "Shell", args: list[str]) -> None:
    """List processes (conversations, tasks, background requests) and what they hold.

    STATUS is live: waiting (for the CPU), running, then how the last request ended (ok, killed,
    ...). CTX is the context in tokens and KV the bytes of its KV state after its last request
    (on the CPU or in a snapshot). -a: all, not just the last 20.
    """
    options, _ = flags(args, "a")
    table = []
    rows = builtins.ps(shell.fs, last=None if options.get("a") else PS_LAST)
    for row in rows:
        mark = "*" if row.get("pid") == shell.process.pid else ""
        tokens, kv = row.get("context_tokens"), row.get("kv_bytes")
        table.append([f"{row.get('pid')}{mark}", row.get("status") or "-",
                      "-" if tokens is None else str(tokens), "-" if kv is None else human_size(kv),
                      row.get("model") or "-", when(row.get("created")), row.get("name") or ""])
    shell.console.table(table, header=["PID", "STATUS", "CTX", "KV", "MODEL", "STARTED", "NAME"])


@command("jobs", group="system")
def jobs_command(shell: "Shell", args: list[str]) -> None:
    """Background requests (`REQUEST &`) not yet ended or shown: job number, state, pid, request."""
    need(args, 0, 0, "jobs")
    table = []
    for number, (job, _events) in sorted(shell.background.items()):
        state = "done" if job.state in ("ok", "tool_calls") else job.state
        table.append([f"[{number}]", state, str(job.pid), short(job.text, 60)])
        if job.done:
            shell.background.pop(number)
    if not table:
        shell.console.muted("no background jobs (a request ending in & runs in the background)")
        return
    shell.console.table(table, header=["JOB", "STATE", "PID", "REQUEST"])


def _job(shell: "Shell", word: str | None):
    """The background job a `fg`/`kill` argument names: N or %N (default: the newest)."""
    if not shell.background:
        raise UsageError("no background jobs")
    if word is None:
        return shell.background[max(shell.background)]
    try:
        number = int(word.lstrip("%"))
    except ValueError:
        raise UsageError(f"not a job number: {word}") from None
    if number not in shell.background:
        raise UsageError(f"no job {number} (`jobs` lists them)")
    return shell.background[number]


@command("fg", "[N]", group="system")
def fg_command(shell: "Shell", args: list[str]) -> None:
    """Bring background job N (default: the newest) to the foreground: its output so far, then the rest.

    Ctrl-C then stops it. A job that has ended shows its reply.
    """
    need(args, 0, 1, "fg [N]")
    job, events = _job(shell, args[0] if args else None)
    shell.foreground(job, events)


@command("wait", group="system")
def wait_command(shell: "Shell", args: list[str]) -> None:
    """Wait until every background job has ended (Ctrl-C stops waiting; the jobs go on)."""
    need(args, 0, 0, "wait")
    try:
        while True:
            left = [job for job, _events in shell.background.values() if not job.done]
            if not left:
                break
            shell.console.spin(f"waiting for {len(left)} job(s)")
            left[0].ended_within(0.1)
    except KeyboardInterrupt:
        shell.console.stop_spinner()
        shell.console.warning("stopped waiting; the jobs go on (`jobs`)")
        return
    shell.console.stop_spinner()


KILL_WAIT = 5.0   # seconds `kill` waits to see a running job stop


@command("kill", "PID|%N...", group="system")
def kill_command(shell: "Shell", args: list[str]) -> None:
    """Stop processes: a running one within a token, a waiting one before it starts.

    `ps` then shows them killed. %N names background job N. A process another llmos program runs
    (a second shell, `llmos run`, `llmos serve`) is stopped by that program.
    """
    need(args, 1, None, "kill PID|%N...")
    for word in args:
        if word.startswith("%"):
            pid = _job(shell, word)[0].pid
        else:
            try:
                pid = int(word)
            except ValueError:
                raise UsageError(f"not a pid: {word}") from None
        if pid == shell.process.pid:
            raise UsageError(f"pid {pid} is this shell's conversation: use `reset` or `exit`")
        # its job, looked up first: once it has stopped, the queue forgets it
        job = shell.queue.job_of(pid) or next((j for j, _ in shell.background.values() if j.pid == pid), None)
        killed = builtins.kill(shell.fs, pid, shell.queue)
        if killed.how == "stopping" and job is not None and not job.ended_within(KILL_WAIT):
            shell.console.warning(f"{pid} is still stopping (its current step has not ended)")
            continue
        shell.console.muted(str(killed))


@command("log", "[-n N] [--pid PID]", group="system")
def show_audit_log(shell: "Shell", args: list[str]) -> None:
    """The syscall audit log: the last N syscalls (default 20), of every process or of one."""
    options, rest = flags(args, "", valued=("pid", "n"))
    count = options.get("n")
    if rest and count is None and rest[0].isdigit():
        count = rest.pop(0)
    try:
        count = int(count) if count is not None else 20
        pid = int(options["pid"]) if options.get("pid") is not None else None
    except ValueError:
        raise UsageError("usage: log [-n N] [--pid PID]") from None
    rows = builtins.log(shell.fs, pid=pid, limit=count)
    table = []
    for row in rows:
        outcome = row.get("error") if row.get("status") != "ok" else row.get("result")
        table.append([when(row.get("started")), str(row.get("pid") or "-"), row.get("status") or "-",
                      f"{row.get('ms') or 0:.0f}ms", f"{row.get('name')} {short_json(row.get('arguments'))}"
                      f" -> {short_json(outcome, 60)}"])
    shell.console.table(table, header=["WHEN", "PID", "STATUS", "TIME", "SYSCALL"])


def short_json(value: Any, limit: int = 80) -> str:
    from llmos_shell.shell.console import short

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    return short(value, limit)


@command("drivers", group="system")
def show_drivers(shell: "Shell", args: list[str]) -> None:
    """Every driver and its syscalls: ok (with its backend), unavailable (why) or broken (the error)."""
    need(args, 0, 0, "drivers  (to ask the model: ask drivers ...)")
    for pieces in builtins.driver_lines(builtins.drivers(shell.system)):
        for text, kind in pieces:
            shell.console.write(text, kind)
        shell.console.write("\n")


@command("models", group="model")
def models_command(shell: "Shell", args: list[str]) -> None:
    """The known models: installed or not; * marks the one in use. `model NAME` switches."""
    need(args, 0, 0, "models  (to ask the model: ask models ...)")
    current = shell.system.config.model
    known = builtins.models(shell.system.config)
    rows = []
    for row in known:
        mark = "*" if row["name"] == current else " "
        rows.append([f"{mark} {row['name']}", row["status"], f"{row['size_mb']:.0f} MB", f"ctx {row['context']}",
                     row["license"]])
    shell.console.table(rows)
    if current not in {r["name"] for r in known}:
        shell.console.line(f"* {current}")


@command("model", "[NAME]", complete=("model",), group="model")
def model_command(shell: "Shell", args: list[str]) -> None:
    """Show the model in use, or switch to model NAME (a name from `models`, or a .gguf path).

    The conversation goes on with the new model; it loads in the background.
    """
    need(args, 0, 1, "model [NAME]")
    loader = shell.loader
    if not args:
        state = loader.state
        detail = f": {loader.error}" if state == "failed" else ""
        shell.console.line(f"{shell.system.config.model} ({state}{detail})")
        return
    name = args[0]
    if name.endswith(".gguf") or os.sep in name:
        if not Path(name).expanduser().is_file():
            raise UsageError(f"no such model file: {name}")
        name = str(Path(name).expanduser().resolve())
    else:
        from llmos_shell.cpu.models import get_manifest

        get_manifest(name)
    if name == shell.system.config.model and loader.state in ("ready", "loading"):
        shell.console.muted(f"already using {name}")
        return
    loader.switch(name)
    shell.console.muted(f"switching to {name} (loading in the background)")


@command("approve", "[ask|auto|never]", complete=("approve",), group="model")
def approve_command(shell: "Shell", args: list[str]) -> None:
    """Show or set the approval policy for irreversible syscalls.

    ask: the shell asks y/n before each one (the default); auto: run them;
    never: refuse them.
    """
    need(args, 0, 1, "approve [ask|auto|never]")
    if not args:
        shell.console.line(shell.kernel.approve)
        return
    if args[0] not in ("ask", "auto", "never"):
        raise UsageError("approve ask|auto|never")
    shell.kernel.approve = args[0]
    shell.console.muted(f"approval policy: {args[0]}")


@command("call", "SYSCALL [JSON]", complete=("syscall", "arguments"), raw=True, group="model")
def call_by_hand(shell: "Shell", text: str) -> None:
    """Run one syscall directly with JSON arguments, no model involved; irreversible ones ask first.

    `call translate {"text": "hola", "target": "en"}` — the call is recorded in `log`.
    """
    name, _, rest = text.strip().partition(" ")
    if not name:
        raise UsageError("usage: call SYSCALL [JSON]  (`drivers` lists the syscalls)")
    shell.call_syscall(name, builtins.json_arguments(rest.strip() or "{}"))
