"""The router: which syscalls a request needs, in which order, or none at all.

A small model is a poor judge of whether to call a function (its p(call) and
its yes/no hover around chance on everyday requests), but it fills in the
arguments of a call it is told to make well. So the choice is made here, the
way an intent classifier works: each syscall declares a few example requests
(``register(..., examples=[...])``), the request is embedded with a sentence
encoder (embed.py) and compared with every example, and with examples of
requests the model answers itself (language.py: WORDS.chat_examples). Then a plan is built:

* **clauses**: "translate X into Spanish and save it in /notes/x.txt" names two
  actions; the request is split at "and", "then" and ";" (outside quotes) and
  each clause that clearly names a syscall adds a step;
* **files**: a request that names an existing file first runs a syscall that
  reads that kind of file (``reads=["image/*"]``): "what does /inputs/door.png
  say in French?" is OCR, then translate; "what is in /notes/todo.txt?" is a
  read, never a listing;
* a step's ``input`` parameter takes the previous step's output (a pipe);
* **places**: a request about the host's files (``~/data``, a folder an MCP server was given:
  places.py) cannot be served by a syscall of the llmos filesystem, nor one about an llmos file by a
  tool that reaches host folders. Such syscalls leave the plan, and what the classifier gave one goes
  to its *stand-in*, the syscall of the other side that does the same ("List the files in ~/data" is
  a listing: list_files's probability goes to the filesystem server's list_directory).

Paths and quoted text are replaced by what they are ("the image file", "some
text") before embedding, so the comparison is about the action, not the words
being acted on. The thresholds are in :class:`RouterPolicy`, with where they
were measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from llmos_shell.config import write_cached
from llmos_shell.kernel.language import WORDS
from llmos_shell.kernel.places import ANY_PATH, PATH, host_kind, inside, is_host, named_paths, takes_a_path
from llmos_shell.syscalls import Syscall, SyscallTable

log = logging.getLogger("llmos.router")

# What a syscall that keeps or plays a text declares: it ends a chain, it does not transform.
STORES = frozenset({"writes_fs", "audio_out"})

# Vectors of example texts already encoded in this program, by (encoder name, text).
_VECTORS: dict[tuple[str, str], np.ndarray] = {}


@dataclass(frozen=True)
class RouterPolicy:
    """The router's settings. Probabilities are the classifier's; tuned on the ``tune`` half of
    bench/data/requests.json, checked on its ``held`` half and the shared os-tasks cases."""

    #: The first clause's syscall needs at least this probability (and more than "answer yourself").
    min_first: float = 0.0
    #: A later clause ("... and save it in /notes/x.txt") needs this much for a further step.
    min_further: float = 0.3
    #: A syscall that works on text follows a step that read the named file at this probability
    #: (tune: 0.27 for "what does /scans/notice.png say in Spanish?"; plain reads give it at most 0.17).
    min_chain: float = 0.2
    #: With a store's path taken out, a syscall that works on text and is the classifier's first
    #: choice at this probability runs before the store. Chosen looking at two cases, so they are no
    #: longer unseen: "Put the Italian for '...' in a file called" 0.37 (held-out chain-italian-save)
    #: and "Jot down '...' in" 0.27 for translate (a plain write, tests/test_user_requests.py).
    min_make_before_store: float = 0.35
    #: L2 penalty of the classifier: 0.001 (0.01 left it unsure of everything, p < 0.25).
    l2: float = 0.001
    #: A syscall without examples (an MCP server's tool), learnt from its description only, is the
    #: classifier's first choice at this probability: the kernel then asks the model whether to call
    #: it ("what time is it in Tokyo?": 0.17 for time.get_current_time; with the time server and
    #: tests/mcp_notes_server.py loaded, "Hello!", "Tell me a joke", "What is the capital of Japan?"
    #: gave such syscalls at most 0.02).
    min_described: float = 0.1
    #: A syscall stands in for one of the other side (a host tool for a bundled file syscall) when
    #: their names and descriptions are this alike (the mean of the two cosines). With
    #: @modelcontextprotocol/server-filesystem: list_files -> list_directory 0.55, search_files ->
    #: search_files 0.68, write_file -> write_file 0.67, read_file -> read_file 0.73; the best match
    #: of a syscall it has no tool for: delete_file 0.43 (write_file), ocr 0.47, summarise 0.34.
    min_stand_in: float = 0.5


@dataclass
class Reach:
    """Which syscalls can take a request's paths (places.py): the others are ``out``, and the
    probability the classifier gave one of those goes to its ``stand_in``; without one, to "answer
    yourself" ("Delete ~/old.txt" with a host server that cannot delete is not a request for its
    write_file: the model answers)."""

    out: frozenset[str] = frozenset()
    stand_in: dict[str, str] = field(default_factory=dict)
    host: tuple[str, ...] = ()      # the request's paths, when they are all the host's

    def apply(self, scores: dict[str, float]) -> dict[str, float]:
        if not self.out:
            return scores
        kept = {name: value for name, value in scores.items() if name not in self.out}
        for name in self.out & scores.keys():
            target = self.stand_in.get(name, "")
            kept[target] = kept.get(target, 0.0) + scores[name]
        return kept


@dataclass
class Step:
    syscall: Syscall
    score: float
    path: str | None = None        # the file this step reads, when it reads one


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)   # the whole request's, for --verbose and tests

    @property
    def names(self) -> list[str]:
        return [s.syscall.name for s in self.steps]


def describe(text: str, kind_of: Callable[[str], str | None]) -> str:
    """The request as the router compares it: paths as their kind, quoted text as 'some text'."""
    match = None if WORDS.quoted.search(text) else WORDS.lead_in.match(text.strip())   # "write 'note: milk'" has none
    if match and not ANY_PATH.search(match.group(1) + " "):
        text = match.group(1) + ": " + WORDS.some_text

    def path_word(m: re.Match) -> str:
        # A path that does not exist yet (one to write), or a host path, is named by its extension,
        # like the examples'.
        path = m.group(0)
        mime = (kind_of(path) if path.startswith("/") else None) or host_kind(path) or ""
        return next((word for prefix, word in WORDS.kind_words if mime.startswith(prefix)), WORDS.any_file)

    text = WORDS.quoted.sub(f"'{WORDS.some_text}'", text)
    return ANY_PATH.sub(path_word, text)


def clauses(text: str) -> list[str]:
    """The request split into the actions it names (never inside quotes)."""
    masked = WORDS.quoted.sub(lambda m: "x" * len(m.group(0)), text)
    parts, start = [], 0
    for m in WORDS.clause.finditer(masked):
        parts.append(text[start:m.start()])
        start = m.end()
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


class Router:
    """Chooses syscalls for requests: a softmax classifier over sentence embeddings, trained on the
    syscalls' examples (and WORDS.chat_examples as the class "answer yourself") when a table is first seen.

    A classifier beats the nearest example: it learns which directions of the embedding tell the
    actions apart, where nearest-example matching follows the topic ("taxes", "colour") instead
    (bench/router.py: 0.83 / 0.89 -> 0.94 / 0.97 first-step accuracy on our tune / held-out requests)."""

    def __init__(self, encoder=None, policy: RouterPolicy | None = None, cache_dir: Path | None = None) -> None:
        if encoder is None:
            from llmos_shell.kernel.embed import shared_encoder

            encoder = shared_encoder()
        self.encoder = encoder
        self.policy = policy or RouterPolicy()
        # Embedding a hundred examples takes a second or more on 2 busy cores: kept on disk by text.
        self.cache_dir = cache_dir
        self._models: dict[tuple, tuple[list[str], np.ndarray, np.ndarray]] = {}
        self._likeness: dict[tuple, dict[tuple[str, str], float]] = {}
        self._lock = threading.Lock()

    def _embed_examples(self, texts: list[str]) -> np.ndarray:
        """The examples' vectors: from this program's memory, else the disk cache, else encoded."""
        # The disk cache is shared by every home on the machine: only an encoder that names its
        # weights (``name``) uses it; another one (a test's) keeps its vectors in memory.
        named = getattr(self.encoder, "name", None)
        encoder = named or type(self.encoder).__name__
        on_disk = self.cache_dir is not None and named is not None
        missing = sorted({t for t in texts if (encoder, t) not in _VECTORS}, key=len)
        if missing and on_disk:
            self._load_cache(encoder)
            missing = [t for t in missing if (encoder, t) not in _VECTORS]
        if missing:
            for start in range(0, len(missing), 16):  # batches of similar length: little padding
                batch = missing[start:start + 16]
                for text, vector in zip(batch, self.encoder.encode(batch)):
                    _VECTORS[(encoder, text)] = vector
            if on_disk:
                self._save_cache(encoder)
        return np.stack([_VECTORS[(encoder, t)] for t in texts])

    def _cache_path(self, encoder: str) -> Path:
        return self.cache_dir / f"router-{hashlib.sha256(encoder.encode()).hexdigest()[:16]}.json"

    def _load_cache(self, encoder: str) -> None:
        try:
            saved = json.loads(self._cache_path(encoder).read_text())
            for text, vector in saved.items():
                _VECTORS.setdefault((encoder, text), np.asarray(vector, dtype=np.float32))
        except (OSError, ValueError, TypeError):
            pass  # no cache yet, or a damaged one: encode again

    def _save_cache(self, encoder: str) -> None:
        path = self._cache_path(encoder)
        known = {text: [round(float(v), 6) for v in vector] for (name, text), vector in _VECTORS.items()
                 if name == encoder}
        if not write_cached(path, json.dumps(known)):
            log.warning("cannot cache the router's example embeddings in %s", self.cache_dir, exc_info=True)

    def _model(self, table: SyscallTable) -> tuple[list[str], np.ndarray, np.ndarray]:
        key = tuple((s.name, s.examples or described(s)) for s in table)
        with self._lock:  # a request waits for the shell's warm-up instead of training a second time
            return self._models[key] if key in self._models else self._train(key)

    def _train(self, key: tuple) -> tuple[list[str], np.ndarray, np.ndarray]:
        if key not in self._models:
            names = [""] + [name for name, _ in key]
            texts = [WORDS.chat_examples] + [examples for _, examples in key]
            # the examples' paths are illustrations: named by their extension
            x = self._embed_examples([describe(t, lambda path: None) for group in texts for t in group])
            y = np.concatenate([np.full(len(group), i) for i, group in enumerate(texts)])
            self._models[key] = (names, *_train_softmax(x, y, len(names), self.policy.l2))
        return self._models[key]

    def prepare(self, table: SyscallTable) -> None:
        """Embed the table's examples and train its classifier, if not done yet."""
        self._model(table)

    def scores(self, text: str, table: SyscallTable, kind_of) -> dict[str, float]:
        """The probability that the request is for each syscall that can take its paths, and ``""``
        for "answer it yourself"."""
        return self.reach(text, table, kind_of).apply(self._classify(text, table, kind_of))

    def _classify(self, text: str, table: SyscallTable, kind_of) -> dict[str, float]:
        """The classifier's probabilities over every syscall and ``""``, before places are applied."""
        names, weights, bias = self._model(table)
        logits = self.encoder.encode([describe(text, kind_of)])[0] @ weights + bias
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return {name: float(v) for name, v in zip(names, p)}

    def reach(self, text: str, table: SyscallTable, kind_of) -> Reach:
        """Which syscalls cannot take the request's paths, and their stand-ins. A request whose paths
        are all the host's is not for the llmos filesystem's syscalls (but one that works on a text,
        summarise, may take what a host tool read), nor for host tools that do not reach them; one
        whose paths are all llmos's is not for host tools that take a path. A request naming both
        kinds, or none, may need any syscall."""
        paths = named_paths(text)
        host = [p for p in paths if is_host(p, kind_of, {q for s in table for q in s.places})]
        if not paths or 0 < len(host) < len(paths):
            return Reach()
        if host:
            out = {s.name for s in table if _on_llmos_files(s) and not _makes_text(s)}
            out |= {s.name for s in table if _on_host_files(s) and not _reaches(s, host)}
        else:
            out = {s.name for s in table if _on_host_files(s)}
        kept = [s.name for s in table if s.name not in out]
        stand_in = {name: other for name in out if (other := self._stand_in(name, kept, table))}
        return Reach(frozenset(out), stand_in, tuple(host))

    def _stand_in(self, name: str, candidates: list[str], table: SyscallTable) -> str | None:
        """The candidate most like ``name`` (a syscall of the other side), if alike enough."""
        likeness = self.likeness(table)
        alike = {other: likeness[name, other] for other in candidates if (name, other) in likeness}
        best = max(alike, key=alike.get, default=None)
        return best if best is not None and alike[best] >= self.policy.min_stand_in else None

    def likeness(self, table: SyscallTable) -> dict[tuple[str, str], float]:
        """How alike each llmos file syscall and each host tool are (both orders): the mean cosine
        of their names in words ("list files", "list directory") and of their descriptions' first
        sentences. Names carry the action, descriptions what it acts on."""
        key = tuple((s.name, s.description) for s in table)
        if key not in self._likeness:
            llmos = [s for s in table if _on_llmos_files(s)]
            host = [s for s in table if _on_host_files(s)]
            if not llmos or not host:
                self._likeness[key] = {}
                return {}
            names = self._embed_examples([_name_words(s) for s in llmos + host])
            sentences = self._embed_examples([_first_sentence(s) for s in llmos + host])
            alike = (names @ names.T + sentences @ sentences.T) / 2
            pairs = {}
            for i, a in enumerate(llmos):
                for j, b in enumerate(host, start=len(llmos)):
                    pairs[a.name, b.name] = pairs[b.name, a.name] = float(alike[i, j])
            self._likeness[key] = pairs
        return self._likeness[key]

    def plan(self, text: str, table: SyscallTable, kind_of: Callable[[str], str | None]) -> Plan:
        """The syscalls the request needs, in order; no steps means the model answers itself.

        ``kind_of(path)`` is the MIME type of an existing file or folder (``inode/directory``), else None."""
        reach = self.reach(text, table, kind_of)
        usable = table.without(reach.out)

        def score(part: str) -> dict[str, float]:   # a part's scores, among the syscalls that can serve the whole
            return {n: v for n, v in self.scores(part, table, kind_of).items() if n == "" or n in usable}

        plan = Plan(scores=reach.apply(self._classify(text, table, kind_of)))   # self.scores, reach known
        _nothing_to_read(plan.scores, text, usable, kind_of)
        parts = clauses(text)
        for i, part in enumerate(parts):
            scores = plan.scores if len(parts) == 1 else score(part)
            _nothing_to_read(scores, text, usable, kind_of)
            # A later clause names a further action ("... and put the summary in x.txt"): not one
            # already planned, so the probabilities are taken among the others.
            rest = {n: v for n, v in scores.items() if n not in plan.names}
            total = sum(rest.values()) or 1.0
            rest = {n: v / total for n, v in rest.items()}
            candidates = {n: v for n, v in rest.items() if n}
            if not candidates:
                continue
            name = max(candidates, key=candidates.get)
            floor = self.policy.min_first if i == 0 else self.policy.min_further
            log.debug("clause %r -> %s (%s)", part, name, {k: round(v, 3) for k, v in rest.items()})
            if rest[name] < floor or rest[name] < rest[""]:
                continue
            plan.steps.append(Step(table.get(name), rest[name]))
        _read_named_files(plan, text, usable, _readers(table, kind_of, reach))
        _nothing_read_from_the_host(plan, reach)
        self._work_on_what_was_read(plan, usable, lambda path: host_kind(path) if path in reach.host else kind_of(path))
        self._make_what_is_stored(plan, text, usable, kind_of, score)
        return plan

    def described_candidate(self, plan: Plan, table: SyscallTable) -> Syscall | None:
        """A syscall without examples that the request may be for, when the plan is empty: the
        classifier's first choice among syscalls, if it has no examples and at least ``min_described``.
        Learnt from a description alone, it is often less likely than "answer yourself" even when it
        fits ("what time is it in Tokyo?"): the kernel asks the model to confirm it."""
        scores = {n: v for n, v in plan.scores.items() if n}
        if plan.steps or not scores:
            return None
        best = max(scores, key=scores.get)
        syscall = table.get(best)
        return syscall if not syscall.examples and scores[best] >= self.policy.min_described else None

    def _make_what_is_stored(self, plan: Plan, text: str, table: SyscallTable, kind_of, score) -> None:
        """"Put the Italian for 'good morning' in /notes/it.txt" names a store and, around it, what
        to store. With the path taken out the request reads as that other action ("Put the Italian for
        'good morning' in a file called": translate 0.37, write_file 0.26): when a syscall that works on
        text then comes first, it runs first and its output is stored. A request that names no path to
        store to is not re-read ("please speak 'your order is ready'" stays one step)."""
        if len(plan.steps) != 1 or not PATH.search(text):
            return
        store = plan.steps[0].syscall
        if _makes_text(store):
            # "Put the Spanish for 'thank you' into /notes/es.txt": made, and a new path named to keep
            # it in: the syscall that stores best follows
            targets = [p for p in PATH.findall(text) if kind_of(p) is None]
            stores = [s for s in table if _stores_to_a_path(s)]
            if targets and stores:
                keeper = max(stores, key=lambda s: plan.scores.get(s.name, 0.0))
                plan.steps.append(Step(keeper, plan.scores.get(keeper.name, 0.0)))
            return
        if not _stores_to_a_path(store):
            return
        scores = score(PATH.sub("", text))
        best = max((n for n in scores if n), key=scores.get)
        maker = table.get(best)
        if maker is not store and _makes_text(maker) and scores[best] >= self.policy.min_make_before_store:
            plan.steps.insert(0, Step(maker, scores[best]))

    def _work_on_what_was_read(self, plan: Plan, table: SyscallTable, kind_of) -> None:
        """One clause can name two actions: "what does /inputs/door.png say in French?" reads the
        file and translates what it says. After a step that reads the named file, a syscall that
        works on text (it has an ``input``, and is not another reader of that kind) follows when the
        classifier gives it at least ``min_chain``. Not a syscall that stores or plays: "save it" and
        "read it aloud" are said as clauses of their own."""
        # Not before a step that stores: "please speak 'your order is ready'" gives translate the
        # same probability (0.27) as "put the Italian for 'good morning' in /notes/it.txt" (0.26).
        if len(plan.steps) != 1 or plan.steps[0].path is None:
            return
        mime = kind_of(plan.steps[0].path) or ""
        candidates = [s for s in table if _makes_text(s) and not s.reads_kind(mime)]
        best = max(candidates, key=lambda s: plan.scores.get(s.name, 0.0), default=None)
        if best is not None and plan.scores.get(best.name, 0.0) >= self.policy.min_chain:
            plan.steps.append(Step(best, plan.scores[best.name]))


