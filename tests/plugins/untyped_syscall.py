"""A plugin whose syscall has a parameter without a type: no JSON schema can be made for it."""

from llmos_shell import hookimpl


def untyped(value) -> str:
    """Echo a value.

    Args:
        value: Anything.
    """
    return str(value)


@hookimpl
def register_syscalls(register):
    register(untyped)
