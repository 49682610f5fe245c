"""The interactive shell (``llmos`` with no command): see :mod:`llmos_shell.shell.app`.

One file per part, as litecli/pgcli lay theirs out: ``app`` (the REPL loop),
``commands`` (the built-ins, a decorator registry), ``completer``, ``keys``,
``toolbar``, ``style``, ``console`` (output), ``loader`` (the model, loaded in
the background) and ``runner`` (requests in a worker thread, Ctrl-C).
"""

from llmos_shell.shell.app import Shell, run_shell

__all__ = ["Shell", "run_shell"]
