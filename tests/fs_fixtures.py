"""Fixtures and helpers shared by the filesystem tests (imported by tests/test_fs_*.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_shell.fs import Filesystem
from llmos_shell.fs import migrations


def database_before(path: Path, migration: str) -> sqlite3.Connection:
    """A new database at ``path`` with every migration before ``migration`` applied, as an older
    llmos left it: write its rows through the connection returned, then close it and open it."""
    import sqlite_utils

    conn = sqlite3.connect(path, isolation_level=None)
    migrations.helper().apply(sqlite_utils.Database(conn, execute_plugins=False), stop_before=migration)
    conn.execute(f"PRAGMA user_version = {migrations.known().index(migration)}")
    return conn


@pytest.fixture
def fs(tmp_path):
    """A fresh filesystem in a temporary directory, closed afterwards."""
    filesystem = Filesystem.open(tmp_path / "llmos.db")
    yield filesystem
    filesystem.close()


def run_llmos(home: Path, *args: str, input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m llmos_shell --home HOME ARGS...` as a user would; returns the completed process (bytes)."""
    env = {**os.environ, "LLMOS_HOME": str(home)}
    env.pop("LLMOS_TRACE", None)
    return subprocess.run([sys.executable, "-m", "llmos_shell", "--home", str(home), *args],
                          input=input, capture_output=True, timeout=60, env=env, cwd=cwd)
