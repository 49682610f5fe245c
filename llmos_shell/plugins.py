"""Loading driver plugins: bundled ones, entry points, and a folder of .py files.

Each plugin loads on its own: one that fails to import, has a hook with a wrong
signature, or raises while registering its syscalls is recorded as broken with
its error, and the others load as usual.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from llmos_shell import hookspecs
from llmos_shell.syscalls import SyscallTable, make_syscall

log = logging.getLogger("llmos.plugins")

#: The bundled drivers, loaded by module name exactly like third-party plugins.
DEFAULT_PLUGINS = (
    "llmos_plugins.files",
    "llmos_plugins.translate",
    "llmos_plugins.summarise",
    "llmos_plugins.vision",
    "llmos_plugins.speech",
    "llmos_plugins.system",
    "llmos_plugins.memory",
)

ENTRY_POINT_GROUP = "llmos_shell"


def _short(error: BaseException) -> str:
    """One line: pluggy puts the useful part of a validation error on its third line."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}".rstrip(": ")


class PluginLoader:
    """Builds a plugin manager and a syscall table, one plugin at a time."""

    def __init__(self, pm: pluggy.PluginManager, table: SyscallTable) -> None:
        self.pm = pm
        self.table = table
        self.broken: dict[str, str] = {}   # plugin name -> one-line error
        self.loaded: dict[str, Any] = {}   # plugin name -> module

    def _register(self, name: str, load: Callable[[], Any]) -> None:
        if name in self.loaded or self.pm.get_plugin(name) is not None:
            return
        try:
            module = load()
            self.pm.register(module, name=name)
        except Exception as error:  # import errors, bad hook signatures (PluginValidationError)
            log.exception("plugin %s failed to load", name)
            self.broken[name] = _short(error)
            return
        from llmos_shell.gate import refusal

        reason = refusal(self.pm, name)   # a hook that would get around the syscall gate
        if reason is not None:
            log.error("plugin %s refused: %s", name, reason)
            self.pm.unregister(name=name)
            self.broken[name] = reason
            return
        self.loaded[name] = module

    def load_modules(self, names: Iterable[str]) -> None:
        for name in names:
            self._register(name.rsplit(".", 1)[-1], lambda name=name: importlib.import_module(name))

    def load_plugin(self, name: str, plugin: Any) -> None:
        """A plugin object made at run time (an MCP server's driver), loaded like the others."""
        self._register(name, lambda: plugin)

    def load_entry_points(self) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            self._register(entry_point.name, entry_point.load)

    def load_folder(self, folder: Path | None) -> None:
        if folder is None or not folder.is_dir():
            return
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            self._register(path.stem, lambda path=path: _import_file(path))

    def register_syscalls(self) -> None:
        """Call each plugin's register_syscalls on its own; a failure drops only that plugin."""
        for impl in self.pm.hook.register_syscalls.get_hookimpls():
            name = impl.plugin_name
            pending = []

            def register(function, name=None, capabilities=(), *, _driver=name, _pending=pending, **about):
                # about: examples, output, timeout, reads, input (see hookspecs.register_syscalls)
                _pending.append(make_syscall(function, name=name, capabilities=capabilities, driver=_driver,
                                             **about))

            try:
                impl.function(register=register)
                for syscall in pending:
                    if syscall.name in self.table and self.table.get(syscall.name).driver != name:
                        raise ValueError(f"syscall {syscall.name!r} is already registered by "
                                         f"{self.table.get(syscall.name).driver}")
                for syscall in pending:
                    self.table.add(syscall)
            except Exception as error:
                log.exception("plugin %s failed to register its syscalls", name)
                self.broken[name] = _short(error)
                self.pm.unregister(name=name)
                self.loaded.pop(name, None)


def _import_file(path: Path) -> Any:
    module_name = f"llmos_user_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("LLMOS_TRACE"):
        pm.trace.root.setwriter(lambda text: sys.stderr.write(text))
        pm.enable_tracing()
    return pm
