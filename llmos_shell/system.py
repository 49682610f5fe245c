"""The machine: configuration, filesystem, drivers and CPU, wired together.

A :class:`System` is cheap to create: the filesystem opens on first use and the
model loads on first use of :attr:`System.cpu` (the shell loads it in the
background so the prompt appears at once).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from llmos_shell import watchdog
from llmos_shell.config import Config
from llmos_shell.hookspecs import DriverStatus, SyscallCall, hookimpl
from llmos_shell.plugins import DEFAULT_PLUGINS, PluginLoader, new_plugin_manager
from llmos_shell.syscalls import SyscallContext, SyscallTable

log = logging.getLogger("llmos.system")


class _KernelCore:
    """The kernel's own implementation of call_syscall: run the function."""

    @hookimpl
    def call_syscall(self, call: SyscallCall) -> Any:
        return call.syscall(call.arguments, call.ctx)


class System:
    """One running llmos: what every command, the shell and the kernel share."""

    def __init__(self, config: Config, *, cpu: Any = None, entry_points: bool = True,
                 plugins: tuple[str, ...] = DEFAULT_PLUGINS) -> None:
        self.config = config
        self.pm = new_plugin_manager()
        self.pm.register(_KernelCore(), name="kernel")
        self.table = SyscallTable()
        loader = PluginLoader(self.pm, self.table)
        loader.load_modules(plugins)
        if entry_points:
            loader.load_entry_points()
        loader.load_folder(config.plugins_dir)
        loader.register_syscalls()
        self.broken = loader.broken
        self.plugins = loader.loaded
        self._fs = None
        self._cpu = cpu
        self._cpu_lock = threading.Lock()
        self._started = False

    # --- parts, opened on first use ---------------------------------------------------

    @property
    def fs(self):
        if self._fs is None:
            from llmos_shell.fs import Filesystem

            self.config.ensure_home()
            self._fs = Filesystem.open(self.config.db_path)
            self._startup()
        return self._fs

    def _startup(self) -> None:
        if self._started:
            return
        self._started = True
        for impl in self.pm.hook.startup.get_hookimpls():
            try:
                impl.function(system=self)
            except Exception as error:
                log.exception("plugin %s failed at startup", impl.plugin_name)
                self.broken[impl.plugin_name] = f"{type(error).__name__}: {error}"

    @property
    def cpu(self):
        """The CPU, loading the configured model the first time (thread-safe)."""
        with self._cpu_lock:
            if self._cpu is None:
                from llmos_shell.models import load_cpu

                self._cpu = load_cpu(self.config)
            return self._cpu

    @property
    def cpu_loaded(self) -> bool:
        return self._cpu is not None

    def cpu_status(self) -> tuple[bool, str]:
        """Whether the CPU can run, checked without loading the model (for drivers' status)."""
        import importlib.util
        import os

        from llmos_shell import models
        from llmos_shell.errors import LlmosError

        if self.cpu_loaded:
            return True, f"cpu {getattr(self._cpu, 'name', '')}".strip()
        from llmos_shell.remote_cpu import remote_url

        if url := remote_url(self.config.model):  # checked when it connects
            return True, f"cpu at {url}"
        if importlib.util.find_spec("llama_cpp") is None:
            return False, "cpu: llama-cpp-python is not installed (pip install llama-cpp-python)"
        model = self.config.model
        if model.endswith(".gguf") or os.sep in model:
            return (True, f"cpu {os.path.basename(model)}") if os.path.isfile(model) else \
                (False, f"cpu: model file {model} does not exist")
        try:
            manifest = models.get_manifest(model)
            if not models.is_installed(self.config, manifest):
                models.part_files(manifest)  # installable from its packages at first use
        except LlmosError as error:
            return False, f"cpu: {error}"
        return True, f"cpu {model}"

    # --- syscalls ---------------------------------------------------------------------

    def call(self, name: str, arguments: dict[str, Any], *, pid: int | None = None,
             cancel: threading.Event | None = None) -> Any:
        """Run one syscall through the plugin wrappers (no approval, no model)."""
        syscall = self.table.get(name)
        ctx = SyscallContext(system=self, pid=pid, cancel=cancel or threading.Event())
        return self.dispatch(SyscallCall(syscall=syscall, arguments=arguments, ctx=ctx))

    def gated_call(self, name: str, arguments: Any, *, approve: str = "never", confirm=None,
                   pid: int | None = None, cancel: threading.Event | None = None) -> Any:
        """One syscall with no model, through the same gate as the kernel's: validated, the approval
        policy applied (``confirm(syscall, arguments) -> bool`` for ``ask``), run under its time-out,
        and written to the audit log whatever happens. Raises Denied when the policy refuses."""
        import time

        from llmos_shell.errors import Denied, LlmosError

        syscall = self.table.get(name)
        arguments = syscall.validate(arguments)
        started, clock = time.time(), time.perf_counter()

        def audit(status: str, **fields: Any) -> None:
            self.fs.record_syscall(pid, name, arguments, status, started=started,
                                   ms=1000 * (time.perf_counter() - clock), **fields)

        if syscall.irreversible and approve != "auto":
            if approve != "ask" or confirm is None or not confirm(syscall, arguments):
                audit("denied", error="denied by the approval policy")
                raise Denied(f"{name} was denied by the approval policy ({approve}); "
                             "it cannot be undone: --approve auto runs it")
        try:
            result = self.call(name, arguments, pid=pid, cancel=cancel)
        except Exception as error:
            audit("error", error=str(error) if isinstance(error, LlmosError) else f"{type(error).__name__}: {error}")
            raise
        audit("ok", result=result)
        return result

    def dispatch(self, call: SyscallCall) -> Any:
        """Run a call through the plugins' ``call_syscall`` under the watchdog: within its
        time-out (the driver's, else the configured one) or raise SyscallTimeout; stopped with
        Cancelled once ``call.ctx.cancel`` is set. A driver that does not stop is abandoned."""
        timeout = watchdog.timeout_for(call.syscall, self.config.syscall_timeout)
        return watchdog.watched_call(self.pm.hook.call_syscall, call, timeout=timeout)

    def driver_statuses(self) -> list[DriverStatus]:
        statuses: list[DriverStatus] = []
        for impl in self.pm.hook.driver_status.get_hookimpls():
            try:
                result = impl.function(system=self)
            except Exception as error:
                log.exception("plugin %s failed in driver_status", impl.plugin_name)
                result = DriverStatus(impl.plugin_name, False, detail=f"broken: {type(error).__name__}: {error}")
            if result is None:
                continue
            statuses.extend(result if isinstance(result, list) else [result])
        return statuses

    def close(self) -> None:
        if self._fs is not None:
            self._fs.close()
            self._fs = None
        if self._cpu is not None and hasattr(self._cpu, "close"):
            self._cpu.close()
            self._cpu = None
