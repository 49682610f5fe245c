"""Sharing the machine's cores with other programs, other llmos programs among them.

llama.cpp splits every matrix product across its threads and waits for the slowest at a barrier,
so one thread too many (a core that another program is using) makes every token wait for the
scheduler: the README measured ``llmos serve`` at 0.05-0.25x its peer with one busy core. Two
mechanisms keep llmos fast on a shared machine:

* :class:`ThreadCount` picks the threads for each piece of work from the cores that are free:
  the machine's busy time since the last piece (``/proc/stat``) minus this program's own
  (``os.times``), so nothing is measured twice and nothing sleeps to measure.
* :class:`MachineTurn` lets one llmos program at a time compute on this machine (an ``flock`` on
  a file in the temporary directory), meant to let several ``llmos run`` started together finish
  no later than the same runs one after another.

``LLMOS_THREADS=N`` fixes the thread count; ``LLMOS_SHARE=on`` turns the machine-wide turn on (off by
default: bench/share.py measured no gain yet, start-up work outside the model dominates).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

# Shorter than this since the last reading and the last choice stands: a few ms tell nothing.
MIN_INTERVAL_S = 0.25
# A first reading with no history: long enough to see a busy core, short beside a model load.
FIRST_SAMPLE_S = 0.1


def _busy_seconds(stat: str = "/proc/stat") -> tuple[float, float] | None:
    """(busy, total) CPU-seconds of the whole machine since boot, or None where /proc is absent."""
    try:
        with open(stat) as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    total = sum(fields[:8])                                     # guest time is already in user
    return (total - idle) / ticks, total / ticks


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


class ThreadCount:
    """How many threads llama.cpp should use now: the cores other programs leave free."""

    def __init__(self, cores: int | None = None, fixed: int | None = None) -> None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.cores = max(1, cores or usable or 1)
        self.fixed = fixed
        self.last = self.cores if fixed is None else fixed
        self._reading = self._read()

    def _read(self):
        machine = _busy_seconds()
        return None if machine is None else (time.monotonic(), machine[0], _own_seconds())

    def others_busy(self) -> float | None:
        """Cores' worth of work other programs did since the last reading (None: too soon or unknown)."""
        now = self._read()
        before = self._reading
        if now is None or before is None or now[0] - before[0] < MIN_INTERVAL_S:
            return None
        self._reading = now
        wall = now[0] - before[0]
        return max(0.0, ((now[1] - before[1]) - (now[2] - before[2])) / wall)

    def choose(self) -> int:
        if self.fixed is not None:
            return self.fixed
        busy = self.others_busy()
        if busy is not None:
            self.last = max(1, min(self.cores, round(self.cores - busy)))
        return self.last

    def prime(self) -> int:
        """A first choice with no history: watch the machine for a moment."""
        if self.fixed is None and self._reading is not None:
            time.sleep(FIRST_SAMPLE_S)
            self._reading = (self._reading[0] - MIN_INTERVAL_S, *self._reading[1:])
        return self.choose()


class MachineTurn:
    """One llmos program computes at a time on this machine: an exclusive ``flock``, held per piece
    of work (a generation, a prefill), so programs interleave between pieces."""

    def __init__(self, path: str | os.PathLike | None = None, enabled: bool | None = None) -> None:
        if enabled is None:
            enabled = os.environ.get("LLMOS_SHARE", "off").strip().lower() in ("1", "on", "yes", "true")
        self.enabled = enabled
        self.path = Path(path or Path(tempfile.gettempdir()) / f"llmos-cpu-{os.getuid()}.lock")
        self._local = threading.Lock()   # flock is per open file: one holder per program too
        self._handle = None

    @contextmanager
    def held(self):
        if not self.enabled:
            yield
            return
        with self._local:
            try:
                if self._handle is None:
                    self._handle = open(self.path, "a+")
                fcntl.flock(self._handle, fcntl.LOCK_EX)
            except OSError:   # an unwritable temp dir: compute anyway, as before
                yield
                return
            try:
                yield
            finally:
                fcntl.flock(self._handle, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
