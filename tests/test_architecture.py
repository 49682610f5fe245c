"""The house plan, checked: which part of llmos may import which.

Imports are read from the source (ast), module level and inside functions alike;
only ``if TYPE_CHECKING:`` blocks are exempt (annotations, never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llmos_shell"
DRIVERS = ROOT / "plugins"

#: What a driver may import of llmos: the plugin API.
PUBLIC_API = {"llmos_shell", "llmos_shell.errors", "llmos_shell.hookspecs", "llmos_shell.toolkit",
              "llmos_shell.testing"}

#: part -> imports it must never make (a prefix matches the module and everything under it).
FORBIDDEN = {
    "llmos_shell.kernel": ("llmos_shell.shell", "llmos_shell.cli", "click", "prompt_toolkit"),
    "llmos_shell.cpu": ("llmos_shell.kernel", "llmos_shell.fs", "llmos_shell.shell", "llmos_shell.cli"),
    "llmos_shell.fs": ("llmos_shell.kernel", "llmos_shell.cpu", "llmos_shell.shell", "llmos_shell.cli"),
    "llmos_shell.hookspecs": ("llmos_shell.system", "llmos_shell.syscalls", "llmos_shell.kernel"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "plugins":
        parts[0] = "llmos_plugins"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from llmos_shell import testing` imports a module, not a name
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists())
    return found


def sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("path", sources(PACKAGE), ids=lambda p: module_name(p))
def test_each_part_imports_only_what_its_layer_allows(path):
    name = module_name(path)
    bad = sorted(imported for part, forbidden in FORBIDDEN.items() if under(name, part)
                 for imported in imports(path) if any(under(imported, f) for f in forbidden))
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("path", sources(DRIVERS), ids=lambda p: module_name(p))
def test_a_driver_imports_only_the_public_api(path):
    private = sorted(i for i in imports(path) if under(i, "llmos_shell") and i not in PUBLIC_API)
    assert not private, f"{module_name(path)} imports {private}: drivers use the plugin API only"


def test_no_module_reaches_into_another_parts_private_attributes():
    # `system._cpu` from the kernel or the shell was the old habit: parts talk through public names.
    offenders = []
    for path in sources(PACKAGE):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Attribute) and node.value.attr in ("system", "machine", "kernel")):
                offenders.append(f"{module_name(path)}:{node.lineno} {ast.unparse(node)}")
    assert not offenders


def test_no_import_cycles_between_modules():
    graph = {module_name(p): {i for i in imports(p) if under(i, "llmos_shell")} for p in sources(PACKAGE)}
    # A package's __init__ re-exporting its modules is not a cycle of the parts themselves.
    for name, edges in graph.items():
        graph[name] = {e for e in edges if e in graph and not under(name, e) and not under(e, name)}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return trail + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
        return None

    cycles = {" -> ".join(c) for name in graph if (c := cycle_from(name))}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_layout_matches_the_readme_map():
    readme = (ROOT / "README.md").read_text()
    for part in ("kernel", "cpu", "fs", "cli", "shell"):
        assert (PACKAGE / part / "__init__.py").exists()
        assert f"llmos_shell/{part}/" in readme, f"the README's layout section does not name llmos_shell/{part}/"


# --- commands written once -----------------------------------------------------------------------

BUILTINS_MODULE = PACKAGE / "builtins.py"
FRONT_ENDS = {"shell": PACKAGE / "shell", "cli": PACKAGE / "cli"}

#: the built-ins both front ends have: the shell's command and `llmos ...` of the same name (issue 27)
SHARED_BUILTINS = ("ls", "cat", "rm", "mkdir", "mv", "cp", "find", "grep", "ps", "kill", "log", "drivers",
                   "models", "call")

#: what an OS operation is called on: the filesystem, the system, the run queue (`shell.fs`, `_fs(state)`)
HANDLE = r"(^|\.)(fs|system|queue)$|^_fs\(.*\)$"


def operations(tree: ast.AST, names: set[str] | None = None) -> set[str]:
    """The OS operations ``tree`` uses: methods of a filesystem, system or run queue handle
    (``fs.ls``, ``state.system.call``), and the functions named in ``names`` (``driver_report``)."""
    import re

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and re.search(HANDLE, ast.unparse(node.value)):
            found.add(node.attr)
        elif isinstance(node, (ast.Name, ast.Attribute)) and names:
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in names:
                found.add(name)
    return found


def builtin_operations() -> tuple[set[str], set[str]]:
    """Every OS operation the built-ins do: the methods they use of their handles, and the
    functions they import from the rest of llmos (``driver_report``, ``list_models``)."""
    tree = ast.parse(BUILTINS_MODULE.read_text())
    functions = {alias.asname or alias.name for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmos_shell.")
                 and node.module not in ("llmos_shell.errors", "llmos_shell.fs.paths")
                 for alias in node.names}
    return operations(tree), functions


def test_the_shell_and_the_cli_do_not_both_do_a_builtins_work():
    # A built-in's work (the filesystem, run-queue and system operations it does) is written once,
    # in llmos_shell/builtins.py; the shell and the CLI parse, format and print. An operation both
    # front ends use is a command implemented twice.
    methods, functions = builtin_operations()
    ops = methods | functions
    assert {"ls", "rm", "processes", "syscalls", "kill_process", "call", "driver_report"} <= ops, ops
    used: dict[str, dict[str, list[str]]] = {end: {} for end in FRONT_ENDS}
    for end, folder in FRONT_ENDS.items():
        for path in sources(folder):
            for op in operations(ast.parse(path.read_text()), functions) & ops:
                used[end].setdefault(op, []).append(module_name(path))
    twice = {op: used["shell"][op] + used["cli"][op] for op in sorted(used["shell"].keys() & used["cli"].keys())}
    assert not twice, f"done by both the shell and the CLI instead of llmos_shell/builtins.py: {twice}"


def calls(function, follow=None) -> set[str]:
    """What ``function`` calls (``builtins.ls``, ``shell.call_syscall``), and what the methods of
    ``follow`` it calls on ``shell.`` call in turn (one level)."""
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    found = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    if follow is not None:
        for name in [f.split(".", 1)[1] for f in found if f.startswith("shell.")]:
            if callable(getattr(follow, name, None)):
                found |= calls(getattr(follow, name))
    return found


def click_command(name: str):
    from llmos_shell.cli.app import cli

    groups = [cli, cli.commands["fs"]]
    found = [group.commands[name] for group in groups if name in group.commands and name not in ("fs", "models")]
    return found[0] if found else cli.commands["models"].commands["list"]   # `llmos models list`


@pytest.mark.parametrize("name", SHARED_BUILTINS)
def test_each_builtin_is_one_function_both_front_ends_call(name):
    from llmos_shell import builtins
    from llmos_shell.shell.app import Shell
    from llmos_shell.shell.commands import COMMANDS

    assert callable(getattr(builtins, name, None)), f"llmos_shell/builtins.py has no {name}()"
    shell_calls = calls(COMMANDS[name].function, follow=Shell)
    cli_calls = calls(click_command(name).callback)
    assert f"builtins.{name}" in shell_calls, f"the shell's {name} does not call builtins.{name}: {shell_calls}"
    assert f"builtins.{name}" in cli_calls, f"`llmos {name}` does not call builtins.{name}: {cli_calls}"


# --- the kernel: one way in, its words and settings its own -----------------------------------

KERNEL = PACKAGE / "kernel"
#: The modules of the turn engine and its planners: the kernel's inside, reached through Kernel.
ENGINE = ("llmos_shell.kernel.engine", "llmos_shell.kernel.plan_model", "llmos_shell.kernel.plan_router")
#: The kernel's prompts, word lists and thresholds.
KERNEL_SETTINGS = ("llmos_shell.kernel.language", "llmos_shell.kernel.policy")
#: Constants of the kernel that other parts use on purpose, and why.
SHARED_CONSTANTS = {
    # the call format a scripted CPU for plugin tests must write (a format, not a setting)
    ("llmos_shell.testing", "llmos_shell.kernel.grammar", "CALL_OPEN"),
    ("llmos_shell.testing", "llmos_shell.kernel.grammar", "CALL_CLOSE"),
    # an MCP tool's result is cut to what the context keeps of any syscall's result
    ("llmos_shell.mcp.drivers", "llmos_shell.kernel.memory", "MAX_TOOL_CHARS"),
}


def starts_a_turn(node: ast.AST) -> bool:
    """A call of ``run`` on a kernel or an engine (``kernel.run(...)``, ``self.engine.run(...)``)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run"
            and any(word in ast.unparse(node.func.value).lower() for word in ("kernel", "engine")))


