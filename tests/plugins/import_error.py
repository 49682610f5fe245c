"""A plugin that fails to import: it needs a package that is not installed."""

import llmos_no_such_package_xyz  # noqa: F401

from llmos_shell import hookimpl


@hookimpl
def register_syscalls(register):  # never reached
    pass
