"""The summarise driver: a short summary of a text or of a file in the SQLite filesystem.

Backends, chosen by ``LLMOS_SUMMARISE_BACKEND`` (default ``auto``):

* ``cpu`` — abstractive, by the model, through the shared CPU. A text that fits
  one call is read whole. A longer one first goes through an extractive pass:
  its most salient sentences (MiniLM embeddings, centroid similarity and MMR),
  kept in their order, within a budget one call reads (``EXTRACT_TOKENS``); the
  model writes the summary from them. ``LLMOS_SUMMARISE_LONG=map-reduce`` reads
  every word instead, as before issue 26 (slower: the GPL takes 3 calls and
  2.8x the time on a quiet machine, 4.4x on a busy one): chunks that fit are summarised (map), then the partial summaries
  together (reduce), again in chunks if they still do not fit.
* ``textrank`` — extractive: the most central sentences, in their original
  order (TextRank computed with numpy; sentences split by ``pysbd`` where
  installed, a regex otherwise; no NLTK, no data files).
* ``auto`` — the CPU; TextRank, with a note saying why, when no model can load.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from typing import Any, Callable, Literal, Sequence

from llmos_shell import Cancelled, DriverStatus, LlmosError, UsageError, hookimpl
from llmos_shell import toolkit

BACKENDS = ("auto", "cpu", "textrank")
ENV = "LLMOS_SUMMARISE_BACKEND"
LONG_TEXTS = ("extract", "map-reduce")   # how the CPU takes a text longer than one call reads
LONG_ENV = "LLMOS_SUMMARISE_LONG"

#: length -> (sentences for TextRank, words for the model, max new tokens for the model)
LENGTHS = {"short": (2, 40, 96), "medium": (4, 90, 192), "long": (8, 180, 360)}

MAX_ROUNDS = 6  # reduce rounds; each divides the text by ~3 at least, so this covers any sane input

# Tokens of chosen sentences that the one call writing a long text's summary reads. Why 1,536: the
# target is 30 s for the whole GPL (~7,500 tokens; reading all of it took 76-81 s in 3 calls) on 2
# quiet cores, where the default model reads ~125 tokens/s and writes ~35 (bench/cpu.py). Embedding
# its 213 sentences takes ~6 s, loading the model ~2 s, writing a medium summary (<= 192 tokens) up
# to ~6 s: that leaves ~15 s, ~1,600 tokens of reading with the prompt. Measured: 27.8 s by
# `llmos call` (bench/summarise.py). It is one call with room to spare in a 4,096-token context; a
# smaller context caps it.
EXTRACT_TOKENS = 1536
MIN_SENTENCE_CHARS = 20   # shorter "sentences" are headings ("0. Definitions."): no content alone
MMR_LAMBDA = 0.7          # salience against saying again what a chosen sentence says (MMR)
# The opening (a title, an abstract, a preamble) takes up to a third of the budget: it says what the
# document is and is for, and a small model writes a coherent summary from a coherent passage, where
# from scattered sentences alone it lost the thread (GPL: "the license is designed to prevent the
# practice for those products"). The rest goes to what the whole text keeps returning to.
LEAD_SHARE = 3


# --- sentences ------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9À-ÖØ-Þ¿¡])")


@functools.lru_cache(maxsize=4)
def _pysbd(language: str):
    import pysbd

    return pysbd.Segmenter(language=language, clean=False)


def split_sentences(text: str, language: str = "en") -> list[str]:
    """Sentences of ``text``: pysbd where installed (abbreviations, decimals), a regex otherwise."""
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if importlib.util.find_spec("pysbd") is not None:
            try:
                parts = _pysbd(language).segment(paragraph)
            except ValueError:  # a language pysbd does not know
                parts = _SENTENCE_END.split(paragraph)
        else:
            parts = _SENTENCE_END.split(paragraph)
        sentences.extend(p.strip() for p in parts if p.strip())
    return sentences


# --- TextRank -------------------------------------------------------------------------------

_STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves also may might must shall one two its it's said says
""".split())


def _content_words(sentence: str) -> set[str]:
    words = re.findall(r"[^\W_]+(?:['’-][^\W_]+)*", sentence.lower())
    # a light stemmer: enough to match "river"/"rivers" without any data files
    return {re.sub(r"(?<=[a-z]{3})(?:ies|es|s|ing|ed)$", "", w) for w in words
            if w not in _STOP_WORDS and len(w) > 1}


