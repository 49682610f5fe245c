"""The filesystem: one SQLite database holding the file tree and the kernel's records."""

from __future__ import annotations

from llmos_shell.fs.files import FilesMixin
from llmos_shell.fs.records import RecordsMixin


class Filesystem(FilesMixin, RecordsMixin):
    """The OS's disk: ``llmos.db``, opened with :meth:`Filesystem.open`.

    Files and directories (:mod:`llmos_shell.fs.files`), their earlier versions
    (:mod:`llmos_shell.fs.versions`), the host bridge
    (:mod:`llmos_shell.fs.host`), processes, messages, syscalls and snapshots
    (:mod:`llmos_shell.fs.records`), all in one WAL-mode database whose schema
    comes from :mod:`llmos_shell.fs.migrations`. Safe to share between threads
    (one lock around the connection) and between processes (SQLite's locks).

    Example::

        fs = Filesystem.open(config.db_path)
        fs.write("/notes/today.md", "# Today\\n")
        pid = fs.create_process("chat", model="qwen2.5-coder-0.5b-instruct")
        fs.add_message(pid, "user", "hello")
        fs.close()
    """
