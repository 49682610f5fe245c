"""The errors llmos shows to users: one line each, with the exit code it means.

Anything else that escapes is a bug: the CLI logs its traceback and shows one line.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3


class LlmosError(Exception):
    """An error meant for the user. ``str(error)`` is the one line shown."""

    exit_code = EXIT_FAILED


class UsageError(LlmosError):
    """Bad command-line usage or a bad input file (task file, path, JSON)."""

    exit_code = EXIT_USAGE


class BadModelFile(UsageError):
    """A model file that is missing, truncated, foreign or fails its checksum."""


class ModelNotInstalled(UsageError):
    """A known model whose .gguf has not been assembled yet."""


class FsError(LlmosError):
    """A filesystem operation that cannot be done (no such file, not a directory...)."""


class Denied(LlmosError):
    """A syscall refused by the approval policy."""

    exit_code = EXIT_DENIED


class Cancelled(LlmosError):
    """Work stopped by the user (Ctrl-C) or by a cancel request."""