def textrank(sentences: list[str], count: int, damping: float = 0.85) -> list[int]:
    """Indices of the ``count`` most central sentences (TextRank, Mihalcea & Tarau 2004), in text order.

    Edge weight between two sentences: shared content words / (log |s1| + log |s2|);
    scores by the power method on the damped, row-normalised graph. Very long texts
    are ranked in blocks, then the blocks' best sentences against each other, so
    memory stays bounded (one block is at most ``_BLOCK`` x ``_BLOCK``).
    """
    import numpy as np

    n = len(sentences)
    if n <= count:
        return list(range(n))
    if n > _BLOCK:
        keep: list[int] = []
        for start in range(0, n, _BLOCK):
            block = sentences[start:start + _BLOCK]
            keep.extend(start + i for i in textrank(block, max(count, len(block) // 20)))
        return [keep[i] for i in textrank([sentences[i] for i in keep], count)]
    words = [_content_words(s) for s in sentences]
    where: dict[str, list[int]] = {}
    for index, bag in enumerate(words):
        for word in bag:
            where.setdefault(word, []).append(index)
    common = np.zeros((n, n), dtype=np.float32)
    for rows in where.values():
        if len(rows) > 1:
            idx = np.asarray(rows)
            common[np.ix_(idx, idx)] += 1.0
    np.fill_diagonal(common, 0.0)
    logs = np.log(np.maximum(np.array([len(b) for b in words], dtype=np.float32), 1.0))
    denominator = logs[:, None] + logs[None, :]
    weights = np.divide(common, denominator, out=np.zeros_like(common), where=denominator > 0)
    sums = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, sums, out=np.full_like(weights, 1.0 / n), where=sums > 0)
    scores = np.full(n, 1.0 / n, dtype=np.float32)
    for _ in range(100):
        updated = (1 - damping) / n + damping * (weights.T @ scores)
        if np.abs(updated - scores).sum() < 1e-6:
            scores = updated
            break
        scores = updated
    best = np.argsort(-scores, kind="stable")[:count]
    return sorted(int(i) for i in best)


_BLOCK = 2000


def summarise_textrank(text: str, sentences: int) -> str:
    """The ``sentences`` most central sentences of ``text``, in their original order."""
    found = split_sentences(text)
    return " ".join(found[i] for i in textrank(found, sentences))


# --- the extractive first pass ------------------------------------------------------------

def choose_sentences(vectors: Any, fits: Callable[[int], bool], eligible: Sequence[bool],
                     lead: Sequence[int] = ()) -> list[int]:
    """Indices of the most salient sentences, in text order, as many as ``fits(index)`` lets in.

    The ``lead`` sentences (the opening) are taken first. Then salience: the cosine similarity of a
    sentence's embedding to the document's centroid (what the text keeps returning to). Sentences
    are taken by MMR (Carbonell & Goldstein 1998): the best of salience minus similarity to the
    closest sentence already taken, so the budget is not spent saying one thing twice. ``vectors``
    are unit rows; ``fits`` says whether one more sentence still fits the budget (and counts it in
    when it does).
    """
    import numpy as np

    centroid = vectors.mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    salience = vectors @ centroid
    closest_taken = np.zeros(len(vectors), dtype=np.float32)
    open_ = np.asarray(eligible, dtype=bool).copy()
    taken: list[int] = []
    for index in lead:
        open_[index] = False
        taken.append(index)
        closest_taken = np.maximum(closest_taken, vectors @ vectors[index])
    while open_.any():
        score = np.where(open_, MMR_LAMBDA * salience - (1 - MMR_LAMBDA) * closest_taken, -np.inf)
        best = int(np.argmax(score))
        open_[best] = False
        if fits(best):
            taken.append(best)
            closest_taken = np.maximum(closest_taken, vectors @ vectors[best])
    return sorted(taken)


def joined_excerpt(sentences: list[str], chosen: list[int]) -> str:
    """The chosen sentences as the model reads them: neighbours in the text joined into one line."""
    lines: list[list[str]] = []
    for position, index in enumerate(chosen):
        if position and chosen[position - 1] == index - 1:
            lines[-1].append(sentences[index])
        else:
            lines.append([sentences[index]])
    return "\n".join(" ".join(line) for line in lines)


class _Extract:
    """A text too long for one call, cut down to its most salient sentences within ``budget`` tokens."""

    def __init__(self, cpu: Any, budget: int, report: Callable[[float, str], None], cancel=None) -> None:
        self.cpu = cpu
        self.budget = budget
        self.report = report   # report(share of the step done, message)
        self.cancel = cancel

    def run(self, text: str) -> tuple[str, int, int]:
        """The excerpt, how many sentences it keeps, and of how many. Raises LlmosError when the
        sentence embedder is missing."""
        sentences = split_sentences(text)
        doing = f"choosing among {len(sentences)} sentences"
        self.report(0.0, doing)

        def embedded(done: int, total: int) -> None:
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled("summarise cancelled")
            self.report(done / total, doing)

        vectors = toolkit.sentence_vectors(sentences, on_batch=embedded)
        eligible = [len(s) >= MIN_SENTENCE_CHARS for s in sentences]
        fits = self._fits(sentences, self.budget)
        chosen = choose_sentences(vectors, fits, eligible, lead=self._lead(sentences, eligible, fits))
        return joined_excerpt(sentences, chosen), len(chosen), len(sentences)

    def _lead(self, sentences: list[str], eligible: list[bool], fits: Callable[[int], bool]) -> list[int]:
        """The opening sentences, up to 1/LEAD_SHARE of the budget (counted into ``fits``)."""
        in_lead = self._fits(sentences, self.budget // LEAD_SHARE)
        lead = []
        for index in (i for i, ok in enumerate(eligible) if ok):
            if not in_lead(index):
                break
            fits(index)
            lead.append(index)
        return lead

    def _fits(self, sentences: list[str], budget: int) -> Callable[[int], bool]:
        """Whether one more sentence fits ``budget`` tokens, counting it in when it does."""
        used = 0

        def fits(index: int) -> bool:
            nonlocal used
            size = self.cpu.count_tokens(sentences[index]) + 1   # +1: the space or newline joining it
            if used + size > budget:
                return False
            used += size
            return True

        return fits


# --- map-reduce with the CPU ----------------------------------------------------------------

def _pieces(text: str, cpu: Any, budget: int) -> list[str]:
    """Split ``text`` into chunks of at most ``budget`` tokens, at paragraph, sentence or word bounds."""
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if cpu.count_tokens(paragraph) <= budget:
            units.append(paragraph)
            continue
        for sentence in split_sentences(paragraph):
            if cpu.count_tokens(sentence) <= budget:
                units.append(sentence)
                continue
            words, current = sentence.split(), []
            for word in words:  # a "sentence" longer than the budget: cut by words
                if current and cpu.count_tokens(" ".join(current + [word])) > budget:
                    units.append(" ".join(current))
                    current = []
                current.append(word)
            if current:
                units.append(" ".join(current))
    chunks: list[str] = []
    sizes: list[int] = []
    for unit in units:
        size = cpu.count_tokens(unit)
        # +2 tokens for the blank line joining two units: checked exactly below when close
        if chunks and sizes[-1] + size + 2 <= budget:
            joined = f"{chunks[-1]}\n\n{unit}"
            joined_size = cpu.count_tokens(joined)
            if joined_size <= budget:
                chunks[-1], sizes[-1] = joined, joined_size
                continue
        chunks.append(unit)
        sizes.append(size)
    return chunks


SYSTEM_PROMPT = ("You write accurate, concise summaries. Use only facts from the text. "
                 "Reply with the summary only, as one paragraph.")


def tidy(text: str, truncated: bool) -> str:
    """A model's summary without repeated sentences (small models loop) or a sentence cut off by the limit."""
    sentences = split_sentences(text)
    if truncated and len(sentences) > 1 and not re.search(r"[.!?。！？][\"'”’)\]]*$", sentences[-1]):
        sentences = sentences[:-1]
    seen: set[str] = set()
    kept = []
    for sentence in sentences:
        key = re.sub(r"\W+", " ", sentence.lower()).strip()
        if key and key not in seen:
            seen.add(key)
            kept.append(sentence)
    return " ".join(kept)


class _Steps:
    """How far a summary has got, for ``ctx.progress``: one step to choose sentences (long texts),
    one per model call. The total grows when a reduce round turns out to need more calls."""

    def __init__(self, ctx) -> None:
        self.report = ctx.progress if ctx is not None else (lambda done, total=None, message=None: None)
        self.done = 0.0
        self.total = 1

    def expect(self, more: int) -> None:
        """``more`` steps are still to come, counting the one starting now."""
        self.total = max(self.total, int(self.done) + more)

    def at(self, share: float, message: str) -> None:
        """Within the current step: ``share`` of it done."""
        self.done = max(self.done, int(self.done) + min(share, 0.99))
        self.report(self.done, self.total, message)

    def step_done(self) -> None:
        self.done = int(self.done) + 1

    def finish(self) -> None:
        self.total = max(self.total, int(self.done))
        self.report(self.total, self.total, "done")


class _MapReduce:
    """Summarise with the CPU: chunks that fit the context (map), then summaries of summaries (reduce)."""

    def __init__(self, cpu: Any, length: str, cancel, steps: _Steps) -> None:
        self.cpu = cpu
        self.cancel = cancel
        self.steps = steps
        _, self.words, out_tokens = LENGTHS[length]
        # the answer must leave room for the text in the context
        self.out_tokens = max(32, min(out_tokens, cpu.n_ctx // 4))
        # partial summaries: short enough that each round shrinks the text several times
        self.partial_tokens = max(32, min(out_tokens, cpu.n_ctx // 8))
        self.calls = 0

    def _messages(self, instruction: str, text: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"{instruction}\n\nText:\n{text}"}]

    def _ask(self, instruction: str, text: str, max_tokens: int, doing: str) -> str:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("summarise cancelled")
        self.steps.at(0.0, doing)
        self.calls += 1
        generation = self.cpu.generate(self.cpu.format_chat(self._messages(instruction, text)),
                                       max_tokens=max_tokens, temperature=0.0, stop=["\n\n"],
                                       cancel=self.cancel)
        if generation.cancelled:
            raise Cancelled("summarise cancelled")
        self.steps.step_done()
        return tidy(generation.text.strip(), truncated=generation.finish_reason == "length")

    def budget(self, instruction: str, max_tokens: int) -> int:
        """Tokens of text that fit in one request with this instruction and answer length."""
        empty = self.cpu.format_chat(self._messages(instruction, ""))
        return self.cpu.n_ctx - self.cpu.count_tokens(empty) - max_tokens - 8

    def final_instruction(self) -> str:
        # the same for chosen sentences: told they were chosen, the model wrote about "key sentences"
        return f"Summarise the text in at most {self.words} words."

    def one_call_budget(self) -> int:
        """Tokens of text the call that writes the summary can read."""
        return self.budget(self.final_instruction(), self.out_tokens)

    def run(self, text: str, excerpt: str | None = None) -> tuple[str, int]:
        """The summary, and how many chunks the text was cut into (1 if it fitted). ``excerpt``: the
        text is chosen sentences of a longer one, and this says what ("37 of 213 sentences")."""
        final = self.final_instruction()
        writing = f"writing the summary from {excerpt}" if excerpt else "writing the summary"
        partial = (f"This is one part of a longer text. Summarise this part in at most "
                   f"{max(20, min(self.words, self.partial_tokens * 2 // 3))} words, "
                   "keeping names, numbers and conclusions.")
        first_chunks = 0
        for _ in range(MAX_ROUNDS):
            if self.cpu.count_tokens(text) <= self.budget(final, self.out_tokens):
                self.steps.expect(1)
                return self._ask(final, text, self.out_tokens, writing), first_chunks or 1
            budget = self.budget(partial, self.partial_tokens)
            if budget < 2 * self.partial_tokens:
                raise LlmosError(f"summarise: the context of {self.cpu.n_ctx} tokens is too small "
                                 "to summarise in chunks")
            chunks = _pieces(text, self.cpu, budget)
            first_chunks = first_chunks or len(chunks)
            self.steps.expect(len(chunks) + 1)   # the chunks, then at least one call on their summaries
            summaries = [self._ask(partial, chunk, self.partial_tokens, f"summarising part {number} of {len(chunks)}")
                         for number, chunk in enumerate(chunks, 1)]
            joined = "\n\n".join(s for s in summaries if s)
            if not joined:
                raise LlmosError("summarise: the model returned empty summaries")
            if self.cpu.count_tokens(joined) >= self.cpu.count_tokens(text):
                raise LlmosError("summarise: the partial summaries are not getting shorter")
            text = joined
            writing = f"writing the summary from {len(summaries)} partial summaries"
        raise LlmosError(f"summarise: the text is still too long after {MAX_ROUNDS} rounds")


# --- the syscall --------------------------------------------------------------------------

def backend_setting() -> str:
    return toolkit.backend_setting(ENV, BACKENDS)


def long_setting() -> str:
    return toolkit.backend_setting(LONG_ENV, LONG_TEXTS, default="extract")


def summarise(text: str | None = None, path: str | None = None,
              length: Literal["short", "medium", "long"] = "medium", ctx=None) -> dict:
    """Summarise a text, or a file of the filesystem given by its path.

    Args:
        text: The text to summarise (leave out when giving path).
        path: Path of a text file in the filesystem to summarise instead, like /inputs/report.txt.
        length: How long the summary should be.
    """
    if text is None and path is None:
        raise UsageError("summarise: give either text or path")
    # Small models often fill in both; the file is what they were asked about.
    ignored_text = text is not None and path is not None
    if path is not None:
        text = ctx.fs.read_text(path)
    assert text is not None
    if not text.strip():
        raise UsageError("summarise: the text is empty")
    if length not in LENGTHS:
        raise UsageError(f"summarise: length must be one of {', '.join(LENGTHS)}")
    backend = backend_setting()
    result: dict[str, Any] = {"length": length}
    if path is not None:
        result["path"] = path
    notes = ["both text and path were given: summarised the file"] if ignored_text else []
    if backend in ("auto", "cpu"):
        try:
            cpu = ctx.cpu
        except LlmosError as error:
            if backend == "cpu":
                raise
            notes.append(f"no model could load ({error}); extractive summary instead")
        else:
            result.update(_with_cpu(text, cpu, length, ctx, notes))
    if "summary" not in result:
        result.update(summary=summarise_textrank(text, LENGTHS[length][0]), backend="textrank")
    if notes:
        result["note"] = "; ".join(notes)
    return result


def _with_cpu(text: str, cpu: Any, length: str, ctx, notes: list[str]) -> dict[str, Any]:
    """(Adds to ``notes`` what the user should know.) The model's summary: the whole text if one call reads it; else, unless the user asked to read
    every word (``LLMOS_SUMMARISE_LONG=map-reduce``), its most salient sentences; else map-reduce."""
    steps = _Steps(ctx)
    job = _MapReduce(cpu, length, ctx.cancel if ctx is not None else None, steps)
    excerpt = None
    budget = job.one_call_budget()
    if cpu.count_tokens(text) > budget and long_setting() == "extract":
        steps.expect(2)   # choosing the sentences, then the one call that writes the summary
        budget = min(EXTRACT_TOKENS, budget)
        try:
            chosen, kept, of = _Extract(cpu, budget, steps.at, job.cancel).run(text)
        except LlmosError as error:   # the embedder is missing: read it all, slowly, rather than fail
            notes.append(f"{error}; read the whole text instead")
        else:
            if kept:   # none when no sentence fits the budget alone: read it all
                text, excerpt = chosen, f"{kept} of {of} sentences"
            steps.step_done()
    summary, chunks = job.run(text, excerpt)
    steps.finish()
    result: dict[str, Any] = {"summary": summary, "backend": f"cpu {getattr(cpu, 'name', '')}".strip(),
                              "chunks": chunks, "model_calls": job.calls}
    if excerpt:
        result["extract"] = excerpt
    return result


# --- hooks --------------------------------------------------------------------------------

@hookimpl
def register_syscalls(register):
    # a long text read whole (LLMOS_SUMMARISE_LONG=map-reduce) takes minutes on 2 busy cores
    register(summarise, capabilities=["reads_fs", "uses_cpu"], reads=["text/*"], input="text", output="summary",
             timeout=600, examples=[
        "Summarise /docs/report.txt", "Give me a short summary of /inputs/article.txt",
        "What are the main points of /notes/meeting.txt?", "Sum up this text: the council met on Monday ...",
        "Please summarise: our sales grew in May while costs fell ...", "TL;DR of /docs/paper.md",
        "Summarize the document /inputs/minutes.txt in two sentences", "and summarise it",
    ])


def _textrank_status() -> tuple[bool, str]:
    if importlib.util.find_spec("numpy") is None:
        return False, "textrank: pip install numpy"
    splitter = "pysbd" if importlib.util.find_spec("pysbd") is not None else "regex sentences; pip install pysbd"
    return True, f"textrank ({splitter})"


@hookimpl
def driver_status(system):
    backend = backend_setting()  # a bad setting raises UsageError: the driver shows as unavailable, saying why
    textrank_ok, textrank = _textrank_status()
    cpu_ok, cpu = system.cpu_status()
    usable, missing = toolkit.usable(backend, [
        toolkit.Backend("cpu", cpu_ok, label=cpu, fix=cpu), toolkit.Backend("textrank", textrank_ok, label=textrank,
                                                                            fix=textrank)])
    return DriverStatus("summarise", bool(usable), backend=", falling back to ".join(usable),
                        detail="; ".join(missing))
