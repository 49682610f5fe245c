"""Running the model's work off the main thread, so that Ctrl-C always reaches the shell.

A request runs in a worker thread: the kernel's loop, the CPU and the drivers.
The main thread waits, draws a spinner until output starts, answers approval
questions (the worker hands them over: only the main thread reads the
terminal) and turns Ctrl-C into the cancel event, which the kernel checks
between tokens. The partial reply is kept in the context, marked interrupted.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Any, Callable

from llmos_shell.gate import Confirm
from llmos_shell.kernel.loop import Events
from llmos_shell.shell.console import progress_text

log = logging.getLogger("llmos.shell")

CANCEL_GRACE = 1.0   # seconds to wait for the worker after Ctrl-C before saying so


class Question:
    """The approval policy's question (gate.Confirm), handed from the worker to the main thread."""

    def __init__(self, syscall, arguments: dict[str, Any]) -> None:
        self.syscall = syscall
        self.arguments = arguments
        self.answer: Future = Future()


class ShellEvents(Events):
    """The kernel's events, shown on the console; approvals go to the main thread."""

    def __init__(self, console, approvals: "queue.Queue[Question]", cancel: threading.Event,
                 show_status: Callable[[str | None], None] = lambda status: None) -> None:
        self.console = console
        self.approvals = approvals
        self.cancel = cancel
        self.show_status = show_status   # what the spinner says instead of its label (a syscall's progress)

    def token(self, text: str) -> None:
        if not self.cancel.is_set():      # a token already on its way after Ctrl-C is not shown
            self.console.token(text)

    def syscall_started(self, name: str, arguments: dict[str, Any]) -> None:
        self.console.syscall_started(name, arguments)

    def syscall_finished(self, record) -> None:
        self.show_status(None)
        self.console.syscall_finished(record)

    def progress(self, name: str, done: float, total: float | None, message: str | None) -> None:
        self.show_status(progress_text(self.console.glyphs, name, done, total, message))

    def confirm(self, syscall, arguments: dict[str, Any]) -> bool:
        return ask_main_thread(self.approvals, self.cancel, syscall, arguments)

    def note(self, text: str) -> None:
        self.console.end_line()
        self.console.warning(text)


def ask_main_thread(approvals: "queue.Queue[Question]", cancel: threading.Event, syscall,
                    arguments: dict[str, Any]) -> bool:
    """From the worker: put the question to the main thread and wait for its answer (no if cancelled)."""
    question = Question(syscall, arguments)
    approvals.put(question)
    while not cancel.is_set():
        try:
            return bool(question.answer.result(timeout=0.1))
        except FutureTimeout:
            continue
    return False


