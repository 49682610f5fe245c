"""`llmos call` and `llmos drivers`: one syscall by hand, and what each driver can do."""

from __future__ import annotations

import json
import logging
import sys

import click

from llmos_shell import builtins
from llmos_shell.cli.output import echo_lines
from llmos_shell.errors import LlmosError

#: the colours of driver_lines' kinds of text (a muted one is plain here)
COLOURS = {"ok": "green", "warning": "yellow", "error": "red"}


class ProgressBar:
    """A syscall's ``ctx.progress`` reports as a tqdm bar on stderr, drawn only at a terminal (as
    ``llmos models install`` draws its own); created at the first report, gone when the call ends."""

    FORMAT = "{desc} {bar} {percentage:3.0f}% [{elapsed}]"

    def __init__(self, name: str, stream=None) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.bar = None

    def __call__(self, done: float, total: float | None, message: str | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        from llmos_shell.format import printable

        if self.bar is None:
            self.bar = tqdm(total=total, file=self.stream, leave=False, dynamic_ncols=True,
                            bar_format=self.FORMAT if total else "{desc} [{elapsed}]")
        if total and total != self.bar.total:
            self.bar.total = total
        self.bar.n = done
        self.bar.set_description_str(f"{self.name}: {printable(message)}" if message else self.name, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.command("call")
@click.argument("syscall")
@click.argument("arguments", required=False, default="{}")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON even if it is text.")
@click.option("--approve", type=click.Choice(["ask", "auto", "never"]), default=None,
              help="For a syscall that cannot be undone: ask (the default at a terminal), auto, or never "
                   "(the default otherwise).")
@click.pass_obj
def call_command(state, syscall: str, arguments: str, as_json: bool, approve: str | None) -> None:
    """Run one SYSCALL with JSON ARGUMENTS, no model involved, and print its result.

    It goes through the kernel's gate: arguments checked, the approval policy applied to
    syscalls that cannot be undone, the call written to the audit log (`llmos log`).

    Example: llmos call write_file '{"path": "/notes/a.txt", "content": "hi"}'
    """
    args = builtins.json_arguments(arguments)

    if approve is None:
        approve = "ask" if sys.stdin.isatty() else "never"

    def confirm(entry, values) -> bool:
        return click.confirm(f"{entry.name} {json.dumps(values, ensure_ascii=False)} cannot be undone. Run it?",
                             default=False, err=True)

    bar = ProgressBar(syscall)
    try:
        result = builtins.call(state.system, syscall, args, approve=approve, confirm=confirm, progress=bar)
    except LlmosError:
        raise
    except Exception as error:  # the driver's failure, not llmos's: say so in one line
        logging.getLogger("llmos.call").exception("syscall %s failed", syscall)
        raise LlmosError(f"syscall {syscall} failed: {type(error).__name__}: {error}") from error
    finally:
        bar.close()
    if isinstance(result, str) and not as_json:
        click.echo(result)
    else:
        click.echo(json.dumps(result, ensure_ascii=False, indent=None if as_json else 2, default=str))


@click.command("drivers")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per driver.")
@click.pass_obj
def drivers_command(state, as_json: bool) -> None:
    """Every driver and its syscalls: ok (with its backend), unavailable (why) or broken (the error)."""
    rows = builtins.drivers(state.system)
    if as_json:
        echo_lines(rows)
        return
    for pieces in builtins.driver_lines(rows):
        click.echo("".join(click.style(text, fg=COLOURS[kind]) if kind in COLOURS else text
                           for text, kind in pieces))
