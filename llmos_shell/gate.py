"""The syscall gate: the one way a syscall runs, whoever asks for it.

:meth:`Gate.call` runs every call through the same steps, in this order, in its own
code (not by the order in which pluggy happens to call hook implementations, which
follows registration and ``tryfirst``/``trylast``, things a plugin controls):

1. the audit: the call's record is written whatever happens (ok, error, denied,
   cancelled), after everything below;
2. the checks: the arguments are validated against the schema (defaults filled in),
   then the :class:`Approval` policy is applied (raising :class:`~llmos_shell.errors.Denied`);
3. the watchdog: everything below runs within the call's time-out, stopped by a cancel;
4. the plugins' ``call_syscall`` wrappers (``@hookimpl(wrapper=True)``, or old-style
   ``hookwrapper=True``), in pluggy's order among themselves, to time or veto;
5. ``_Run``, the only plain implementation of the hook: the driver's function.

So a plugin's wrapper, ``tryfirst`` or not, sees validated arguments, and what it
raises is audited; it cannot run outside the time-out. A plugin whose
``call_syscall`` is not a wrapper would replace the driver's function: the loader
refuses it (:func:`refusal`) and ``llmos drivers`` lists it as broken with why.

The kernel, the shell's ``call`` and ``llmos call`` all use it, so a call made by
hand is validated, approved and audited exactly like one the model makes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

from llmos_shell import watchdog
from llmos_shell.errors import Cancelled, Denied, LlmosError
from llmos_shell.fs.paths import normalise
from llmos_shell.fs.versions import acting
from llmos_shell.hookspecs import Machine, SyscallCall, SyscallContext, hookimpl
from llmos_shell.syscalls import Syscall, SyscallTable

log = logging.getLogger("llmos.gate")

Approve = Literal["ask", "auto", "never"]
#: The user's answer to "may this call run?" (under ``ask``, or ``auto`` for values nobody said): the
#: shell asks at its prompt, ``llmos serve`` at its terminal; a kernel's caller gives it as Events.confirm.
Confirm = Callable[[Syscall, dict[str, Any]], bool]


@dataclass
class Approval:
    """Whether an irreversible syscall may run.

    ``never`` refuses it; ``ask`` asks ``confirm(syscall, arguments)``; ``auto`` runs
    it when ``said(arguments)`` (the values are the user's own words) and asks
    otherwise: text that came from a file or a transcript is data, not a command.
    Without ``said``, every call under ``auto`` counts as the user's own.
    """

    mode: Approve = "never"
    confirm: Confirm | None = None
    said: Callable[[dict[str, Any]], bool] | None = None
    #: Did the user name this path as where to store? Replacing it is then what they asked for, and
    #: no loss: its old version is kept (fs/versions.py). None: no path counts as named.
    destination: Callable[[str], bool] | None = None
    # what a denial under ``never`` tells the user to do (the face's own option)
    advice: str = "--approve ask or auto lets it run"

    def check(self, syscall: Syscall, arguments: dict[str, Any], *, stores: str | None = None,
              replaces: bool = False) -> None:
        """Return if the call may run; raise Denied with the reason if not.

        ``stores``: the path the call writes to (see :func:`stored_path`); ``replaces``: a file is
        there already. Replacing content counts as irreversible unless the user named that path as
        the destination; under ``auto`` a destination that only tool output named is asked about."""
        named = stores is not None and self.destination is not None and self.destination(stores)
        risky = syscall.irreversible or (replaces and not named)
        if (self.mode == "auto" and stores is not None and not named and self.said is not None
                and not self.said({"path": stores})):
            risky = True
        if not risky:
            return
        if self.mode == "auto" and (self.said is None or self.said(arguments)):
            return
        if self.mode != "never" and self.confirm is not None and self._confirmed(syscall, arguments):
            return
        reason = f"{syscall.name} was denied by the approval policy ({self.mode})"
        if self.mode == "auto":
            reason += ": its arguments come from tool output, not from the request"
        elif self.mode == "never":
            what = f"it would replace {stores}, which the request does not name as where to store" \
                if replaces and not syscall.irreversible else "it cannot be undone"
            reason += f": {what}; {self.advice}"
        raise Denied(reason)

    def _confirmed(self, syscall: Syscall, arguments: dict[str, Any]) -> bool:
        try:
            return bool(self.confirm(syscall, arguments))
        except Exception:  # a prompt that breaks is a no, never a yes
            log.exception("approval prompt failed")
            return False


def stored_path(syscall: Syscall, arguments: dict[str, Any], ctx: SyscallContext) -> tuple[str | None, bool]:
    """The path a call stores to and whether a file is there already: the ``path`` of a syscall that
    writes files (not one that deletes, nor an append). ``(None, False)`` for any other call."""
    path = arguments.get("path")
    if ("writes_fs" not in syscall.capabilities or syscall.irreversible or not isinstance(path, str)
            or arguments.get("append") is True):
        return None, False
    try:
        path = normalise(path)
        return path, ctx.fs.exists(path) and not ctx.fs.is_dir(path)
    except LlmosError:   # not a valid path (the driver says so), or a call with no filesystem
        return None, False


def one_line(error: BaseException) -> str:
    """An error as the audit log and the model read it."""
    return str(error) if isinstance(error, LlmosError) else f"{type(error).__name__}: {error}"


def refusal(pm, plugin_name: str) -> str | None:
    """Why plugin ``plugin_name`` may not load, for its ``call_syscall`` (None: it may).

    Only wrappers may implement ``call_syscall``: a plain implementation would take the
    call from the driver (the first non-None result wins)."""
    for impl in pm.hook.call_syscall.get_hookimpls():
        if impl.plugin_name == plugin_name and not (impl.wrapper or impl.hookwrapper):
            return ("its call_syscall is not a wrapper: mark it @hookimpl(wrapper=True) and yield to run the "
                    "call (a plain implementation would replace the driver's function)")
    return None


class Gate:
    """Audit → validate → approve → watchdog → plugin wrappers → the driver's function."""

    def __init__(self, pm, table: SyscallTable, machine: Machine) -> None:
        self.pm = pm
        self.table = table
        self.machine = machine
        pm.register(_Run(), name="llmos.run")

    def call(self, syscall: Syscall | str, arguments: Any, *, approval: Approval | None = None,
             pid: int | None = None, cancel: threading.Event | None = None,
             progress: Callable[[float, float | None, str | None], None] | None = None) -> Any:
        """Run one syscall (a table entry or its name); return its result or raise what it raised
        (Denied when the policy refuses, SyscallTimeout, Cancelled, the driver's error).
        ``progress(done, total, message)`` gets the driver's ``ctx.progress`` reports."""
        if isinstance(syscall, str):
            syscall = self.table.get(syscall)
        ctx = SyscallContext(machine=self.machine, pid=pid, cancel=cancel or threading.Event(),
                             on_progress=progress)
        with acting(pid):   # the files it changes are one request's (or the caller's request's) changes
            return self._call(syscall, arguments, ctx, approval or Approval())

    def _call(self, syscall: Syscall, arguments: Any, ctx: SyscallContext, approval: Approval) -> Any:
        call = SyscallCall(syscall=syscall, arguments=arguments, ctx=ctx, approval=approval)
        asked = call.arguments  # the audit records them as asked, before defaults are filled in
        started, clock = time.time(), time.perf_counter()
        status, result, error = "error", None, None
        try:
            call.arguments = syscall.validate(call.arguments)
            stores, replaces = stored_path(syscall, call.arguments, ctx)
            call.approval.check(syscall, call.arguments, stores=stores, replaces=replaces)
            timeout = watchdog.timeout_for(syscall, self.machine.config.syscall_timeout)
            result = watchdog.watched_call(self._hooks, call, timeout=timeout)
            status = "ok"
            return result
        except Denied as denied:
            status, error = "denied", str(denied)
            raise
        except (Cancelled, KeyboardInterrupt):
            status, error = "cancelled", "cancelled"
            raise
        except Exception as failure:
            error = one_line(failure)
            raise
        finally:
            self.machine.fs.record_syscall(ctx.pid, syscall.name, asked, status, result=result, error=error,
                                           started=started, ms=1000 * (time.perf_counter() - clock))

    def _hooks(self, call: SyscallCall) -> Any:
        """The plugins' wrappers around ``_Run`` (on the watchdog's thread)."""
        for impl in self.pm.hook.call_syscall.get_hookimpls():
            if not (impl.wrapper or impl.hookwrapper) and impl.plugin is not self._run:
                # registered around the loader (which refuses these): never let it take the call
                raise LlmosError(f"plugin {impl.plugin_name}: {refusal(self.pm, impl.plugin_name)}")
        return self.pm.hook.call_syscall(call=call)

    @property
    def _run(self) -> Any:
        return self.pm.get_plugin("llmos.run")


class _Run:
    """The end of the chain: the driver's function (the gate runs the whole chain under the watchdog)."""

    @hookimpl(trylast=True)
    def call_syscall(self, call: SyscallCall) -> Any:
        return call.syscall(call.arguments, call.ctx)
