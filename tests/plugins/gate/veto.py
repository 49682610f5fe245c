"""A new-style call_syscall wrapper: notes the arguments it sees, vetoes a nap of 13 s, and naps
itself before a nap of 99 s (its own time counts against the call's time-out)."""

import time

from llmos_shell import hookimpl
from llmos_shell.errors import Denied

SEEN = []


@hookimpl(wrapper=True)
def call_syscall(call):
    SEEN.append(dict(call.arguments))
    if call.arguments.get("seconds") == 13:
        raise Denied("veto: no naps of 13 s")
    if call.arguments.get("seconds") == 99:
        time.sleep(3)
    return (yield)
