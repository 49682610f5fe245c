"""The interactive shell: a prompt-toolkit REPL over the filesystem, the drivers and the model.

A line whose first word is a built-in command (see :mod:`.commands`) runs it;
anything else is a request to the model in this shell's process, a
conversation that keeps its context. The model loads in the background
(:mod:`.loader`); requests run in a worker thread (:mod:`.runner`) so Ctrl-C
always reaches the prompt.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import signal
import sys
import threading
from typing import Any, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import set_app
from prompt_toolkit.application.run_in_terminal import run_in_terminal
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import DummyInput
from prompt_toolkit.output import DummyOutput

from llmos_shell import __version__, builtins
from llmos_shell.errors import Denied, LlmosError, UsageError
from llmos_shell.fs.paths import ROOT, normalise
from llmos_shell.fs.versions import acting
from llmos_shell.gate import one_line
from llmos_shell.kernel.loop import Kernel, TurnResult
from llmos_shell.kernel.scheduler import Job, RunQueue
from llmos_shell.shell.commands import COMMANDS, split
from llmos_shell.shell.completer import ShellCompleter
from llmos_shell.shell.console import Console, short
from llmos_shell.shell.keys import ends_with_backslash, join_continuations, key_bindings
from llmos_shell.shell.loader import ModelLoader
from llmos_shell.shell.runner import JobEvents, Worker
from llmos_shell.shell.style import STYLE, continuation, prompt_text
from llmos_shell.shell.toolbar import toolbar

log = logging.getLogger("llmos.shell")

FIRST_WORD = re.compile(r"(\S+)\s*(.*)", re.DOTALL)
BACKGROUND = re.compile(r"(?<![&\\])&\s*$")     # a request ending in `&` (not `&&`, not `\&`)


class Shell:
    """One interactive session. ``input``/``output`` (prompt-toolkit) and ``stream`` are for tests."""

    def __init__(self, system, *, input: Any = None, output: Any = None, stream: TextIO | None = None,
                 color: bool | None = None, history: History | None = None, approve: str = "ask",
                 script: TextIO | None = None) -> None:
        self.system = system
        self.script = script          # lines to run instead of a prompt (standard input not a terminal)
        self.failures = 0
        self.config = system.config
        self.console = Console(stream, color)
        self.cwd = ROOT
        self.previous_cwd = ROOT
        self.running = True
        self.context_tokens: int | None = None
        self.process = None
        self.pids: set[int] = set()   # this session's processes: whose changes `undo` reverts
        self.kernel = Kernel(system, approve=approve)
        self._queue: RunQueue | None = None
        self.background: dict[int, tuple[Job, JobEvents]] = {}   # `&` requests by job number
        self.loader = ModelLoader(system, on_ready=self._model_ready, on_error=self._model_failed)
        self._pending: list[tuple[str, str | None]] = []   # (line, style) from background threads, not shown yet
        self._router_thread: threading.Thread | None = None   # trains the router while the model loads
        self._pending_lock = threading.Lock()
        if script is not None:        # no terminal: prompt-toolkit only keeps the history
            input, output = DummyInput(), DummyOutput()
        common = dict(input=input, output=output, style=STYLE)
        self.session: PromptSession = PromptSession(
            history=history or self._history(), completer=ShellCompleter(self), complete_while_typing=False,
            key_bindings=key_bindings(), bottom_toolbar=lambda: toolbar(self), refresh_interval=1.0,
            prompt_continuation=continuation, auto_suggest=AutoSuggestFromHistory(), **common)
        self.confirm_session: PromptSession = PromptSession(**common)

    # --- setup -----------------------------------------------------------------------------

    def _history(self) -> History:
        path = self.config.history_path
        try:
            self.config.ensure_home()
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as error:
            self.console.warning(f"history is not saved: cannot open {path}: {error.strerror}")
            return InMemoryHistory()
        return FileHistory(str(path))

    @property
    def fs(self):
        return self.system.fs

    def path(self, text: str) -> str:
        """A path typed by the user, made absolute from the current directory."""
        return normalise(text, self.cwd)

    @property
    def queue(self) -> RunQueue:
        """This shell's run queue: its requests, foreground and background, one at a time on the CPU."""
        if self._queue is None:
            self._queue = RunQueue(self.system.fs, self.kernel, on_finished=self._job_finished)
        return self._queue

    def new_process(self) -> None:
        """A fresh conversation (``reset``); the old process is marked done."""
        if self.process is not None and self.process.status not in ("running",):
            self.kernel.finish(self.process, "done")
        self.process = self.kernel.spawn("shell")
        self.pids.add(self.process.pid)
        self.context_tokens = None
        self._count_context()

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.new_process()
        except LlmosError as error:
            self.console.error(str(error))
            return error.exit_code
        self.loader.start()
        self._router_thread = threading.Thread(target=self._prepare_router, name="llmos-router", daemon=True)
        self._router_thread.start()
        if self.script is not None:
            return self._run_script()
        self.console.muted(f"llmos {__version__} · model {self.loader.name} · `help` lists the commands, "
                           "anything else goes to the model · Ctrl-D exits")
        try:
            while self.running:
                self._show_pending()
                try:
                    text = self.session.prompt(lambda: prompt_text(self.cwd), pre_run=self._pending_in_app)
                except KeyboardInterrupt:    # Ctrl-C at the prompt: a fresh line
                    continue
                except EOFError:             # Ctrl-D
                    break
                self.handle(text)
        finally:
            self.close()
        return 0

    def _run_script(self) -> int:
        """Standard input is not a terminal: run its lines as if typed; exit 1 if any failed."""
        try:
            while self.running:
                self._show_pending()       # background jobs that ended meanwhile
                text = self._script_line()
                if text is None:
                    break
                self.handle(text)
        except KeyboardInterrupt:
            self.console.warning("interrupted")
            return 130
        finally:
            self.close()
        return 1 if self.failures else 0

    def _script_line(self) -> str | None:
        lines: list[str] = []
        for raw in self.script:
            lines.append(raw.rstrip("\r\n"))
            if not ends_with_backslash(lines[-1]):
                break
        return "\n".join(lines) if lines else None

    def handle(self, text: str) -> None:
        """Run one input line: a built-in command or a request to the model; errors are one line."""
        text = join_continuations(text).strip()
        if not text:
            return
        try:
            with acting(self.process.pid if self.process is not None else None):   # one line, one request
                self.dispatch(text)
        except LlmosError as error:
            log.info("command failed: %s", error, exc_info=log.isEnabledFor(logging.DEBUG))
            self.failures += 1
            self.console.error(str(error))
        except KeyboardInterrupt:
            self.console.stop_spinner()
            self.console.warning("interrupted")
        except Exception as error:  # a bug: one line here, the traceback in the log
            log.exception("shell command failed: %s", text[:200])
            self.failures += 1
            self.console.error(f"internal error: {type(error).__name__}: {error} (details in {self.config.log_path})")

    def dispatch(self, text: str) -> None:
        name, rest = FIRST_WORD.match(text).groups()
        entry = COMMANDS.get(name)
        background = BACKGROUND.search(text)
        if background and (entry is None or entry.name == "ask"):
            request = text[:background.start()]
            if entry is not None:
                request = FIRST_WORD.match(request).group(2)
            if not request.strip():
                raise UsageError("usage: REQUEST &  (runs the request in the background)")
            self.ask_in_background(request.strip())
        elif entry is None:
            self.ask(text)
        else:
            entry.function(self, rest if entry.raw else split(rest))

    def close(self) -> None:
        if self._queue is not None:
            unfinished = [job for job, _events in self.background.values() if not job.done]
            if unfinished:
                self.console.warning(f"killing {len(unfinished)} background job(s): "
                                     + ", ".join(f"[{job.number}] pid {job.pid}" for job in unfinished))
            self._queue.close()
        if self.process is not None and self.system.fs_opened:
            try:
                self.kernel.finish(self.process, "exited")
            except LlmosError:
                log.exception("marking the shell's process done")
        self.loader.wait(timeout=30, start=False)   # never leave llama.cpp half-loaded at interpreter exit
        if self._router_thread is not None:         # nor NumPy's BLAS threads mid-product (exit hangs)
            self._router_thread.join(timeout=30)

    def _prepare_router(self) -> None:   # on its own thread, while the model loads
        try:
            self.kernel.prepare(self.process)
        except Exception:  # the first request will say what is wrong, in one line
            log.exception("preparing the router")

    # --- the model -------------------------------------------------------------------------

    def ensure_model(self) -> None:
        """Wait (with a spinner) for the model; one error line if it cannot load."""
        if self.system.cpu_loaded:
            return
        try:
            ready = self.loader.wait(tick=lambda: self.console.spin(f"loading {self.loader.name}"))
        finally:
            self.console.stop_spinner()
        if not ready:
            self._take_pending()   # the error is said here, not again at the next prompt
            raise LlmosError(f"no model: {self.loader.error} (`models` lists them, `model NAME` switches)")

    def ask(self, text: str) -> TurnResult:
        """A request to the model in this shell's conversation: stream the reply, show syscalls, ask
        before irreversible ones. It waits its turn on the run queue behind any background job."""
        self.ensure_model()
        worker = Worker(self.console, self.confirm)
        job = self.queue.submit(self.process, text, events=JobEvents(worker.events()), cancel=worker.cancel)
        try:
            result: TurnResult = worker.follow(job, self.queue)
        finally:
            self._count_context()
        self.show_result(result)
        return result

    def ask_in_background(self, text: str) -> Job:
        """``REQUEST &``: the request runs as its own process (a fresh context) when the CPU is free;
        the prompt comes back at once, and a line says when it is done."""
        self.ensure_model()
        process = self.kernel.spawn(f"& {short(text, 40)}")
        self.pids.add(process.pid)
        events = JobEvents()
        job = self.queue.submit(process, text, events=events)
        self.background[job.number] = (job, events)
        self.console.muted(f"[{job.number}] pid {job.pid}")
        return job

    def foreground(self, job: Job, events: JobEvents) -> TurnResult:
        """``fg``: show what a background job printed so far and follow it to its end (Ctrl-C stops it)."""
        worker = Worker(self.console, self.confirm, cancel=job.cancel)
        events.attach(worker.events())
        try:
            result: TurnResult = worker.follow(job, self.queue)
        finally:
            self.background.pop(job.number, None)
        self.show_result(result)
        return result

    def show_result(self, result: TurnResult) -> None:
        self.console.end_line()
        if result.status == "interrupted":
            self.console.warning("[interrupted]")
        elif result.status == "killed":
            self.console.warning("[killed]")
        elif result.status == "denied":
            self.console.warning(result.error or "denied")
        elif result.status not in ("ok", "tool_calls"):
            self.console.error(result.error or result.status)

    def _job_finished(self, job: Job) -> None:   # on the run queue's thread
        """A background job ended: say so above the prompt, with its reply."""
        entry = self.background.get(job.number)
        if entry is None or entry[1].attached:
            return   # a foreground request, or one `fg` is showing
        result = job.result
        if job.error is not None:   # a bug: the traceback in the log, one line here
            log.error("background job %s failed", job.number, exc_info=job.error)
        status = "done" if result is not None and result.status in ("ok", "tool_calls") else job.state
        lines = [f"[{job.number}] {status} · pid {job.pid} · {short(job.text, 60)}"]
        reply = entry[1].text().strip()
        if reply:
            lines.append(reply)
        if result is not None and result.error and result.status not in ("ok", "tool_calls", "killed"):
            lines.append(f"error: {result.error}")
        elif job.error is not None:
            lines.append(f"internal error: {type(job.error).__name__}: {job.error} "
                         f"(details in {self.config.log_path})")
        self.notify("\n".join(lines), kind=None)
        self.background.pop(job.number, None)   # said once, as a shell says "Done"

    def confirm(self, syscall, arguments: dict[str, Any]) -> bool:
        """Ask y/n before an irreversible syscall (main thread only): the shell's gate.Confirm."""
        self.console.end_line()
        question = f"{syscall.name} {short(arguments, 80)} cannot be undone. Run it? [y/N] "
        if self.script is not None:   # the answer is the script's next line
            self.console.write(question, "warning")
            answer = self.script.readline()
            self.console.write(answer if answer.endswith("\n") else answer + "\n")
        else:
            try:
                answer = self.confirm_session.prompt([("class:confirm", question)])
            except EOFError:
                return False
        return answer.strip().lower() in ("y", "yes")

    def call_syscall(self, name: str, arguments: dict[str, Any]) -> Any:
        """The ``call`` command: one syscall, no model, through the gate the kernel's calls take
        (validated, the same approval policy, audited)."""
        syscall = self.system.table.get(name)
        if "uses_cpu" in syscall.capabilities:
            self.ensure_model()
        worker = Worker(self.console, self.confirm, label=f"running {name}")
        events = worker.events()
        confirm = events.confirm  # asked on the main thread, as the kernel's approvals are
        try:
            result = worker.run(lambda: builtins.call(self.system, name, arguments, approve=self.kernel.approve,
                                                      confirm=confirm, pid=self.process.pid, cancel=worker.cancel,
                                                      progress=functools.partial(events.progress, name)))
        except Denied as error:
            self.console.warning(f"denied: {error}")
            return None
        except Exception as error:
            if not isinstance(error, LlmosError):
                log.exception("syscall %s failed", name)
            raise LlmosError(f"{name}: {one_line(error)}") from None
        if isinstance(result, bytes):
            result = f"<{len(result)} bytes>"
        if isinstance(result, str):
            self.console.write(result)
            self.console.end_line()
        else:
            self.console.line(json.dumps(result, ensure_ascii=False, indent=2, default=str))
        return result

    # --- background notices ----------------------------------------------------------------

    def _model_ready(self, cpu) -> None:   # on the loader thread
        """Count the context for the toolbar, then warm the CPU up on this conversation's prompt: its KV
        cache then holds the pinned prefix and the call decision's tables are built before the first
        request (a request typed meanwhile queues behind this on the CPU's worker)."""
        self._count_context(cpu)
        if self.process is None:
            return
        try:
            self.kernel.warm_up(self.process, cpu)
        except LlmosError as error:
            log.info("warm-up skipped: %s", error)

    def _model_failed(self, error: str) -> None:   # on the loader thread
        if self.script is not None:   # a script hears of it only if it asks the model
            return
        self.notify(f"error: {error} (file commands still work; `models` lists the models)")

    def notify(self, line: str, kind: str | None = "error") -> None:
        """Show a line from a background thread: above the prompt if it is up, else before the next one."""
        with self._pending_lock:
            self._pending.append((line, kind))
        app = self.session.app
        loop = app.loop
        if app.is_running and loop is not None:
            def show() -> None:
                with set_app(app):
                    self._pending_in_app()

            try:
                loop.call_soon_threadsafe(show)
            except RuntimeError:  # the loop just closed: the next prompt shows it
                pass

    def _take_pending(self) -> list[tuple[str, str | None]]:
        with self._pending_lock:
            lines, self._pending = self._pending, []
        return lines

    def _pending_in_app(self) -> None:
        """Print waiting lines above the running prompt (``pre_run`` of each prompt, and :meth:`notify`)."""
        lines = self._take_pending()
        if lines:
            run_in_terminal(lambda: [self.console.line(line, kind) for line, kind in lines])

    def _show_pending(self) -> None:
        for line, kind in self._take_pending():
            self.console.line(line, kind)

    def _count_context(self, cpu=None) -> None:
        """Cache the context's size in tokens for the toolbar (after a turn, a load, a reset)."""
        cpu = cpu or self.system.loaded_cpu
        if cpu is None or self.process is None:
            return
        try:
            self.context_tokens = cpu.count_tokens(self.process.memory.render(cpu))
        except Exception:
            log.exception("counting the context's tokens")

    def clear_screen(self) -> None:
        output = self.session.output
        output.erase_screen()
        output.cursor_goto(0, 0)
        output.flush()


def run_shell(state) -> int:
    """The entry point from the CLI (``llmos`` with no command): run the shell, return the exit code."""
    try:
        system = state.system
    except LlmosError as error:
        print(f"llmos: error: {error}", file=sys.stderr)
        return error.exit_code
    interactive = sys.stdin.isatty()
    if interactive and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # Started in the background by a non-interactive shell (`cmd &` ignores SIGINT), yet it has
        # a terminal: Ctrl-C must still interrupt, as in any interactive shell.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    shell = Shell(system, script=None if interactive else sys.stdin)
    try:
        return shell.run()
    finally:
        system.close()
