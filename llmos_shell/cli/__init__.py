"""Every ``llmos`` command (click): ``app`` (the group, global options, errors to one line),
``commands`` (``call``, ``drivers``), ``run`` (task files), ``fs`` (``fs``, ``ps``, ``log``),
``models`` and ``plugins`` (scaffolding a driver). ``llmos_shell.cli:main`` is the entry point.
"""

from llmos_shell.cli.app import main

__all__ = ["main"]
