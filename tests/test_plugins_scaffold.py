"""`llmos plugins new`: the scaffold is a working plugin whose own test passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driver_fixtures import run_llmos
from llmos_shell.cli.plugins import new_package, new_single_file
from llmos_shell.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_new_package_files(tmp_path):
    done = run_llmos(tmp_path / "home", "plugins", "new", "weather-station", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    root = tmp_path / "llmos-weather-station"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md", "llmos_weather_station/__init__.py", "pyproject.toml", "tests/test_weather_station.py"]
    assert '[project.entry-points.llmos_shell]\nweather-station = "llmos_weather_station"' in \
        (root / "pyproject.toml").read_text()


def test_the_scaffolded_test_passes(tmp_path):
    root = new_package("weather", tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                          capture_output=True, text=True, cwd=root, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


@pytest.mark.slow
def test_an_installed_scaffold_is_found_through_its_entry_point(tmp_path):
    root = new_package("weather", tmp_path)
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", "--target", str(target), str(root)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": str(target)}
    drivers = run_llmos(tmp_path / "home", "drivers", "--json", env=env)
    rows = {row["driver"]: row for row in map(json.loads, drivers.stdout.splitlines())}
    assert rows["weather"] == {"driver": "weather", "status": "ok", "backend": "python", "detail": "",
                               "syscalls": ["weather_count_words"]}
    called = run_llmos(tmp_path / "home", "call", "weather_count_words", '{"text": "one two three"}', env=env)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"words": 3, "lines": 1, "summary": "3 words"}


def test_single_file_plugin_goes_to_the_plugins_folder_and_works(tmp_path):
    home = tmp_path / "home"
    made = run_llmos(home, "plugins", "new", "quick", "--single-file")
    assert made.returncode == 0, made.stderr
    assert (home / "plugins" / "quick.py").is_file()
    called = run_llmos(home, "call", "quick_count_words", '{"text": "a b"}')
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"words": 2, "lines": 1, "summary": "2 words"}


@pytest.mark.parametrize("name", ["Bad Name", "1st", "x" * 50, "a--b", "a_", "über"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(UsageError):
        new_package(name, tmp_path)
    done = run_llmos(tmp_path / "home", "plugins", "new", name, "--dir", str(tmp_path))
    assert done.returncode == 2 and "plugin name" in done.stderr


def test_an_existing_plugin_is_not_overwritten(tmp_path):
    new_package("weather", tmp_path)
    (tmp_path / "llmos-weather" / "README.md").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        new_package("weather", tmp_path)
    new_single_file("quick", tmp_path)
    with pytest.raises(UsageError, match="already exists"):
        new_single_file("quick", tmp_path)
    assert (tmp_path / "llmos-weather" / "README.md").read_text() == "mine"
