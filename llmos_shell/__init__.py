"""llmos: a local-first LLM operating system shell.

The names a driver plugin needs are importable from here: ``hookimpl``,
``DriverStatus``, ``SyscallContext``, ``Machine`` and the errors; the modules
``llmos_shell.toolkit`` (backend settings and status) and ``llmos_shell.testing``
(test helpers) complete the plugin API. The hooks themselves are documented in
:mod:`llmos_shell.hookspecs`.
"""

__version__ = "0.1.0"

from llmos_shell.errors import Cancelled, Denied, LlmosError, UsageError  # noqa: E402
from llmos_shell.hookspecs import DriverStatus, Machine, SyscallContext, hookimpl  # noqa: E402

__all__ = ["Cancelled", "Denied", "DriverStatus", "LlmosError", "Machine", "SyscallContext", "UsageError",
           "hookimpl", "__version__"]
