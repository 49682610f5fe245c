"""Fixtures and helpers shared by the filesystem tests (imported by tests/test_fs_*.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_shell.fs import Filesystem


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
