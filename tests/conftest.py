"""Shared fixtures. Tests never read the user's settings, and never load installed third-party plugins.

Models are assembled once into a shared models directory ($LLMOS_MODELS_DIR, by default the
`models/` folder of the default home, where `make test` installs them) and reused by every test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_shell.config import DEFAULT_MODEL, TEST_MODEL, Config

for variable in ("LLMOS_HOME", "LLMOS_MODEL", "LLMOS_PLUGINS_DIR", "LLMOS_TRACE", "LLMOS_CPU_URL", "LLMOS_TOKEN"):
    os.environ.pop(variable, None)
os.environ.setdefault("LLMOS_MODELS_DIR", str(Config.load().models_dir))

REPO = Path(__file__).resolve().parents[1]


def _installed(name: str) -> Path:
    from llmos_shell.cpu import models

    config = Config.load(home=os.environ["LLMOS_MODELS_DIR"])
    return models.install(config, models.get_manifest(name))


@pytest.fixture(scope="session")
def small_model_path() -> Path:
    """The .gguf of the small test model (assembled from its package on first use)."""
    return _installed(TEST_MODEL)


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    return _installed(DEFAULT_MODEL)


def raw_llama(model_path, **settings):
    """A bare ``llama_cpp.Llama`` for tests of llama-cpp-python itself, loaded as llmos loads models
    on this CPU: without extra weight buffers where they crash (AMX, see ``cpu/hardware.py``)."""
    import llama_cpp

    from llmos_shell.cpu import hardware

    with hardware.model_params(hardware.extra_buffers()):
        return llama_cpp.Llama(model_path=str(model_path), verbose=False, **settings)


@pytest.fixture(scope="session")
def small_cpu(small_model_path):
    from llmos_shell.cpu import LlamaCpu

    cpu = LlamaCpu(small_model_path, name=TEST_MODEL, max_ctx=2048)
    yield cpu
    cpu.close()


@pytest.fixture(scope="session")
def default_cpu(default_model_path):
    from llmos_shell.cpu import LlamaCpu

    cpu = LlamaCpu(default_model_path, name=DEFAULT_MODEL, max_ctx=4096)
    yield cpu
    cpu.close()


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def run_llmos(*args: str, home: Path | None = None, input: str | None = None, env: dict | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real CLI as a user would: a subprocess, its output captured as text."""
    command = [sys.executable, "-m", "llmos_shell"]
    if home is not None:
        command += ["--home", str(home)]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(command + list(args), input=input, capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=str(REPO))


def assert_one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The CLI failed with ``code`` and said so in one line, with no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
