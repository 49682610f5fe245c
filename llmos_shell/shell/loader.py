"""Loading the model in the background, so the prompt appears at once.

The shell starts a :class:`ModelLoader` before its first prompt. File commands
work meanwhile; the first request to the model waits for the load with a
spinner (Ctrl-C stops waiting, not the load). A model that cannot load gives one
line and the shell stays usable. ``model NAME`` switches: the old CPU closes
and the new model loads in the background the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from llmos_shell.errors import LlmosError

log = logging.getLogger("llmos.shell")


class ModelLoader:
    """The state of the system's CPU as the shell sees it: loading, ready or failed."""

    def __init__(self, system, on_ready: Callable[[object], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.system = system
        self.on_ready = on_ready
        self.on_error = on_error
        self.error: str | None = None
        self.started = 0.0
        self.seconds = 0.0
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        cpu = self.system.loaded_cpu
        return getattr(cpu, "name", None) or self.system.config.model

    @property
    def state(self) -> str:
        if self.system.cpu_loaded:
            return "ready"
        if self._thread is not None and self._thread.is_alive():
            return "loading"
        return "failed" if self.error else "idle"

    def start(self) -> None:
        """Load the configured model in a background thread (no-op if it is loaded or loading)."""
        if self.system.cpu_loaded or (self._thread is not None and self._thread.is_alive()):
            return
        self.error = None
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._load, name="llmos-model-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            cpu = self.system.cpu
        except LlmosError as error:
            self.error = str(error)
        except Exception as error:  # a bug or a library failure: one line, the traceback to the log
            log.exception("loading the model failed")
            self.error = f"could not load the model: {type(error).__name__}: {error}"
        else:
            self.seconds = time.monotonic() - self.started
            log.info("model %s loaded in %.1f s", getattr(cpu, "name", "?"), self.seconds)
            if self.on_ready is not None:
                try:
                    self.on_ready(cpu)
                except Exception:
                    log.exception("after loading the model")
            return
        log.info("model not loaded: %s", self.error)
        if self.on_error is not None:
            self.on_error(self.error)

    def wait(self, tick: Callable[[], None] | None = None, timeout: float | None = None,
             start: bool = True) -> bool:
        """Wait for the load (starting it unless ``start`` is False; a failed one is tried again);
        ``tick`` is called about ten times a second (the spinner).

        Returns True once the model is ready, False if it failed. Ctrl-C (KeyboardInterrupt)
        propagates to the caller; the load itself goes on.
        """
        if start:
            self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread is not None and self._thread.is_alive():
            if tick is not None:
                tick()
            self._thread.join(0.1)
            if deadline is not None and time.monotonic() > deadline:
                break
        return self.system.cpu_loaded

    def switch(self, name: str) -> None:
        """Use model ``name`` from now on: close the current CPU and load the new one in the background."""
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()           # never close a CPU while it is being created
        old = self.system.unload_cpu(then_use=name)
        if old is not None and hasattr(old, "close"):
            try:
                old.close()
            except Exception:
                log.exception("closing the previous model")
        self.error = None
        self.start()