def described(syscall: Syscall) -> tuple[str, ...]:
    """What the router learns a syscall without examples from (a tool of an MCP server): its
    description, its name in words, and the description as a user would ask for it ("Get current
    time in a timezone" -> "What is the current time in a timezone?")."""
    texts = WORDS.asked_for(_first_sentence(syscall), _name_words(syscall))
    return tuple(dict.fromkeys(t for t in texts if t.strip()))


def _makes_text(syscall: Syscall) -> bool:
    """It works on a text and gives one back (translate, summarise): not one that keeps or plays it."""
    return bool(syscall.input) and not syscall.capabilities & (STORES | {"irreversible"})


def _stores_to_a_path(syscall: Syscall) -> bool:
    """It keeps a text at a path it is given (write_file, speak's WAV)."""
    return bool(syscall.input and syscall.capabilities & STORES and "path" in syscall.parameters.get("properties", {}))


def _train_softmax(x: np.ndarray, y: np.ndarray, classes: int, l2: float,
                   steps: int = 500, rate: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by gradient descent: a few hundred examples, a few ms."""
    weights = np.zeros((x.shape[1], classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    target = np.eye(classes, dtype=np.float32)[y]
    for _ in range(steps):
        z = x @ weights + bias
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        gradient = (p - target) / len(x)
        weights -= rate * (x.T @ gradient + l2 * weights)
        bias -= rate * gradient.sum(0)
    return weights, bias


def _nothing_to_read(scores: dict[str, float], text: str, table: SyscallTable, kind_of) -> None:
    """A syscall that reads a kind of file cannot serve a request that gives its text in quotes
    and names no existing file: "Save a spoken version of 'welcome home' to /audio/welcome.wav"
    names a WAV to make, not one to transcribe. Such readers are taken out of the scores."""
    if not WORDS.quoted.search(text) or any(kind_of(p) is not None for p in PATH.findall(text)):
        return
    readers = [s.name for s in table if s.reads and s.input is None]
    if not readers:
        return
    for name in readers:
        if name in scores:
            scores[name] = 0.0
    total = sum(scores.values()) or 1.0
    scores.update({n: v / total for n, v in scores.items()})


def _readers(table: SyscallTable, kind_of, reach: Reach) -> Callable[[str], list[Syscall] | None]:
    """The syscalls that read what a path names: for an llmos file, those that read its kind; for a
    host path, the stand-ins of those (the kind guessed from its name). None when nothing is known
    to be there."""
    def readers_of(path: str) -> list[Syscall] | None:
        if path in reach.host:
            mime = host_kind(path)
            return None if mime is None else [table.get(reach.stand_in[s.name]) for s in table
                                                if s.reads_kind(mime) and s.name in reach.stand_in]
        mime = kind_of(path)
        return None if mime is None else [s for s in table if s.reads_kind(mime)]
    return readers_of


def _read_named_files(plan: Plan, text: str, table: SyscallTable, readers_of) -> None:
    """A request naming an existing file (or a host one) starts with a syscall that reads that kind
    of file: the model cannot know what the file holds, and left alone it answers from imagination."""
    literal = bool(WORDS.quoted.search(text) or WORDS.lead_in.match(text.strip()))
    paths = named_paths(text)
    for path in paths:
        readers = readers_of(path)
        if readers is None:
            continue
        reader = max(readers, key=lambda s: plan.scores.get(s.name, 0.0), default=None)
        first = plan.steps[0].syscall if plan.steps else None
        if first is not None and first.name in {r.name for r in readers}:
            plan.steps[0].path = path
            return
        if reader is None:
            return
        step = Step(reader, plan.scores.get(reader.name, 0.0), path=path)
        if first is None:
            plan.steps.append(step)
        elif _stores_to_a_path(first) and "audio_out" not in first.capabilities and len(paths) == 1:
            # "Add eggs to my shopping list in /notes/shopping.txt": the file it names is where the text
            # goes; read and piped in, it would be written into itself ("milk bread milk bread")
            return
        elif first.input and not literal:
            plan.steps.insert(0, step)   # it works on text the request does not give: read the file, pipe it
        elif first.reads or "path" not in first.parameters.get("properties", {}):
            plan.steps[0] = step         # it reads another kind of file, or cannot see files at all
        # else it targets the path itself (writes or deletes it): as planned
        return


def _nothing_read_from_the_host(plan: Plan, reach: Reach) -> None:
    """A syscall that works on a text but reads llmos files (summarise) can take a host file's text
    from a step that read it, never the host path itself: without such a step it leaves the plan."""
    if reach.host and plan.steps and _on_llmos_files(plan.steps[0].syscall):
        plan.steps.pop(0)


def _on_llmos_files(syscall: Syscall) -> bool:
    """It works on files of the llmos filesystem (reads_fs, writes_fs)."""
    return bool(syscall.capabilities & {"reads_fs", "writes_fs"}) and not syscall.places


def _on_host_files(syscall: Syscall) -> bool:
    """It takes a path to a host place it reaches (an MCP filesystem server's tool)."""
    return bool(syscall.places) and takes_a_path(syscall.parameters)


def _reaches(syscall: Syscall, paths: list[str]) -> bool:
    return all(any(inside(path, place) for place in syscall.places) for path in paths)


def _name_words(syscall: Syscall) -> str:
    return re.sub(r"[_\-.]+", " ", syscall.name.rsplit(".", 1)[-1]).strip()


def _first_sentence(syscall: Syscall) -> str:
    return syscall.description.split(". ")[0].strip().rstrip(".") or _name_words(syscall)
