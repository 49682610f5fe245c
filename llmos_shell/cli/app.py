"""The `llmos` command line. Thin: every command hands over to a module that does the work."""

from __future__ import annotations

import logging
import sys
from functools import cached_property

import click

from llmos_shell import __version__
from llmos_shell.config import Config, setup_logging
from llmos_shell.errors import LlmosError
from llmos_shell.format import printable

log = logging.getLogger("llmos.cli")


class CliState:
    """What every subcommand gets through ``@click.pass_obj``: settings, and the system on demand."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @cached_property
    def system(self):
        from llmos_shell.system import System

        return System(self.config)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="LLMOS_HOME", type=click.Path(file_okay=False),
              help="Data directory: llmos.db, installed models, history, log. [env LLMOS_HOME; default ~/.llmos]")
@click.option("--model", "-m", envvar="LLMOS_MODEL",
              help="Model manifest name (see `llmos models list`) or path to a .gguf file. [env LLMOS_MODEL]")
@click.option("--plugins-dir", envvar="LLMOS_PLUGINS_DIR", type=click.Path(file_okay=False),
              help="Folder of single-file .py driver plugins. [default $LLMOS_HOME/plugins]")
@click.version_option(__version__, prog_name="llmos")
@click.pass_context
def cli(ctx: click.Context, home: str | None, model: str | None, plugins_dir: str | None) -> None:
    """llmos: a local-first LLM operating system shell.

    A quantized model is the CPU, a SQLite database the disk, and pluggy
    drivers the devices the model calls through syscalls. With no command,
    opens the interactive shell.
    """
    config = Config.load(home=home, model=model, plugins_dir=plugins_dir)
    setup_logging(config)
    ctx.obj = CliState(config)
    ctx.call_on_close(lambda: ctx.obj.__dict__.get("system") and ctx.obj.system.close())
    if ctx.invoked_subcommand is None:
        from llmos_shell.shell import run_shell

        sys.exit(run_shell(ctx.obj))


def _add_commands() -> None:
    from llmos_shell.cli.commands import call_command, drivers_command
    from llmos_shell.cli.fs import fs_group, kill_command, log_command, ps_command
    from llmos_shell.cli.models import models_group
    from llmos_shell.cli.plugins import plugins_group
    from llmos_shell.cli.run import run_command
    from llmos_shell.cli.serve import serve_command
    from llmos_shell.mcp.cli import mcp_group

    for command in (models_group, call_command, drivers_command, fs_group, ps_command, kill_command, log_command,
                    run_command, plugins_group, mcp_group, serve_command):
        cli.add_command(command)


_add_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning errors into one line on stderr and an exit code."""
    try:
        cli.main(args=argv, prog_name="llmos", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("llmos: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except LlmosError as error:
        log.info("error: %s", error, exc_info=True)
        click.echo(f"llmos: error: {printable(str(error))}", err=True)   # one line, no terminal escapes
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("llmos: interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as error:  # a bug: one line for the user, the traceback for the log
        log.exception("unexpected error")
        click.echo(f"llmos: internal error: {type(error).__name__}: {error} (details in the log)", err=True)
        sys.exit(1)
    sys.exit(0)
