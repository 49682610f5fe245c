"""`llmos plugins new NAME`: start a driver plugin that works and has a passing test.

Two shapes:

* a package (the default): ``llmos-NAME/`` with a ``pyproject.toml`` that
  declares the entry point in the ``llmos_shell`` group, the module
  ``llmos_NAME/__init__.py`` with one syscall, a README and a test.
  ``pip install -e llmos-NAME`` and ``llmos drivers`` lists it.
* a single file (``--single-file``): ``NAME.py`` in the plugins folder
  (``$LLMOS_HOME/plugins`` or ``--plugins-dir``), loaded on the next start.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from llmos_shell.errors import UsageError

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")

# The driver both shapes start from: one syscall that works, registered the way the kernel's router and
# approval policy need (examples, output, capabilities), and a status.
DRIVER = '''
from __future__ import annotations

from llmos_shell import DriverStatus, UsageError, hookimpl


def {ident}_count_words(text: str | None = None, path: str | None = None, ctx=None) -> dict:
    """Count the words and lines of a text, or of a text file in the filesystem.

    Args:
        text: The text to count (leave out when giving path).
        path: Path of a text file in the filesystem instead, like /notes/todo.txt.
    """
    if (text is None) == (path is None):
        raise UsageError("{ident}_count_words: give either text or path")
    if path is not None:
        text = ctx.fs.read_text(path)  # ctx also has .cpu (the model), .pid, .cancel, .config
    words = len(text.split())
    return {{"words": words, "lines": len(text.splitlines()), "summary": f"{{words}} words"}}


@hookimpl
def register_syscalls(register):
    register(
        {ident}_count_words,
        # what the syscall does, for the approval policy: reads_fs, writes_fs, irreversible, uses_cpu, ...
        capabilities=["reads_fs"],
        # requests as a user types them: the kernel's router chooses this syscall from them
        examples=["How many words are in /notes/essay.txt?", "Count the words of 'to be or not to be'"],
        reads=["text/*"],     # the kinds of file its path takes
        input="text",         # where a previous step's output goes ("read the sign and count its words")
        output="summary",     # the field of the result the user sees as the reply
    )


@hookimpl
def driver_status(system):
    # check cheaply whether the backends this driver needs are installed
    return DriverStatus("{name}", True, backend="python")
'''

MODULE = '''"""{name}: a driver plugin for llmos.

Every hook this module can implement is documented in llmos_shell/hookspecs.py.
Try it without a model:

    llmos call {ident}_count_words '{{"text": "one two three"}}'
"""
''' + DRIVER

TEST = '''"""Tests of the {name} driver, against a real llmos system in a temporary home."""

import tomllib
from pathlib import Path

from llmos_shell.testing import make_system


def test_count_words_of_text(tmp_path):
    system = make_system(tmp_path, plugins=["llmos_{ident}"], strict=True)
    assert system.call("{ident}_count_words", {{"text": "one two three"}})["words"] == 3


def test_count_words_of_a_file(tmp_path):
    system = make_system(tmp_path, plugins=["llmos_{ident}"], strict=True)
    system.fs.write("/notes/todo.txt", "buy milk\\ncall mum\\n")
    assert system.call("{ident}_count_words", {{"path": "/notes/todo.txt"}}) == {{"words": 4, "lines": 2,
                                                                          "summary": "4 words"}}
    system.close()


def test_reports_its_status(tmp_path):
    system = make_system(tmp_path, plugins=["llmos_{ident}"], strict=True)
    assert [(s.name, s.ok) for s in system.driver_statuses()] == [("{name}", True)]


def test_declares_its_entry_point():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["llmos_shell"] == {{"{name}": "llmos_{ident}"}}
'''

PYPROJECT = '''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "llmos-{name}"
version = "0.1.0"
description = "{name}: a driver plugin for llmos"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["llmos-shell"]

[project.optional-dependencies]
test = ["pytest>=8"]

# llmos loads every entry point of this group as a driver plugin
[project.entry-points.llmos_shell]
{name} = "llmos_{ident}"

[tool.setuptools]
packages = ["llmos_{ident}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''# llmos-{name}

A driver plugin for [llmos](https://pypi.org/project/llmos-shell/).

    pip install -e .           # llmos finds it through its entry point
    llmos drivers              # {name} is listed with its syscalls
    llmos call {ident}_count_words '{{"text": "one two three"}}'
    pytest                     # the tests run against a real llmos in a temporary home

The whole plugin API is documented in `llmos_shell/hookspecs.py`.
'''

SINGLE_FILE = '''"""{name}: a single-file driver plugin for llmos (loaded from the plugins folder).

The whole plugin API is documented in llmos_shell/hookspecs.py. Try it:

    llmos call {ident}_count_words '{{"text": "one two three"}}'
"""
''' + DRIVER


def _check_name(name: str) -> str:
    if not NAME_RE.match(name) or len(name) > 40:
        raise UsageError(f"plugin name {name!r}: use lowercase letters, digits, '-' or '_', starting with a letter")
    return name.replace("-", "_")


def new_package(name: str, directory: Path) -> Path:
    """Write the package ``llmos-NAME`` into ``directory``; return its folder."""
    ident = _check_name(name)
    root = directory / f"llmos-{name}"
    if root.exists():
        raise UsageError(f"{root} already exists")
    values = {"name": name, "ident": ident}
    files = {
        root / "pyproject.toml": PYPROJECT,
        root / "README.md": README,
        root / f"llmos_{ident}" / "__init__.py": MODULE,
        root / "tests" / f"test_{ident}.py": TEST,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return root


def new_single_file(name: str, directory: Path) -> Path:
    """Write ``NAME.py`` into the plugins folder ``directory``; return its path."""
    ident = _check_name(name)
    path = directory / f"{ident}.py"
    if path.exists():
        raise UsageError(f"{path} already exists")
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(SINGLE_FILE.format(name=name, ident=ident), encoding="utf-8")
    return path


@click.group("plugins")
def plugins_group() -> None:
    """Write your own drivers (see llmos_shell/hookspecs.py for the API)."""


@plugins_group.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to create it. [default: the current directory; with --single-file, the plugins folder]")
@click.option("--single-file", is_flag=True, help="One .py file for the plugins folder instead of a package.")
@click.pass_obj
def new_command(state, name: str, directory: Path | None, single_file: bool) -> None:
    """Create a driver plugin NAME that works: one syscall and a passing test."""
    if single_file:
        folder = directory or (state.config.plugins_dir if state is not None else None)
        if folder is None:
            raise UsageError("no plugins folder: give --dir")
        path = new_single_file(name, Path(folder))
        click.echo(f"created {path}")
        click.echo(f"try: llmos call {name.replace('-', '_')}_count_words '{{\"text\": \"one two three\"}}'")
        return
    root = new_package(name, directory or Path.cwd())
    click.echo(f"created {root}")
    click.echo(f"next: pip install -e {root} && llmos drivers && (cd {root} && pytest)")
