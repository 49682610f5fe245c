"""A working single-file plugin: one pure syscall, one that reads the filesystem, a status."""

from llmos_shell import DriverStatus, hookimpl


def shout(text: str) -> str:
    """Return the text in capitals.

    Args:
        text: What to shout.
    """
    return text.upper()


def line_count(path: str, ctx=None) -> int:
    """Count the lines of a text file in the filesystem.

    Args:
        path: Path of the file, like /notes/todo.txt.
    """
    return len(ctx.fs.read_text(path).splitlines())


@hookimpl
def register_syscalls(register):
    register(shout)
    register(line_count, capabilities=["reads_fs"])


@hookimpl
def driver_status(system):
    return DriverStatus("good", True, backend="python")
