"""Every syscall runs under a watchdog: a time-out and the user's cancel, so no driver can hang llmos.

The call runs in a worker thread of its own while the caller's thread waits for
one of three things: the result, the time-out, or the cancel event (Ctrl-C sets
it). On a time-out or a cancel the driver is told to stop through its own
``ctx.cancel`` and the caller goes on at once: a driver that ignores it is
abandoned (a daemon thread left to finish; whatever it returns later is
dropped), never waited on. A time-out is an error result for the model; a
cancel stops the turn.

The time-out of a call: the one its driver declared (``register(fn, timeout=...)``),
else ``LLMOS_SYSCALL_TIMEOUT`` (:class:`~llmos_shell.config.Config`, 60 s by
default). Zero means none (the call can still be cancelled).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from typing import Any, Callable

from llmos_shell.errors import Cancelled, LlmosError

log = logging.getLogger("llmos.watchdog")

# How often the waiting thread looks at the cancel event: Ctrl-C is answered within this.
POLL = 0.05


class SyscallTimeout(LlmosError):
    """A syscall that did not return within its time-out (the model gets this as its result)."""


def seconds(value: float) -> str:
    """60 -> '60 s', 0.5 -> '0.5 s'."""
    return f"{value:g} s"


def timeout_for(syscall: Any, default: float | None) -> float | None:
    """The time-out of one syscall: its driver's, else the configured default (None or 0: none)."""
    chosen = syscall.timeout if getattr(syscall, "timeout", None) else default
    return chosen if chosen and chosen > 0 else None


def watch(function: Callable[[threading.Event], Any], *, name: str, timeout: float | None,
          cancel: threading.Event | None = None) -> Any:
    """Run ``function(stop)`` in a worker thread; return its result or raise its exception.

    ``stop`` is an event of the call's own, set when the call is given up (time-out,
    cancel, or the caller interrupted): hand it to the driver as ``ctx.cancel``.
    Raises :class:`SyscallTimeout` after ``timeout`` seconds (None: never) and
    :class:`~llmos_shell.errors.Cancelled` once ``cancel`` is set, without waiting
    for the worker.
    """
    stop = threading.Event()
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = function(stop)
        except BaseException as error:  # handed to the waiting thread (or dropped if it gave up)
            outcome["error"] = error
        finally:
            done.set()
            if stop.is_set():
                log.info("abandoned syscall %s finished late; its outcome is dropped", name)

    if cancel is not None and cancel.is_set():  # cancelled before it began: it never runs
        raise Cancelled("cancelled")
    # in the caller's context: the request whose changes to files the call makes (fs/versions.py)
    worker = threading.Thread(target=contextvars.copy_context().run, args=(target,), name=f"llmos-syscall-{name}",
                              daemon=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    worker.start()
    try:
        while not done.wait(POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                raise SyscallTimeout(f"{name} timed out after {seconds(timeout)}")
    except BaseException:  # time-out, cancel, or Ctrl-C in this thread: give the call up
        stop.set()
        log.warning("syscall %s given up (still running in thread %s)", name, worker.name)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def watched_call(hook: Callable[..., Any], call: Any, *, timeout: float | None) -> Any:
    """Run one :class:`~llmos_shell.hookspecs.SyscallCall` through ``hook`` (the plugins'
    ``call_syscall``) under :func:`watch`, cancelled by the call's ``ctx.cancel``.

    The driver gets the watchdog's own event as ``ctx.cancel`` (set on a cancel and on a
    time-out alike): the user's event stays untouched, so a time-out ends this call only,
    not the whole turn."""
    def run(stop: threading.Event) -> Any:
        return hook(call=dataclasses.replace(call, ctx=dataclasses.replace(call.ctx, cancel=stop)))

    return watch(run, name=call.syscall.name, timeout=timeout, cancel=call.ctx.cancel)