def test_only_the_run_queue_starts_a_turn():
    """The shell, `llmos run`, `llmos serve` and MCP `ask` submit to the run queue (scheduler.py), which
    alone calls Kernel.run: so every request is in `ps`, waits its turn for the CPU, and `kill` stops it."""
    allowed = {"llmos_shell.kernel.scheduler", "llmos_shell.kernel.loop"}   # the queue; the Kernel facade
    offenders = [f"{module_name(path)}:{node.lineno} {ast.unparse(node.func)}"
                 for path in sources(PACKAGE) if module_name(path) not in allowed
                 for node in ast.walk(ast.parse(path.read_text())) if starts_a_turn(node)]
    assert not offenders, offenders
    reaching_in = sorted(f"{module_name(path)} imports {name}" for path in sources(PACKAGE)
                         if not under(module_name(path), "llmos_shell.kernel")
                         for name in imports(path) if name in ENGINE)
    assert not reaching_in


def test_nothing_outside_the_kernel_imports_its_prompts_words_or_constants():
    offenders = []
    for path in sources(PACKAGE):
        name = module_name(path)
        if under(name, "llmos_shell.kernel"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and under(node.module, "llmos_shell.kernel")):
                continue
            if node.module in KERNEL_SETTINGS:
                offenders.append(f"{name} imports {node.module}")
            offenders += [f"{name} imports {node.module}.{alias.name}" for alias in node.names
                          if alias.name.isupper() and (name, node.module, alias.name) not in SHARED_CONSTANTS]
    assert not offenders, offenders


def test_no_kernel_class_is_over_250_lines():
    long = [f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for path in sources(KERNEL) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250]
    assert not long, long
