"""How the CLI and the shell show sizes and times (one way for both)."""

from __future__ import annotations

import time


def when(seconds: float | None) -> str:
    """A Unix time as local date and time, "-" for none."""
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def human_size(size: float | None) -> str:
    """Bytes as 512B, 1.5K, 3.2M, 1.0G; "-" for none."""
    if size is None:
        return "-"
    for unit in ("B", "K", "M"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}G"
