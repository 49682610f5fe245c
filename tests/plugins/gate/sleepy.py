"""A syscall that sleeps: the gate tests call it through plugins that wrap (or try to replace) call_syscall."""

import time

from llmos_shell import hookimpl


def nap(seconds: float, ctx=None) -> str:
    """Sleep a while, stopping early when cancelled.

    Args:
        seconds: How long to sleep.
    """
    ctx.cancel.wait(seconds)
    return f"slept {seconds:g} s"


@hookimpl
def register_syscalls(register):
    register(nap)
