"""A tryfirst plain (non-wrapper) call_syscall: it would take every call from its driver. Refused at load."""

from llmos_shell import hookimpl

CALLED = []


@hookimpl(tryfirst=True)
def call_syscall(call):
    CALLED.append(call.syscall.name)
    return "replaced"
