"""The syscall gate: the one way a syscall runs, whoever asks for it.

:meth:`Gate.call` sends a call through the plugins' ``call_syscall`` hook, where
llmos's own implementations sit at both ends of the chain:

1. ``_Audit`` (the outermost wrapper) writes the audit record whatever happens:
   ok, error, denied or cancelled;
2. ``_Checks`` validates the arguments against the schema and applies the
   :class:`Approval` policy (raising :class:`~llmos_shell.errors.Denied`);
3. the plugins' wrappers (``@hookimpl(wrapper=True)``), to time or veto;
4. ``_Run`` runs the driver's function under the watchdog: within its time-out,
   stopped by a cancel.

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


@dataclass
class Approval:
    """Whether an irreversible syscall may run.

    ``never`` refuses it; ``ask`` asks ``confirm(syscall, arguments)``; ``auto`` runs
    it when ``said(arguments)`` (the values are the user's own words) and asks
    otherwise: text that came from a file or a transcript is data, not a command.
    Without ``said``, every call under ``auto`` counts as the user's own.
    """

    mode: Approve = "never"
    confirm: Callable[[Syscall, dict[str, Any]], bool] | None = None
    said: Callable[[dict[str, Any]], bool] | None = None
    #: Did the user name this path as where to store? Replacing it is then what they asked for, and
    #: no loss: its old version is kept (fs/versions.py). None: no path counts as named.
    destination: Callable[[str], bool] | None = None

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
            reason += f": {what}; --approve ask or auto lets it run"
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


class Gate:
    """Validate → approve → plugin wrappers → run under the watchdog, audited."""

    def __init__(self, pm, table: SyscallTable, machine: Machine) -> None:
        self.pm = pm
        self.table = table
        self.machine = machine
        # Hook order: pluggy calls wrappers marked tryfirst first, and of those the last
        # registered first; so _Audit is outside _Checks, and both are outside plugins' wrappers.
        pm.register(_Run(machine), name="llmos.run")
        pm.register(_Checks(), name="llmos.checks")
        pm.register(_Audit(machine), name="llmos.audit")

    def call(self, syscall: Syscall | str, arguments: Any, *, approval: Approval | None = None,
             pid: int | None = None, cancel: threading.Event | None = None) -> Any:
        """Run one syscall (a table entry or its name); return its result or raise what it raised
        (Denied when the policy refuses, SyscallTimeout, Cancelled, the driver's error)."""
        if isinstance(syscall, str):
            syscall = self.table.get(syscall)
        ctx = SyscallContext(machine=self.machine, pid=pid, cancel=cancel or threading.Event())
        with acting(pid):   # the files it changes are one request's (or the caller's request's) changes
            return self.pm.hook.call_syscall(call=SyscallCall(syscall=syscall, arguments=arguments, ctx=ctx,
                                                              approval=approval or Approval()))


class _Audit:
    """Every call, whatever its end, is one row of the syscall audit log."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    @hookimpl(wrapper=True, tryfirst=True)
    def call_syscall(self, call: SyscallCall):
        arguments = call.arguments  # as asked, before defaults are filled in
        started, clock = time.time(), time.perf_counter()
        status, result, error = "error", None, None
        try:
            result = yield
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
            self.machine.fs.record_syscall(call.ctx.pid, call.syscall.name, arguments, status, result=result,
                                           error=error, started=started,
                                           ms=1000 * (time.perf_counter() - clock))


class _Checks:
    """Arguments that fit the schema, and the approval policy, before any plugin sees the call."""

    @hookimpl(wrapper=True, tryfirst=True)
    def call_syscall(self, call: SyscallCall):
        call.arguments = call.syscall.validate(call.arguments)
        stores, replaces = stored_path(call.syscall, call.arguments, call.ctx)
        (call.approval or Approval()).check(call.syscall, call.arguments, stores=stores, replaces=replaces)
        return (yield)


class _Run:
    """The end of the chain: the driver's function, under its time-out."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    @hookimpl
    def call_syscall(self, call: SyscallCall) -> Any:
        timeout = watchdog.timeout_for(call.syscall, self.machine.config.syscall_timeout)
        return watchdog.watched_call(lambda call: call.syscall(call.arguments, call.ctx), call, timeout=timeout)
