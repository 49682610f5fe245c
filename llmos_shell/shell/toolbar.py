"""The bottom toolbar: model and its state, context tokens used / budget, cwd, pid, background jobs
still running (when there are any), approval policy.

It is redrawn about once a second while the prompt waits (so "loading" turns
into "ready" by itself), so it only reads values the shell keeps at hand: the
token count is cached after each turn, never computed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from llmos_shell.shell.app import Shell

STATE_STYLE = {"ready": "ok", "loading": "busy", "idle": "busy", "failed": "bad"}


def toolbar(shell: "Shell") -> list[tuple[str, str]]:
    loader = shell.loader
    state = loader.state
    sep = ("class:bottom-toolbar.key", f" {shell.console.glyphs.sep} ")
    cpu = shell.system.loaded_cpu
    budget = getattr(cpu, "n_ctx", None)
    used = shell.context_tokens
    if used is None:
        context = "-"
    else:
        context = f"{used}/{budget}" if budget else str(used)
    state_text = "unavailable" if state == "failed" else state
    running = sum(not job.done for job, _events in list(shell.background.values()))
    jobs = [("class:bottom-toolbar.key", "jobs "), ("class:bottom-toolbar", str(running)), sep] if running else []
    return [
        ("class:bottom-toolbar.key", " model "),
        ("class:bottom-toolbar", loader.name),
        ("", " "),
        (f"class:bottom-toolbar.{STATE_STYLE.get(state, 'busy')}", state_text),
        sep,
        ("class:bottom-toolbar.key", "ctx "),
        ("class:bottom-toolbar", context),
        sep,
        ("class:bottom-toolbar.key", "cwd "),
        ("class:bottom-toolbar", shell.cwd),
        sep,
        ("class:bottom-toolbar.key", "pid "),
        ("class:bottom-toolbar", str(shell.process.pid) if shell.process else "-"),
        sep,
        *jobs,
        ("class:bottom-toolbar.key", "approve "),
        ("class:bottom-toolbar", shell.kernel.approve),
        ("class:bottom-toolbar", " "),
    ]
