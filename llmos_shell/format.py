"""How the CLI and the shell show sizes, times and untrusted text (one way for both)."""

from __future__ import annotations

import re
import time

# Characters a terminal acts on rather than shows: C0 and C1 controls (ESC starts escape sequences,
# BEL rings, U+0085 is a newline) and the bidirectional controls that reorder what is shown (U+202E).
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to print to a terminal: each control or bidi character escaped (``\\x1b``,
    ``\\u202e``); a host file name can hold anything."""
    def escape(match: re.Match) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return UNPRINTABLE.sub(escape, text)


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
