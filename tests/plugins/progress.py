"""A single-file plugin whose syscall reports its progress (``ctx.progress``) as it counts."""

from llmos_shell import hookimpl


def count_up(to: int, ctx=None) -> int:
    """Count from 1 up to a number, reporting each step.

    Args:
        to: The number to count to.
    """
    for number in range(1, to + 1):
        ctx.progress(number - 1, to, f"counting {number} of {to}")
    ctx.progress(to, to, "done")
    return to


@hookimpl
def register_syscalls(register):
    register(count_up, examples=["Count up to 3"])
