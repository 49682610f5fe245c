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

from llmos_shell.kernel.loop import Events

log = logging.getLogger("llmos.shell")

CANCEL_GRACE = 1.0   # seconds to wait for the worker after Ctrl-C before saying so


class Approval:
    """One question from the worker to the main thread: may this irreversible syscall run?"""

    def __init__(self, name: str, arguments: dict[str, Any]) -> None:
        self.name = name
        self.arguments = arguments
        self.answer: Future = Future()


class ShellEvents(Events):
    """The kernel's events, shown on the console; approvals go to the main thread."""

    def __init__(self, console, approvals: "queue.Queue[Approval]", cancel: threading.Event) -> None:
        self.console = console
        self.approvals = approvals
        self.cancel = cancel

    def token(self, text: str) -> None:
        if not self.cancel.is_set():      # a token already on its way after Ctrl-C is not shown
            self.console.token(text)

    def syscall_started(self, name: str, arguments: dict[str, Any]) -> None:
        self.console.syscall_started(name, arguments)

    def syscall_finished(self, record) -> None:
        self.console.syscall_finished(record)

    def approve(self, syscall, arguments: dict[str, Any]) -> bool:
        return ask_main_thread(self.approvals, self.cancel, syscall.name, arguments)


def ask_main_thread(approvals: "queue.Queue[Approval]", cancel: threading.Event, name: str,
                    arguments: dict[str, Any]) -> bool:
    """From the worker: put the question to the main thread and wait for its answer (no if cancelled)."""
    question = Approval(name, arguments)
    approvals.put(question)
    while not cancel.is_set():
        try:
            return bool(question.answer.result(timeout=0.1))
        except FutureTimeout:
            continue
    return False


class Worker:
    """One piece of work (a turn of the kernel, a syscall) in a thread, watched from the main thread."""

    def __init__(self, console, confirm: Callable[[str, dict[str, Any]], bool], label: str = "thinking") -> None:
        self.console = console
        self.confirm = confirm
        self.label = label
        self.cancel = threading.Event()
        self.approvals: "queue.Queue[Approval]" = queue.Queue()
        self.interrupted = False

    def events(self) -> ShellEvents:
        return ShellEvents(self.console, self.approvals, self.cancel)

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
        warned = False
        waited = 0.0
        while thread.is_alive():
            try:
                self._serve_approvals()
                if not self.interrupted:
                    self.console.spin(self.label)
                thread.join(0.1)
                if self.interrupted:
                    waited += 0.1
                    if waited > CANCEL_GRACE and not warned:
                        warned = True
                        self.console.muted("(stopping: waiting for the current step to end)")
            except KeyboardInterrupt:
                self._interrupt()
        self.console.stop_spinner()
        self._drain()
        return result.result()

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
                answer = self.confirm(question.name, question.arguments)
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
