"""A plugin that loads fine but whose syscall raises when called, and whose status check raises."""

from llmos_shell import hookimpl


def boom(reason: str = "the device is on fire") -> str:
    """Always fail.

    Args:
        reason: The message of the error.
    """
    raise RuntimeError(reason)


@hookimpl
def register_syscalls(register):
    register(boom)


@hookimpl
def driver_status(system):
    raise OSError("status probe crashed")