class Worker:
    """One piece of work (a turn of the kernel, a syscall) in a thread, watched from the main thread."""

    def __init__(self, console, confirm: Confirm, label: str = "thinking",
                 cancel: threading.Event | None = None) -> None:
        self.console = console
        self.confirm = confirm
        self.label = label
        self.cancel = cancel or threading.Event()   # a job's own, when following one
        self.approvals: "queue.Queue[Question]" = queue.Queue()
        self.interrupted = False
        self.status: str | None = None   # a running syscall's progress, shown instead of the label

    def events(self) -> ShellEvents:
        return ShellEvents(self.console, self.approvals, self.cancel, show_status=self._set_status)

    def _set_status(self, status: str | None) -> None:
        self.status = status   # one reference, swapped whole: read by the main thread's spinner

    def run(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` in a thread; return its result or raise its exception.

        Ctrl-C sets :attr:`cancel` and keeps waiting for the function to stop (it
        is expected to within a token); :attr:`interrupted` tells the caller.
        """
        result: Future = Future()

        def target() -> None:
            try:
                result.set_result(function())
            except BaseException as error:  # handed to the main thread
                result.set_exception(error)

        thread = threading.Thread(target=target, name="llmos-shell-worker", daemon=True)
        thread.start()

        def ended(timeout: float) -> bool:
            thread.join(timeout)
            return not thread.is_alive()

        self._watch(ended)
        return result.result()

    def follow(self, job, queue) -> Any:
        """Watch a run-queue job (its cancel event this worker's) until it ends; return its result.
        Ctrl-C while it waits for the CPU takes it off the queue (interrupted) at once."""
        def waiting() -> str | None:
            ahead = queue.ahead_of(job)
            return f"waiting for the CPU ({ahead} ahead: `jobs`)" if ahead else None

        self._watch(job.ended_within, waiting, on_interrupt=lambda: queue.cancel(job))
        return job.wait()

    def _watch(self, ended: Callable[[float], bool], waiting: Callable[[], str | None] = lambda: None,
               on_interrupt: Callable[[], Any] = lambda: None) -> None:
        """On the main thread until ``ended(timeout)`` says the work is over: the spinner, approvals,
        Ctrl-C."""
        warned = False
        waited = 0.0
        while True:
            try:
                self._serve_approvals()
                if not self.interrupted:
                    self.console.spin(waiting() or self.status or self.label)
                if ended(0.1):
                    break
                if self.interrupted:
                    waited += 0.1
                    if waited > CANCEL_GRACE and not warned:
                        warned = True
                        self.console.muted("(stopping: waiting for the current step to end)")
            except KeyboardInterrupt:
                self._interrupt()
                on_interrupt()
        self.console.stop_spinner()
        self._drain()

    def _interrupt(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            self.cancel.set()
            self.console.stop_spinner()
            self.console.end_line()
        self._drain()

    def _waiting(self):
        """The questions the worker has put so far, taken off the queue one by one."""
        while True:
            try:
                yield self.approvals.get_nowait()
            except queue.Empty:
                return

    def _serve_approvals(self) -> None:
        for question in self._waiting():
            if self.cancel.is_set():
                question.answer.set_result(False)
                continue
            self.console.stop_spinner()
            try:
                answer = self.confirm(question.syscall, question.arguments)
            except KeyboardInterrupt:   # Ctrl-C at the question: no, and stop the turn
                question.answer.set_result(False)
                self._interrupt()
                continue
            except Exception:
                log.exception("approval prompt failed")
                answer = False
            question.answer.set_result(answer)

    def _drain(self) -> None:
        """Refuse every question still waiting (after Ctrl-C or at the end)."""
        for question in self._waiting():
            if not question.answer.done():
                question.answer.set_result(False)


class JobEvents(Events):
    """The events of a run-queue job, shown live while it is in the foreground and kept while it is not.

    A background job's tokens and syscall lines are kept; ``fg`` shows them and then streams the
    rest (:meth:`attach`). An irreversible syscall asks only in the foreground: in the background
    the question cannot reach the user, so the answer is no."""

    def __init__(self, shown: ShellEvents | None = None) -> None:
        self._lock = threading.Lock()
        self._shown = shown
        self.kept: list[tuple[str, Any]] = []     # (event, value) while in the background

    def attach(self, shown: ShellEvents) -> None:
        """Bring the job to the foreground: what it printed so far, then the rest as it comes."""
        with self._lock:
            for event, value in self.kept:
                getattr(shown, event)(*value)
            self.kept = []
            self._shown = shown

    @property
    def attached(self) -> bool:
        return self._shown is not None

    def text(self) -> str:
        """What the job printed while in the background: its reply, and any notes."""
        with self._lock:
            parts = [value[0] if event == "token" else f"\n({value[0]})\n"
                     for event, value in self.kept if event in ("token", "note")]
        return "".join(parts)

    def _emit(self, event: str, *value: Any) -> None:
        with self._lock:
            if self._shown is not None:
                getattr(self._shown, event)(*value)
            else:
                self.kept.append((event, value))

    def token(self, text: str) -> None:
        self._emit("token", text)

    def syscall_started(self, name: str, arguments: dict[str, Any]) -> None:
        self._emit("syscall_started", name, arguments)

    def syscall_finished(self, record) -> None:
        self._emit("syscall_finished", record)

    def progress(self, name: str, done: float, total: float | None, message: str | None) -> None:
        with self._lock:
            shown = self._shown
        if shown is not None:   # in the background only the latest would matter: none is kept
            shown.progress(name, done, total, message)

    def confirm(self, syscall, arguments: dict[str, Any]) -> bool:
        with self._lock:
            shown = self._shown
        if shown is None:
            self.kept.append(("note", (f"{syscall.name} needs your approval: run the request in the "
                                       "foreground to be asked",)))
            return False
        return shown.confirm(syscall, arguments)
