"""The run queue: one CPU, many processes. Requests wait their turn and run one at a time.

Every request of a program (the shell's foreground and ``&`` background requests,
a headless batch's tasks, ``llmos serve``'s clients) is a :class:`Job` on the
program's one :class:`RunQueue`. Its worker thread takes jobs first come, first
served and runs each through the kernel; the CPU moves between processes by
KV snapshot (snapshots.py), so a switch costs little.

``kill`` dequeues a waiting job, or sets a running one's cancel event, which the
CPU checks between tokens. A kill from another program (``llmos kill PID``, a
second shell on the same home) is a ``killed`` status written to the process
table: the queue polls its jobs' rows and stops them the same way.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from concurrent import futures
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, Callable

from llmos_shell.kernel.loop import Events, Kernel, TurnResult
from llmos_shell.kernel.process import Process

log = logging.getLogger("llmos.scheduler")

POLL_SECONDS = 0.05   # how often the process table is read for kills from another program
GRACE_SECONDS = 2.0   # how long a cancelled headless request may take to stop before it is given up

Finished = Callable[["Job"], None]


class Job:
    """One request of one process, from waiting in the queue to its result (its :attr:`future`)."""

    def __init__(self, number: int, kernel: Kernel, process: Process, text: str, events: Events | None,
                 cancel: threading.Event | None, options: dict[str, Any]) -> None:
        self.number = number          # [1], [2], ... in the order submitted
        self.kernel = kernel          # whose policy (approval, step limit) the request runs under
        self.process = process
        self.text = text
        self.events = events
        self.cancel = cancel or threading.Event()
        self.options = options        # seed, temperature, role: passed to Kernel.run
        self.state = "waiting"        # waiting, running, then the turn's status or killed
        self.killed = False
        self.submitted = time.perf_counter()
        self.started: float | None = None     # perf_counter times: how long it waited, how long it ran
        self.ended: float | None = None
        #: the turn's result, or the kernel's bug as its exception; set once, when the job ends
        self.future: Future = Future()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def done(self) -> bool:
        return self.future.done()

    @property
    def result(self) -> TurnResult | None:
        """The turn's result once the job has ended without a bug (else None)."""
        if not self.future.done() or self.future.exception() is not None:
            return None
        return self.future.result()

    @property
    def error(self) -> BaseException | None:
        """A bug in the kernel that ended the job (None until it ends, or if it ended well)."""
        return self.future.exception() if self.future.done() else None

    def ended_within(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the job to end; has it?"""
        return bool(futures.wait([self.future], timeout).done)

    def wait(self, timeout: float | None = None) -> TurnResult | None:
        """The turn's result once the job has ended (None if ``timeout`` passes first); a bug in the
        kernel is raised again here."""
        try:
            return self.future.result(timeout)
        except futures.TimeoutError:
            return None


class RunQueue:
    """The program's CPU time: jobs run one at a time, in the order submitted, on one worker thread."""

    def __init__(self, fs: Any, kernel: Kernel | None = None, *, on_finished: Finished | None = None) -> None:
        self.fs = fs                  # the process table: statuses, and kills from other programs
        self.kernel = kernel          # the default for submit()
        self.on_finished = on_finished
        self._numbers = itertools.count(1)
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._jobs: list[Job] = []          # the jobs not yet ended, oldest first
        self._changed = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="llmos-run-queue", daemon=True)
        self._watcher = threading.Thread(target=self._watch_kills, name="llmos-kill-watch", daemon=True)
        self._worker.start()
        self._watcher.start()

    # --- submitting and waiting -------------------------------------------------------------

    def submit(self, process: Process, text: str, *, events: Events | None = None,
               cancel: threading.Event | None = None, kernel: Kernel | None = None, **options: Any) -> Job:
        """Queue one request of ``process``, run by ``kernel`` (default: the queue's);
        ``options`` (seed, temperature, role) go to Kernel.run."""
        kernel = kernel or self.kernel
        if kernel is None:
            raise ValueError("submit() needs a kernel: this run queue has no default")
        job = Job(next(self._numbers), kernel, process, text, events, cancel, options)
        with self._changed:
            if self._closed:
                raise RuntimeError("the run queue is closed")
            process.status = "waiting"
            self.fs.set_process_status(process.pid, "waiting")
            self._waiting.append(job)
            self._jobs.append(job)
            self._changed.notify_all()
        return job

    def run(self, process: Process, text: str, *, grace: float = GRACE_SECONDS, **options: Any) -> TurnResult:
        """Queue a request and wait for it (headless tasks). Ctrl-C (or SIGTERM, made one by
        ``llmos run``) cancels it, as on the shell: a reply stops within a token. Work that cannot
        stop between tokens (a long prompt's prefill, a model loading) is given up after ``grace``
        seconds, or at a second Ctrl-C: the process is marked ``interrupted`` and the result says so,
        while the worker finishes in the background (see :meth:`close`)."""
        job = self.submit(process, text, **options)
        deadline = None
        while True:
            try:
                result = job.wait(0.1)
            except KeyboardInterrupt:
                if deadline is not None:   # a second one: give up now
                    deadline = time.monotonic()
                else:
                    job.cancel.set()
                    deadline = time.monotonic() + grace
                continue
            if result is None and job.done:
                result = job.wait(0)   # it ended just after the wait above gave up: its result is there
            if result is not None or job.done:
                return result if result is not None else TurnResult(status="error", error="no result")
            if deadline is not None and time.monotonic() >= deadline:
                log.info("process %s: gave up waiting for its cancelled work", job.pid)
                job.kernel.finish(job.process, "interrupted")
                return TurnResult(status="interrupted", error="interrupted")

    def ahead_of(self, job: Job) -> int:
        """How many jobs run before ``job`` does (the running one included)."""
        with self._changed:
            if job not in self._waiting:
                return 0
            return list(self._waiting).index(job) + (self._running is not None)

    # --- jobs -------------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        """The jobs waiting or running, oldest first (an ended job is its submitter's to keep)."""
        with self._changed:
            return list(self._jobs)

    def job_of(self, pid: int) -> Job | None:
        """The unfinished job of process ``pid`` (the running one first), if it has one here."""
        with self._changed:
            if self._running is not None and self._running.pid == pid:
                return self._running
            return next((job for job in self._waiting if job.pid == pid), None)

    def kill(self, pid: int) -> str | None:
        """Stop process ``pid``'s work here: "dequeued" (it had not started), "stopping" (it is
        running: it stops within a token), or None if this queue has no job of it."""
        with self._changed:
            queued = [job for job in self._waiting if job.pid == pid]
            for job in queued:
                self._waiting.remove(job)
            running = self._running if self._running is not None and self._running.pid == pid else None
        for job in queued:
            job.killed = True
            self._end(job, TurnResult(status="killed", error="killed"))
        if running is not None:
            running.killed = True
            running.cancel.set()
            return "stopping"
        return "dequeued" if queued else None

    def cancel(self, job: Job) -> None:
        """Stop one job as Ctrl-C does: off the queue if it is waiting (interrupted), else cancelled
        within a token."""
        with self._changed:
            waiting = job in self._waiting
            if waiting:
                self._waiting.remove(job)
        job.cancel.set()
        if waiting:
            job.kernel.finish(job.process, "interrupted")
            self._end(job, TurnResult(status="interrupted", error="interrupted"))

    def close(self, timeout: float = 10.0) -> bool:
        """Kill everything queued and running, and stop the worker; False if it is still busy after
        ``timeout`` seconds (work that cannot stop between tokens: the caller may exit without it)."""
        with self._changed:
            self._closed = True
            pids = {job.pid for job in self._waiting} | ({self._running.pid} if self._running else set())
            self._changed.notify_all()
        for pid in pids:
            self.kill(pid)
        self._worker.join(timeout)
        return not self._worker.is_alive()

    # --- the worker -------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                self._running = job
            try:
                self._run(job)
            finally:
                with self._changed:
                    self._running = None
                    self._changed.notify_all()

    def _run(self, job: Job) -> None:
        if self._killed_elsewhere([job]):
            job.killed = True
        if job.killed:
            self._end(job, TurnResult(status="killed", error="killed"))
            return
        job.state = "running"
        job.started = time.perf_counter()
        result, error = None, None
        try:
            result = job.kernel.run(job.process, job.text, cancel=job.cancel, events=job.events, **job.options)
        except BaseException as bug:  # the kernel recorded the process as failed; the waiter gets it
            log.debug("process %s: the kernel failed", job.pid, exc_info=True)   # (raised, logged) by wait()
            error = bug
        if job.killed:   # what it did before it stopped stays in the result
            result = replace(result, status="killed", error="killed") if result else TurnResult(status="killed")
            error = None
        self._end(job, result, error)

    def _end(self, job: Job, result: TurnResult | None, error: BaseException | None = None) -> None:
        if result is not None and result.status == "killed":
            job.process.status = "killed"
            try:
                self.fs.set_process_status(job.pid, "killed")
            except Exception:
                log.exception("recording process %s as killed", job.pid)
        job.state = result.status if result is not None else "error"
        job.ended = time.perf_counter()
        with self._changed:
            if job in self._jobs:
                self._jobs.remove(job)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
        if self.on_finished is not None:
            try:
                self.on_finished(job)
            except Exception:
                log.exception("after job %s", job.number)

    def _watch_kills(self) -> None:
        """Stop jobs whose process another program has marked killed (``llmos kill``)."""
        while True:
            with self._changed:
                if self._closed and self._running is None:
                    return
                jobs = ([self._running] if self._running is not None else []) + list(self._waiting)
            for pid in self._killed_elsewhere(jobs):
                self.kill(pid)
            time.sleep(POLL_SECONDS)

    def _killed_elsewhere(self, jobs: list[Job]) -> list[int]:
        if not jobs:
            return []
        try:
            statuses = self.fs.process_statuses({job.pid for job in jobs})
        except Exception:  # the database is busy or gone: the next poll tries again
            log.debug("polling for kills failed", exc_info=True)
            return []
        return [pid for pid, status in statuses.items() if status == "killed"]
