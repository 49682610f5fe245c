"""The translate driver: Apertium for installed pairs, the CPU for any pair."""

from __future__ import annotations

import re

import pytest

from driver_fixtures import clean_backends, needs_binary, system  # noqa: F401  (fixtures)
from llmos_plugins import translate as driver
from llmos_shell.errors import LlmosError, UsageError
from llmos_shell.testing import FakeCpu, make_system, model_cpu

pytestmark = pytest.mark.usefixtures("clean_backends")

apertium = needs_binary("apertium", "apertium apertium-eng-spa")
CAT = "The cat is on the table."


@pytest.mark.parametrize("given, code", [
    ("es", "es"), ("spa", "es"), ("Spanish", "es"), ("es-ES", "es"), ("es_MX", "es"), ("español", "es"),
    ("EN", "en"), ("eng", "en"), ("English", "en"), ("fr", "fr"), ("Klingon", "klingon"),
])
def test_language_codes_and_names_are_normalised(given, code):
    assert driver.language_code(given) == code


@pytest.mark.parametrize("text, language", [
    (CAT, "en"), ("El gato está en la mesa y no quiere bajar.", "es"),
    ("Le chat est sur la table et il ne veut pas descendre.", "fr"),
    ("Die Katze ist auf dem Tisch und will nicht herunter.", "de"), ("12345", None),
])
def test_guess_language(text, language):
    assert driver.guess_language(text) == language


@pytest.mark.system
@apertium
def test_apertium_translates_the_cat_into_spanish(system, monkeypatch):
    monkeypatch.setenv("LLMOS_TRANSLATE_BACKEND", "apertium")
    result = system.call("translate", {"text": CAT, "target_lang": "es"})
    assert result["backend"] == "apertium eng-spa"
    assert "gato" in result["translation"] and "mesa" in result["translation"]
    assert result["source_lang"] == "en" and result["target_lang"] == "es"


@pytest.mark.system
@apertium
def test_auto_uses_apertium_for_an_installed_pair_without_loading_a_model(system):
    result = system.call("translate", {"text": "El gato está en la mesa.", "target_lang": "English",
                                       "source_lang": "Spanish"})
    assert result["backend"] == "apertium spa-eng"
    assert "cat" in result["translation"].lower() and "table" in result["translation"].lower()
    assert not system.cpu_loaded


@pytest.mark.system
@apertium
def test_apertium_backend_explains_a_missing_pair(system, monkeypatch):
    monkeypatch.setenv("LLMOS_TRANSLATE_BACKEND", "apertium")
    with pytest.raises(UsageError, match=r"no en->fr pair installed .*apertium-eng-fra"):
        system.call("translate", {"text": CAT, "target_lang": "fr"})


def test_auto_without_a_pair_or_a_model_says_why(system):
    with pytest.raises(LlmosError, match="no-model.gguf"):
        system.call("translate", {"text": CAT, "target_lang": "Japanese"})


def test_a_bad_backend_setting_is_a_usage_error(system, monkeypatch):
    monkeypatch.setenv("LLMOS_TRANSLATE_BACKEND", "google")
    with pytest.raises(UsageError, match="choose one of auto, cpu, apertium"):
        system.call("translate", {"text": CAT, "target_lang": "es"})
    status = {s.name: s for s in system.driver_statuses()}["translate"]
    assert not status.ok and "LLMOS_TRANSLATE_BACKEND" in status.detail


def test_same_language_is_returned_as_is(system):
    result = system.call("translate", {"text": CAT, "target_lang": "en"})
    assert result["translation"] == CAT


def test_empty_text_is_refused(system):
    with pytest.raises(UsageError):
        system.call("translate", {"text": "  ", "target_lang": "es"})


def test_cpu_backend_prompts_the_model_and_cleans_its_reply(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOS_TRANSLATE_BACKEND", "cpu")
    cpu = FakeCpu(['Translation: "El gato está sobre la mesa."'])
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    result = machine.call("translate", {"text": CAT, "target_lang": "es"})
    assert result == {"source_lang": "en", "target_lang": "es", "translation": "El gato está sobre la mesa.",
                      "backend": "cpu fake"}
    assert "from English into Spanish" in cpu.prompts[0] and CAT in cpu.prompts[0]


def test_cpu_backend_translates_a_long_text_in_pieces_that_fit_the_context(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOS_TRANSLATE_BACKEND", "cpu")
    cpu = FakeCpu(n_ctx=200, responder=lambda prompt: "traducido")  # FakeCpu refuses prompts that do not fit
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    text = "\n\n".join(f"Paragraph {i}. " + "The river runs past the old mill. " * 6 for i in range(12))
    result = machine.call("translate", {"text": text, "target_lang": "de"})
    assert len(cpu.prompts) > 3
    assert result["translation"].split("\n\n") == ["traducido"] * len(cpu.prompts)


def test_status_lists_the_installed_pairs_and_the_cpu(system):
    status = {s.name: s for s in system.driver_statuses()}["translate"]
    if driver.apertium_pairs():
        assert status.ok and "eng-spa" in status.backend
    assert "no-model.gguf" in status.detail  # the CPU is missing, and the status says so


@pytest.fixture(scope="module")
def qwen():
    cpu = model_cpu(n_ctx=1024)
    yield cpu
    cpu.close()


@pytest.mark.model
def test_the_cpu_translates_the_cat_into_spanish(qwen, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOS_TRANSLATE_BACKEND", "cpu")
    machine = make_system(tmp_path, cpu=qwen, strict=True)
    result = machine.call("translate", {"text": CAT, "target_lang": "Spanish"})
    words = set(re.findall(r"\w+", result["translation"].lower()))
    assert {"gato", "mesa"} <= words, result
    assert result["backend"].startswith("cpu ")
