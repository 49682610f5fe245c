"""The filesystem: one SQLite database (sqlite-utils, WAL) for files, processes, messages and syscalls.

``Filesystem.open(path)`` opens or creates it; see :class:`Filesystem` for the
API and :mod:`llmos_shell.fs.paths` for how paths are normalised.
"""

from llmos_shell.fs.base import CorruptDatabase, DatabaseBusy
from llmos_shell.fs.paths import normalise
from llmos_shell.fs.records import TERMINAL_STATUSES
from llmos_shell.fs.store import Filesystem

__all__ = ["CorruptDatabase", "DatabaseBusy", "Filesystem", "TERMINAL_STATUSES", "normalise"]
