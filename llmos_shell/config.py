"""Where llmos keeps its data, and which model it uses.

Settings come from, in order: a command-line option, an environment variable,
the default. Nothing is created at import time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
TEST_MODEL = "smollm2-135m-instruct"
#: Seconds a syscall may take when neither its driver nor LLMOS_SYSCALL_TIMEOUT says otherwise.
DEFAULT_SYSCALL_TIMEOUT = 60.0

log = logging.getLogger("llmos")


@dataclass
class Config:
    """Resolved settings for one run of llmos."""

    home: Path
    model: str = DEFAULT_MODEL
    plugins_dir: Path | None = None
    # Upper bound on the context window, whatever the model was trained for:
    # a bigger window costs memory and prefill time on a 2-core machine.
    max_ctx: int = int(os.environ.get("LLMOS_MAX_CTX", "4096"))
    # Seconds a syscall may take unless its driver declares its own time-out; 0: no time-out.
    syscall_timeout: float = DEFAULT_SYSCALL_TIMEOUT
    # KV snapshots (kernel/snapshots.py): context switches and instant start. LLMOS_SNAPSHOTS=0 turns
    # them off; the budgets are what the snapshots may take in RAM and in $LLMOS_HOME/snapshots/.
    snapshots: bool = True
    snapshot_ram_mb: float = 256.0
    snapshot_disk_mb: float = 2048.0
    # CPU threads for the model (LLMOS_THREADS); default: every core.
    threads: int | None = None
    # Megabytes the old versions of files may take in llmos.db (LLMOS_VERSIONS_MB; 0 keeps none).
    versions_mb: float = 256.0

    @classmethod
    def load(cls, home: str | Path | None = None, model: str | None = None,
             plugins_dir: str | Path | None = None) -> "Config":
        home_path = Path(home or os.environ.get("LLMOS_HOME") or default_home()).expanduser()
        plugins = plugins_dir or os.environ.get("LLMOS_PLUGINS_DIR")
        return cls(
            home=home_path,
            model=model or os.environ.get("LLMOS_MODEL") or DEFAULT_MODEL,
            plugins_dir=Path(plugins).expanduser() if plugins else home_path / "plugins",
            syscall_timeout=_seconds("LLMOS_SYSCALL_TIMEOUT", DEFAULT_SYSCALL_TIMEOUT),
            snapshots=os.environ.get("LLMOS_SNAPSHOTS", "1").strip().lower() not in ("0", "off", "no", "false"),
            snapshot_ram_mb=_number("LLMOS_SNAPSHOT_RAM_MB", 256.0),
            snapshot_disk_mb=_number("LLMOS_SNAPSHOT_DISK_MB", 2048.0),
            threads=int(_number("LLMOS_THREADS", 0, whole=True)) or None,
            versions_mb=_number("LLMOS_VERSIONS_MB", 256.0),
        )

    @property
    def db_path(self) -> Path:
        return self.home / "llmos.db"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def log_path(self) -> Path:
        return self.home / "llmos.log"

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def history_path(self) -> Path:
        return self.home / "history"

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)


def _seconds(variable: str, default: float) -> float:
    """A number of seconds from the environment; a bad value is a one-line usage error."""
    return _number(variable, default, what="a number of seconds (0 turns the time-out off)")


def _number(variable: str, default: float, *, whole: bool = False, what: str = "") -> float:
    """A number (at least 0, finite) from the environment; a bad value is a one-line usage error."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf") or (whole and value != int(value)):
        from llmos_shell.errors import UsageError

        what = what or f"a {'whole ' if whole else ''}number of at least 0"
        raise UsageError(f"{variable}: {text!r} is not {what}")
    return value


def setup_logging(config: Config) -> None:
    """Send log records (tracebacks included) to $LLMOS_HOME/llmos.log, never to the terminal."""
    root = logging.getLogger("llmos")
    for old in [h for h in root.handlers if getattr(h, "_llmos", False)]:
        if getattr(old, "_llmos_path", None) == config.log_path:
            return
        root.removeHandler(old)  # another home in this program (tests, a switched --home): its log closes
        old.close()
    try:
        config.ensure_home()
        handler: logging.Handler = logging.FileHandler(config.log_path, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler._llmos = True  # type: ignore[attr-defined]
    handler._llmos_path = config.log_path  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if os.environ.get("LLMOS_DEBUG") else logging.INFO)
    root.propagate = False


def default_home() -> Path:
    """Where llmos keeps its data when neither --home nor LLMOS_HOME says."""
    return Path.home() / ".llmos"


def machine_cache(name: str) -> Path:
    """A cache shared by every home on this machine (``$XDG_CACHE_HOME/llmos/NAME``): what depends
    only on the installed code and the CPU, worked out once per machine, not once per home."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmos" / name


def write_cached(path: Path, text: str) -> bool:
    """Write a cache file whole, then rename it into place: a crash or another program writing
    the same record leaves no half file. False when it cannot be written (the work is redone)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        os.replace(partial, path)
        return True
    except OSError:
        return False
