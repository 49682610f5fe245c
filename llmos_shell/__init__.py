"""llmos: a local-first LLM operating system shell."""

__version__ = "0.1.0"

from llmos_shell.hookspecs import DriverStatus, hookimpl  # noqa: E402  (the plugin author's imports)

__all__ = ["DriverStatus", "hookimpl", "__version__"]
