"""A plugin whose hook asks for an argument the hook does not have (pluggy refuses it)."""

from llmos_shell import hookimpl


def hello() -> str:
    """Say hello."""
    return "hello"


@hookimpl
def register_syscalls(register, table):
    register(hello)
