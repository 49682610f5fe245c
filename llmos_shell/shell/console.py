"""Everything the shell prints between prompts: lines, errors, the streamed reply, syscalls, a spinner.

One :class:`Console` per shell. It is shared by the main thread (commands,
spinner) and the worker thread that runs the kernel (tokens, syscalls), so
every write takes its lock. Colours go out only to a terminal.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

import click

from llmos_shell.format import printable
from llmos_shell.shell.style import COLOURS, Glyphs

SHORT_RESULT = 100   # characters of a syscall's result shown on its line


def short(value: Any, limit: int = SHORT_RESULT) -> str:
    """One line, at most ``limit`` characters, for a syscall's arguments or result."""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


BAR_WIDTH = 12   # cells of the progress bar drawn in the spinner's line


def progress_text(glyphs, name: str, done: float, total: float | None, message: str | None) -> str:
    """A syscall's progress as the spinner shows it: ``summarise ████░░░░ 50% · writing the summary``
    (no bar while the total is unknown)."""
    parts = [name]
    if total:
        share = min(max(done / total, 0.0), 1.0)
        cells = round(share * BAR_WIDTH)
        parts.append(f"{glyphs.bar_done * cells}{glyphs.bar_left * (BAR_WIDTH - cells)} {share:4.0%}")
    if message:
        parts.append(f"· {printable(message)}")   # a driver's words: no terminal controls
    return " ".join(parts)


class Console:
    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        self.out = stream or sys.stdout
        isatty = getattr(self.out, "isatty", lambda: False)()
        self.color = isatty if color is None else color
        self.animate = isatty
        self.glyphs = Glyphs(self.out)
        self.lock = threading.RLock()
        self._column = 0            # characters written since the last newline
        self._spinner: str | None = None
        self._frame = 0

    # --- plain output --------------------------------------------------------------------

    def _style(self, text: str, kind: str | None) -> str:
        if kind and self.color:
            return click.style(text, fg=COLOURS.get(kind, kind))
        return text

    def write(self, text: str, kind: str | None = None) -> None:
        if not text:
            return
        with self.lock:
            self._clear_spinner()
            try:
                self.out.write(self._style(text, kind))
            except UnicodeEncodeError:
                encoding = getattr(self.out, "encoding", None) or "ascii"
                self.out.write(self._style(text, kind).encode(encoding, "replace").decode(encoding))
            self.out.flush()
            last = text.rfind("\n")
            self._column = len(text) - last - 1 if last >= 0 else self._column + len(text)

    def line(self, text: str = "", kind: str | None = None) -> None:
        with self.lock:
            self.end_line()
            self.write(text + "\n", kind)

    def end_line(self) -> None:
        """Finish a line left open (a streamed reply) so the next output starts on its own."""
        with self.lock:
            if self._column:
                self.write("\n")

    def error(self, message: str) -> None:
        """One red line: what went wrong."""
        first = (str(message).strip().splitlines() or ["error"])[0]
        self.line(f"error: {first}", "error")

    def warning(self, message: str) -> None:
        self.line(message, "warning")

    def muted(self, message: str) -> None:
        self.line(message, "muted")

    def table(self, rows: list[list[str]], header: list[str] | None = None) -> None:
        """Columns padded to their widest cell; the last column is never padded."""
        if not rows and not header:
            return
        all_rows = ([header] if header else []) + rows
        widths = [max(len(str(r[i])) for r in all_rows if i < len(r)) for i in range(len(all_rows[0]))]
        for index, row in enumerate(all_rows):
            cells = [str(c).ljust(widths[i]) if i < len(row) - 1 else str(c) for i, c in enumerate(row)]
            self.line("  ".join(cells).rstrip(), "heading" if header and index == 0 else None)

    # --- the model at work ---------------------------------------------------------------

    def token(self, piece: str) -> None:
        with self.lock:
            if self._column == 0:       # a reply starts on a fresh line, without leading blanks
                piece = piece.lstrip("\n")
                if not piece.strip():
                    return
            self.write(piece)

    def syscall_started(self, name: str, arguments: dict[str, Any]) -> None:
        self.line(f"{self.glyphs.call} {name} {short(arguments)}", "syscall")

    def syscall_finished(self, record) -> None:
        ms = f"{record.ms:.0f} ms"
        if record.status == "ok":
            self.line(f"  {self.glyphs.ok} {short(record.result)}  ({ms})", "muted")
        elif record.status == "denied":
            self.line(f"  {self.glyphs.denied} denied: {record.error or 'by the approval policy'}", "warning")
        elif record.status == "declared":
            self.line(f"  {self.glyphs.ok} returned to the caller (declared function)", "muted")
        else:
            self.line(f"  {self.glyphs.fail} {short(record.error or 'failed')}  ({ms})", "error")

    # --- spinner -------------------------------------------------------------------------

    def spin(self, label: str) -> None:
        """Draw the next spinner frame (only on a terminal, only on an empty line)."""
        with self.lock:
            if not self.animate or (self._column and self._spinner is None):   # a pipe, or output under way
                return
            frame = self.glyphs.spinner[self._frame % len(self.glyphs.spinner)]
            self._frame += 1
            self.out.write(f"\r{self._style(frame + ' ' + label + '…', 'muted')}\x1b[K")
            self.out.flush()
            self._spinner = label
            self._column = 0

    def stop_spinner(self) -> None:
        with self.lock:
            self._clear_spinner()

    def _clear_spinner(self) -> None:
        if self._spinner is not None:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._spinner = None
