"""How the shell looks: the prompt-toolkit style, the prompt, and the glyphs of its output."""

from __future__ import annotations

import sys

from prompt_toolkit.styles import Style

STYLE = Style.from_dict({
    "prompt": "ansicyan bold",
    "continuation": "ansibrightblack",
    "bottom-toolbar": "noreverse bg:#303030 #d0d0d0",
    "bottom-toolbar.key": "bg:#303030 #8a8a8a",
    "bottom-toolbar.ok": "bg:#303030 ansigreen",
    "bottom-toolbar.busy": "bg:#303030 ansiyellow",
    "bottom-toolbar.bad": "bg:#303030 ansired",
    "confirm": "ansiyellow bold",
    "completion-menu.completion": "bg:#3a3a3a #e0e0e0",
    "completion-menu.completion.current": "bg:#5f87af #ffffff",
    "completion-menu.meta.completion": "bg:#303030 #a0a0a0",
    "completion-menu.meta.completion.current": "bg:#5f87af #ffffff",
})

#: Colours (click names) of the kinds of line the shell prints.
COLOURS = {
    "error": "red",
    "warning": "yellow",
    "syscall": "cyan",
    "ok": "green",
    "muted": "bright_black",
    "heading": "bright_white",
}


def prompt_text(cwd: str) -> list[tuple[str, str]]:
    """The prompt as formatted text: ``llmos /cwd> `` (one piece, so it reaches the terminal unbroken)."""
    return [("class:prompt", f"llmos {cwd}> ")]


def continuation(width: int, line_number: int, wrap_count: int) -> list[tuple[str, str]]:
    """What starts the second and later lines of a multi-line input."""
    return [("class:continuation", "... ".rjust(width))]


def _unicode_ok(stream=None) -> bool:
    encoding = (getattr(stream or sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return encoding in ("utf8", "utf16", "utf32")


class Glyphs:
    """Markers of syscall lines and the spinner: Unicode where the terminal takes it, ASCII otherwise."""

    def __init__(self, stream=None) -> None:
        if _unicode_ok(stream):
            self.call, self.ok, self.fail, self.denied = "⚙", "↳", "✗", "⊘"
            self.spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
            self.sep = "│"
            self.bar_done, self.bar_left = "█", "░"
        else:
            self.call, self.ok, self.fail, self.denied = "*", "->", "x", "!"
            self.spinner = "|/-\\"
            self.sep = "|"
            self.bar_done, self.bar_left = "#", "-"
