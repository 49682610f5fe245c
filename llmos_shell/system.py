"""The machine: configuration, filesystem, drivers and CPU, wired together.

A :class:`System` is cheap to create: the filesystem opens on first use and the
model loads on first use of :attr:`System.cpu` (the shell loads it in the
background so the prompt appears at once).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from llmos_shell.config import Config
from llmos_shell.errors import UsageError
from llmos_shell.gate import Approval, Approve, Gate
from llmos_shell.hookspecs import DriverStatus, Machine
from llmos_shell.plugins import DEFAULT_PLUGINS, PluginLoader, new_plugin_manager
from llmos_shell.syscalls import SyscallTable

log = logging.getLogger("llmos.system")


class System:
    """One running llmos: what every command, the shell and the kernel share."""

    def __init__(self, config: Config, *, cpu: Any = None, entry_points: bool = True,
                 plugins: tuple[str, ...] = DEFAULT_PLUGINS) -> None:
        self.config = config
        self.pm = new_plugin_manager()
        self.table = SyscallTable()
        # What drivers and hooks get: the parts, not the System.
        self.machine = Machine(config=config, fs=lambda: self.fs, cpu=lambda: self.cpu,
                               cpu_status=self.cpu_status)
        self.gate = Gate(self.pm, self.table, self.machine)
        loader = PluginLoader(self.pm, self.table)
        loader.load_modules(plugins)
        if entry_points:
            loader.load_entry_points()
        loader.load_folder(config.plugins_dir)
        from llmos_shell.mcp.drivers import McpHub

        self.mcp = McpHub(config)   # the servers of $LLMOS_HOME/mcp.json, one driver each
        self.mcp.load(loader)
        loader.register_syscalls()
        self.broken = loader.broken
        self.plugins = loader.loaded
        self._fs = None
        self._cpu = cpu
        self._cpu_lock = threading.Lock()
        self._context_switch = None
        self._started = False

    # --- parts, opened on first use ---------------------------------------------------

    @property
    def fs(self):
        if self._fs is None:
            from llmos_shell.fs import Filesystem

            self.config.ensure_home()
            self._fs = Filesystem.open(self.config.db_path, versions_mb=self.config.versions_mb)
            self._startup()
        return self._fs

    def _startup(self) -> None:
        if self._started:
            return
        self._started = True
        for impl in self.pm.hook.startup.get_hookimpls():
            try:
                impl.function(system=self.machine)
            except Exception as error:
                log.exception("plugin %s failed at startup", impl.plugin_name)
                self.broken[impl.plugin_name] = f"{type(error).__name__}: {error}"

    @property
    def cpu(self):
        """The CPU, loading the configured model the first time (thread-safe)."""
        with self._cpu_lock:
            if self._cpu is None:
                from llmos_shell.cpu.models import load_cpu

                self._cpu = load_cpu(self.config)
            return self._cpu

    @property
    def context_switch(self):
        """Whose context the CPU holds, and the KV snapshots of the others (kernel/snapshots.py);
        None when LLMOS_SNAPSHOTS=0."""
        if self._context_switch is None and self.config.snapshots:
            from llmos_shell.kernel.snapshots import ContextSwitch, SnapshotStore

            megabyte = 1 << 20
            store = SnapshotStore(lambda: self.fs, self.config.snapshots_dir,
                                  ram_bytes=int(self.config.snapshot_ram_mb * megabyte),
                                  disk_bytes=int(self.config.snapshot_disk_mb * megabyte))
            try:
                store.sweep()
            except Exception:   # a clean-up: the next start tries again
                log.exception("sweeping snapshots left by ended programs")
            self._context_switch = ContextSwitch(store)
        return self._context_switch

    @property
    def cpu_loaded(self) -> bool:
        return self._cpu is not None

    @property
    def loaded_cpu(self):
        """The CPU if it has loaded, else None (never loads it)."""
        return self._cpu

    @property
    def fs_opened(self) -> bool:
        return self._fs is not None

    def unload_cpu(self, *, then_use: str | None = None):
        """Forget the loaded CPU (returned, for the caller to close) and, with ``then_use``, load that
        model on next use instead."""
        with self._cpu_lock:
            old, self._cpu = self._cpu, None
            if then_use is not None:
                self.config.model = then_use
        return old

    def cpu_status(self) -> tuple[bool, str]:
        """Whether the CPU can run, checked without loading the model (for drivers' status)."""
        import importlib.util
        import os

        from llmos_shell.cpu import models
        from llmos_shell.errors import LlmosError

        if self.cpu_loaded:
            return True, f"cpu {getattr(self._cpu, 'name', '')}".strip()
        from llmos_shell.cpu.remote import remote_url

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

    def call(self, name: str, arguments: Any, *, approve: Approve = "never", confirm=None,
             pid: int | None = None, cancel: threading.Event | None = None, by_user: bool = False,
             advice: str | None = None, progress=None) -> Any:
        """One syscall with no model, through the gate the kernel's calls take: validated, the
        approval policy applied (``confirm(syscall, arguments) -> bool`` under ``ask``), run under
        its time-out, and written to the audit log. Raises Denied when the policy refuses
        (``advice``: what its message tells the user to do instead of the CLI's --approve).

        ``by_user``: a person typed these arguments (``llmos call``, the shell's ``call``), so the path
        they give is where they asked to store; not so for another program's call (MCP).
        ``progress(done, total, message)`` receives the driver's progress reports (hookspecs)."""
        approval = Approval(approve, confirm=confirm, destination=(lambda path: True) if by_user else None)
        if advice is not None:
            approval.advice = advice
        return self.gate.call(name, arguments, approval=approval, pid=pid, cancel=cancel, progress=progress)

    def driver_statuses(self) -> list[DriverStatus]:
        statuses: list[DriverStatus] = []
        for impl in self.pm.hook.driver_status.get_hookimpls():
            try:
                result = impl.function(system=self.machine)
            except UsageError as error:  # a bad setting (LLMOS_OCR_BACKEND=gpt4v): unavailable until mended
                result = DriverStatus(impl.plugin_name, False, detail=str(error))
            except Exception as error:
                log.exception("plugin %s failed in driver_status", impl.plugin_name)
                result = DriverStatus(impl.plugin_name, False, detail=f"broken: {type(error).__name__}: {error}")
            if result is None:
                continue
            statuses.extend(result if isinstance(result, list) else [result])
        return statuses

    def close(self) -> None:
        self.mcp.close()
        if self._context_switch is not None:  # before the filesystem: it records the snapshots
            self._context_switch.close()
            self._context_switch = None
        if self._fs is not None:
            self._fs.close()
            self._fs = None
        if self._cpu is not None and hasattr(self._cpu, "close"):
            self._cpu.close()
            self._cpu = None
