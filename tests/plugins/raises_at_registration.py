"""A plugin that raises while registering its syscalls: none of its syscalls may be half-registered."""

from llmos_shell import hookimpl


def registered_first(text: str) -> str:
    """Echo the text (registered before the failure: must not stay in the table).

    Args:
        text: What to echo.
    """
    return text


@hookimpl
def register_syscalls(register):
    register(registered_first)
    raise RuntimeError("cannot find my configuration file")
