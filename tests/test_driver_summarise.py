"""The summarise driver: map-reduce with the CPU, extractive TextRank without it."""

from __future__ import annotations

import re
import threading

import pytest

from driver_fixtures import clean_backends, system  # noqa: F401  (fixtures)
from llmos_plugins import summarise as driver
from llmos_shell.errors import Cancelled, FsError, UsageError
from llmos_shell.testing import FakeCpu, make_system, small_cpu

pytestmark = pytest.mark.usefixtures("clean_backends")

ARTICLE = """\
The town council of Millbrook voted on Tuesday to replace the Green River bridge. The old bridge was \
built in 1931 and engineers found deep cracks in two of its piers last spring. Since then buses and \
lorries have had to take a twelve-mile detour.

The new bridge will cost 4.2 million dollars, most of it paid by a state infrastructure grant. \
Construction starts in March and should take eighteen months. A temporary footbridge will keep the \
riverside school reachable for pupils during the works.

Local shop owners welcomed the decision. They say the detour cut their trade by a third over the \
winter. The council will publish the final design in January and invite comments from residents.
"""

TOPICS = [
    ("Millbrook council", "voted to replace the Green River bridge after engineers found cracks in its piers"),
    ("The state grant", "pays most of the 4.2 million dollar cost of the new bridge"),
    ("Local shop owners", "lost a third of their trade because of the twelve-mile detour"),
    ("The riverside school", "stays reachable through a temporary footbridge during the works"),
    ("The construction company", "starts work in March and expects to finish within eighteen months"),
    ("Residents", "can comment on the final design when the council publishes it in January"),
    ("The old bridge", "was built in 1931 and can no longer carry buses or lorries safely"),
    ("Bus drivers", "have driven the long detour every day since last spring"),
]


def long_text(paragraphs: int) -> str:
    """A report of many paragraphs that keep returning to the same few facts."""
    out = []
    for i in range(paragraphs):
        subject, fact = TOPICS[i % len(TOPICS)]
        other, other_fact = TOPICS[(i * 3 + 1) % len(TOPICS)]
        out.append(f"{subject} {fact}. In meeting number {i + 1}, people repeated that {other.lower()} "
                   f"{other_fact}. Everyone agreed the Green River bridge matters to the whole town of "
                   f"Millbrook.")
    return "\n\n".join(out)


def sentences_of(text: str) -> list[str]:
    return driver.split_sentences(text)


# --- TextRank ---------------------------------------------------------------------------

def test_textrank_picks_whole_sentences_of_the_text_in_order(system, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_BACKEND", "textrank")
    result = system.call("summarise", {"text": ARTICLE, "length": "short"})
    assert result["backend"] == "textrank"
    picked = sentences_of(result["summary"])
    original = sentences_of(ARTICLE)
    assert len(picked) == 2 and all(s in original for s in picked)
    assert [original.index(s) for s in picked] == sorted(original.index(s) for s in picked)


def test_textrank_lengths_grow(system, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_BACKEND", "textrank")
    text = long_text(12)
    counts = [len(sentences_of(system.call("summarise", {"text": text, "length": length})["summary"]))
              for length in ("short", "medium", "long")]
    assert counts == [2, 4, 8]


def test_textrank_prefers_the_sentences_the_text_keeps_returning_to():
    text = ("Apples grow on trees in orchards. Apples from orchards are sold at markets. "
            "The market sells apples from the orchard every week. My neighbour owns a red bicycle.")
    assert "bicycle" not in driver.summarise_textrank(text, 2)


def test_textrank_handles_a_text_far_longer_than_any_context(system, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_BACKEND", "textrank")
    text = long_text(700)  # ~2,800 sentences: ranked in blocks
    result = system.call("summarise", {"text": text, "length": "medium"})
    assert len(sentences_of(result["summary"])) == 4


def test_sentence_splitter_keeps_abbreviations_and_decimals():
    assert sentences_of("Dr. Smith paid 4.2 million. He left at 5 p.m. on Friday. Then rain.") == [
        "Dr. Smith paid 4.2 million.", "He left at 5 p.m. on Friday.", "Then rain."]


def test_auto_without_a_model_falls_back_to_textrank_with_a_note(system):
    result = system.call("summarise", {"text": ARTICLE})
    assert result["backend"] == "textrank"
    assert "no-model.gguf" in result["note"]


def test_cpu_backend_without_a_model_is_an_error(system, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_BACKEND", "cpu")
    with pytest.raises(Exception, match="no-model.gguf"):
        system.call("summarise", {"text": ARTICLE})


def test_summarise_a_file_of_the_filesystem(system, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_BACKEND", "textrank")
    system.fs.write("/inputs/report.txt", ARTICLE)
    result = system.call("summarise", {"path": "/inputs/report.txt", "length": "short"})
    assert result["path"] == "/inputs/report.txt" and len(sentences_of(result["summary"])) == 2
    with pytest.raises(FsError):
        system.call("summarise", {"path": "/inputs/missing.txt"})


def test_given_text_and_path_the_file_is_summarised(system):
    system.fs.write("/inputs/report.txt", ARTICLE)
    result = system.call("summarise", {"text": "Something the model made up.", "path": "/inputs/report.txt",
                                       "length": "short"})
    assert "made up" not in result["summary"] and "both text and path" in result["note"]


@pytest.mark.parametrize("arguments", [{}, {"text": "   "}])
def test_bad_arguments_are_usage_errors(system, arguments):
    with pytest.raises(UsageError):
        system.call("summarise", arguments)


# --- map-reduce with the CPU --------------------------------------------------------------

def test_map_reduce_keeps_every_prompt_inside_the_context(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_BACKEND", "cpu")
    monkeypatch.setenv("LLMOS_SUMMARISE_LONG", "map-reduce")   # read every word
    # FakeCpu counts words as tokens and raises, as llama.cpp does, on a prompt that does not fit
    cpu = FakeCpu(n_ctx=512, responder=lambda prompt: "The bridge will be replaced with a state grant.")
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    text = long_text(120)
    assert cpu.count_tokens(text) > 10 * cpu.n_ctx
    result = machine.call("summarise", {"text": text, "length": "short"})
    assert result["summary"] == "The bridge will be replaced with a state grant."
    assert result["chunks"] >= 10 and result["model_calls"] > result["chunks"]
    assert all(cpu.count_tokens(p) < cpu.n_ctx for p in cpu.prompts)
    # every sentence of the text reached the model in some chunk
    seen = " ".join(cpu.prompts[: result["chunks"]])
    assert all(f"In meeting number {i}," in seen for i in range(1, 121))
    assert "at most 40 words" in cpu.prompts[-1]


def test_a_short_text_takes_one_model_call(tmp_path, monkeypatch):
    cpu = FakeCpu(["Millbrook will replace its cracked 1931 bridge by next autumn."])
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    result = machine.call("summarise", {"text": ARTICLE})
    assert result["model_calls"] == 1 and result["chunks"] == 1
    assert result["backend"] == "cpu fake"


@pytest.mark.parametrize("long_texts", ["extract", "map-reduce"])
def test_cancel_stops_the_summary_before_any_model_call(tmp_path, monkeypatch, long_texts):
    monkeypatch.setenv("LLMOS_SUMMARISE_LONG", long_texts)
    cpu = FakeCpu(n_ctx=512, responder=lambda prompt: "a summary")
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        machine.call("summarise", {"text": long_text(60)}, cancel=cancel)
    assert cpu.prompts == []


@pytest.fixture(scope="module")
def smollm2():
    cpu = small_cpu(n_ctx=512)
    yield cpu
    cpu.close()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_the_model_summarises_three_paragraphs(smollm2, tmp_path):
    machine = make_system(tmp_path, cpu=smollm2, strict=True)
    result = machine.call("summarise", {"text": ARTICLE, "length": "short"})
    assert result["backend"] == "cpu smollm2-135m-instruct" and result["model_calls"] == 1
    summary = result["summary"]
    assert 0 < len(summary) < len(ARTICLE)
    assert _words(summary) & {"bridge", "millbrook", "council", "river"}


@pytest.mark.slow
def test_the_model_summarises_a_text_ten_times_its_context(smollm2, tmp_path):
    machine = make_system(tmp_path, cpu=smollm2, strict=True)
    text = long_text(90)
    assert smollm2.count_tokens(text) > 10 * smollm2.n_ctx
    result = machine.call("summarise", {"text": text, "length": "short"})
    assert result["chunks"] >= 10
    summary = result["summary"]
    assert 0 < len(summary) < len(text) / 10
    assert _words(summary) & {"bridge", "millbrook", "council", "river", "town"}
