"""The in-process CPU: :class:`LlamaCpu` runs a GGUF model with llama-cpp-python
behind the :class:`~llmos_shell.cpu.base.Cpu` interface. A ``Llama`` object is not thread-safe,
so one worker thread owns it and every caller queues requests to that worker;
tokens stream back to the caller's thread, where Ctrl-C can reach them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext, redirect_stderr
from typing import Any, Callable, Iterable

from llmos_shell.cpu import hardware, llama_private, probe
from llmos_shell.cpu.base import Cpu, Generation, GenerationStats, SequenceState
from llmos_shell.cpu.sharing import MachineTurn, ThreadCount
from llmos_shell.errors import BadModelFile, LlmosError

log = logging.getLogger("llmos.cpu")

# --- llama-cpp-python in-process ------------------------------------------------------

def _log_softmax(logits):
    """Log-probabilities from logits (over the last axis), in float64."""
    import numpy as np

    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))


_STOP = object()


class _LogLines:
    """A text stream whose lines go to the log (llama.cpp's messages during a load)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        if text.strip():
            self.logger.debug("%s", text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


@contextmanager
def _llama_messages_to_log():
    """Load a model with llama.cpp's messages in the log.

    ``Llama(verbose=False)`` silences a load by pointing the whole process's file
    descriptors 1 and 2 at /dev/null; the shell loads in the background, so the
    output of commands typed meanwhile vanished with it. Loading verbose with
    Python's ``sys.stderr`` sent to the log silences the load alone."""
    try:
        with redirect_stderr(_LogLines(logging.getLogger("llmos.llama"))):
            yield
    finally:
        llama_private.quiet_library_log()   # later messages: errors only, as with verbose=False


class LlamaCpu(Cpu):
    """A GGUF model run in-process by llama-cpp-python, owned by one worker thread."""

    def __init__(self, model_path: str | os.PathLike, *, n_ctx: int | None = None, max_ctx: int = 4096,
                 n_threads: int | None = None, name: str | None = None, sha256: str | None = None,
                 seed: int = 0) -> None:
        self.model_path = str(model_path)
        self.name = name or os.path.basename(self.model_path)
        self.sha256 = sha256
        # n_threads fixes the count (LLMOS_THREADS); otherwise it follows the cores that are free
        self._threads = ThreadCount(fixed=n_threads)
        self._turn = MachineTurn()
        self.n_threads: int | None = None   # set by the load
        self.extra_buffers = self._safe_extra_buffers()
        self._requests: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="llmos-cpu", daemon=True)
        loaded: Future = Future()
        self._worker.start()
        self._requests.put((lambda _: self._load(n_ctx, max_ctx, self._threads.prime(), seed), loaded, True))
        try:
            loaded.result()
        except BadModelFile:
            raise
        except Exception as error:  # llama.cpp refused the file
            raise BadModelFile(f"{self.name}: llama.cpp could not load the model ({error})") from error

    def _safe_extra_buffers(self) -> bool:
        """The extra-buffer setting this model can decode with here, tried in a child process first
        (see cpu/probe.py): a crash of llama.cpp is one line, never a bare signal."""
        wanted = hardware.extra_buffers()
        if not os.path.isfile(self.model_path):
            return wanted   # the load says what is wrong
        crash = probe.first_decode(self.model_path, wanted)
        if crash is None:
            return wanted
        if wanted and probe.first_decode(self.model_path, False) is None:
            log.warning("%s crashed (%s) with extra weight buffers on %s; loading without them",
                        self.name, crash, hardware.describe())
            return False
        raise LlmosError(
            f"llama.cpp crashed ({crash}) at the first decode of {self.name} on {hardware.describe()}; "
            + ("try LLMOS_WEIGHT_REPACK=off, or rebuild llama-cpp-python with CMAKE_ARGS=-DGGML_NATIVE=OFF"
               if wanted else "rebuild llama-cpp-python with CMAKE_ARGS=-DGGML_NATIVE=OFF")
            + " (details in the log)")

    # everything below prefixed _w runs on the worker thread
    def _load(self, n_ctx: int | None, max_ctx: int, threads: int, seed: int) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.n_ctx = min(n_ctx or max_ctx, max_ctx)
        with hardware.model_params(self.extra_buffers), _llama_messages_to_log():
            self._llm = llama_cpp.Llama(
                model_path=self.model_path, n_ctx=self.n_ctx, n_threads=threads, n_threads_batch=threads,
                n_batch=512, use_mmap=True, seed=seed, verbose=True)   # quiet all the same: see _llama_messages_to_log
        self._llm.verbose = False   # no timings printed after each generation
        self.n_threads = threads
        meta = self._llm.metadata
        template = meta.get("tokenizer.chat_template")
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        self._eos = llama_private.token_text(self._llm, eos) if eos >= 0 else ""
        self._bos = llama_private.token_text(self._llm, bos) if bos >= 0 else ""
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=self._eos, bos_token=self._bos) \
            if template else None
        self._add_bos = meta.get("tokenizer.ggml.add_bos_token", "false") == "true"

    def _w_fit_threads(self) -> None:
        """Use as many threads as there are free cores now (a llama.cpp context setting, no reload)."""
        import llama_cpp

        threads = self._threads.choose()
        if getattr(self, "_llm", None) is not None and threads != self.n_threads:
            llama_cpp.llama_set_n_threads(self._llm.ctx, threads, threads)
            self.n_threads = threads

    def _serve(self) -> None:
        while True:
            item = self._requests.get()
            if item is _STOP:
                self._turn.close()
                return
            function, future, compute = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                # model work waits for this machine's turn (when sharing is on), with threads that fit it
                with self._turn.held() if compute else nullcontext():
                    if compute:
                        self._w_fit_threads()
                    future.set_result(function(self))
            except BaseException as error:  # handed to the caller's thread
                future.set_exception(error)

    def _submit(self, function: Callable[["LlamaCpu"], Any], compute: bool = True) -> Any:
        if not self._worker.is_alive():  # closed: say so rather than wait for a worker that is gone
            raise LlmosError(f"the CPU {self.name} is closed")
        future: Future = Future()
        self._requests.put((function, future, compute))
        return future.result()

    # --- interface ----------------------------------------------------------------------

    def _w_reusable(self, tokens: list[int], at_most: int) -> int:
        """How many of ``tokens`` the KV cache already holds (at most ``at_most``: the positions
        whose logits are needed must be evaluated again)."""
        llm = self._llm
        return min(llm.longest_token_prefix(llama_private.evaluated_tokens(llm), tokens), at_most)

    def _w_tokenize(self, text: str) -> list[int]:
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=self._add_bos, special=True)
        bos = self._llm.token_bos()
        if len(tokens) > 1 and tokens[0] == bos and tokens[1] == bos:  # template wrote a BOS too
            tokens = tokens[1:]
        return tokens

    def tokenize(self, text: str) -> list[int]:
        return self._submit(lambda cpu: cpu._w_tokenize(text), compute=False)

    def format_chat(self, messages, tools=None) -> str:
        if self._formatter is None:  # no template in the file: a plain transcript
            lines = [f"{m['role']}: {m.get('content') or ''}" for m in messages]
            return "\n".join(lines) + "\nassistant:"
        return self._formatter(messages=list(messages), tools=list(tools) if tools else None).prompt

    def generate(self, prompt, *, max_tokens=512, grammar=None, stop=(), seed=None, temperature=0.0,
                 on_token=None, cancel=None, ban_first=()) -> Generation:
        cancel = cancel or threading.Event()
        pieces: queue.Queue = queue.Queue()
        started = time.perf_counter()

        def work(cpu: "LlamaCpu") -> Generation:
            try:
                return cpu._w_generate(prompt, max_tokens, grammar, list(stop), seed, temperature, cancel,
                                       pieces.put, started, tuple(ban_first))
            finally:
                pieces.put(None)  # the end, however it ended

        future: Future = Future()
        self._requests.put((work, future, True))
        text: list[str] = []
        interrupted = False
        while True:
            # Block without a timeout: periodic wake-ups of this thread steal time from the
            # compute threads on a small machine. Ctrl-C still interrupts the wait (POSIX).
            try:
                piece = pieces.get()
            except KeyboardInterrupt:  # Ctrl-C in the caller's thread: stop the worker, keep the partial text
                cancel.set()
                interrupted = True
                continue
            if piece is None:
                break
            text.append(piece)
            if on_token is not None:
                try:
                    on_token(piece)
                except KeyboardInterrupt:
                    cancel.set()
                    interrupted = True
        generation = future.result()
        if interrupted:
            raise KeyboardInterrupt
        return generation

    def _w_generate(self, prompt, max_tokens, grammar, stop, seed, temperature, cancel, emit,
                    started, ban_first=()) -> Generation:
        llm = self._llm
        tokens = self._w_tokenize(prompt)
        if len(tokens) >= self.n_ctx:
            raise LlmosError(f"prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx}")
        max_tokens = max(1, min(max_tokens, self.n_ctx - len(tokens)))
        cached = self._w_reusable(tokens, len(tokens) - 1)
        stats = GenerationStats(prefill_tokens=len(tokens) - cached, cached_tokens=cached)
        if seed is not None or grammar:
            # The last prompt token's logits differ by rounding between a batched and a single-token
            # decode; always decoding it alone makes a seeded run (and a call, under a grammar)
            # reproducible whatever the cache holds.
            llm.n_tokens = cached
            llm.eval(tokens[cached:-1])
        if grammar:
            return self._w_generate_constrained(tokens[-1], grammar, max_tokens, cancel, emit, started, stats)
        text: list[str] = []
        finish = "stop"
        first = last = None
        stream = llm.create_completion(
            tokens, max_tokens=max_tokens, temperature=temperature, top_k=1 if temperature == 0 else 40,
            stop=stop or None, seed=seed, stream=True,
            logits_processor=self._w_ban_first(ban_first, len(tokens)) if ban_first else None)
        for chunk in stream:
            now = time.perf_counter()
            if first is None:
                first = now
            last = now
            choice = chunk["choices"][0]
            piece = choice["text"]
            if piece:
                stats.decode_tokens += 1
                text.append(piece)
                emit(piece)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
            if cancel.is_set():
                finish = "cancelled"
                stream.close()
                break
        stats.clock(started, first, last)
        return Generation(text="".join(text), finish_reason=finish, stats=stats)

    def _w_generate_constrained(self, last_token, grammar, max_tokens, cancel, emit, started,
                                stats) -> Generation:
        """Greedy decoding under a grammar, checking few tokens per step (see cpu/decoder.py)."""
        from llmos_shell.cpu import decoder

        llm = self._llm
        llm.eval([last_token])
        clock = {"first": None, "last": None}

        def on_piece(piece: str) -> None:
            now = time.perf_counter()
            clock["first"] = clock["first"] or now
            clock["last"] = now
            emit(piece)

        text, finish, count = decoder.decode(llm, grammar, max_tokens, end_tokens=self._w_end_tokens(),
                                                 emit=on_piece, cancelled=cancel.is_set)
        stats.decode_tokens = count
        stats.clock(started, clock["first"], clock["last"])
        return Generation(text=text, finish_reason=finish, stats=stats)

    def reset(self) -> None:
        """Forget the KV cache (the next prompt is evaluated from scratch): for benchmarks."""
        self._submit(lambda cpu: cpu._llm.reset())

    def next_token_logprobs(self, prompt: str, candidates: Iterable[str]) -> dict[str, float]:
        candidates = tuple(candidates)
        return self._submit(lambda cpu: cpu._w_next_token_logprobs(prompt, candidates))

    def _w_next_token_logprobs(self, prompt: str, candidates: tuple[str, ...]) -> dict[str, float]:
        import numpy as np

        llm = self._llm
        started = time.perf_counter()
        tokens = self._w_tokenize(prompt)
        # Evaluate only what the KV cache lacks; the generation that follows reuses all of it.
        reuse = self._w_reusable(tokens, len(tokens) - 1)
        llm.n_tokens = reuse
        llm.eval(tokens[reuse:])
        self.decision_stats = GenerationStats(prefill_tokens=len(tokens) - reuse, cached_tokens=reuse)
        self.decision_stats.clock(started, None, None)
        logprobs = _log_softmax(llama_private.logits(llm))
        out = {}
        for candidate in candidates:
            ids = self._w_tokens_starting_with(candidate)
            out[candidate] = float(np.logaddexp.reduce(logprobs[ids])) if len(ids) else float("-inf")
        return out

    def logprob(self, prefix: str, text: str) -> tuple[float, int]:
        return self._submit(lambda cpu: cpu._w_logprob(prefix, text))

    def _w_logprob(self, prefix: str, text: str) -> tuple[float, int]:
        started = time.perf_counter()
        stats = GenerationStats()
        with self._w_cache_kept():
            result = self._w_text_logprob(prefix, text, stats)
        stats.clock(started, None, None)
        self.decision_stats = stats
        return result

    @contextmanager
    def _w_cache_kept(self):
        """Evaluate other text without losing the conversation's KV cache.

        A decision (is this syscall about the request?) scores a short unrelated text; without this,
        the next step would evaluate the whole conversation again. llama.cpp copies out one
        sequence's cache cells (about 12 kB per token here) and puts them back."""
        saved = self._w_save_state()
        try:
            yield
        finally:
            if saved is not None and not self._w_load_state(saved):
                # not restored: the next prompt is evaluated in full, nothing worse
                log.warning("could not restore the KV cache after a decision")

    # --- KV state of sequence 0, for context switches ---------------------------------------

    can_snapshot = True

    def model_sha256(self) -> str:
        if self.sha256 is None:  # a .gguf given by path: hashed once, as the manifest would have it
            digest = hashlib.sha256()
            with open(self.model_path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
            self.sha256 = digest.hexdigest()
        return self.sha256

    def cached_prefix(self, tokens) -> int:
        tokens = list(tokens)
        return self._submit(lambda cpu: cpu._w_reusable(tokens, len(tokens)), compute=False)

    def save_sequence_state(self, n_tokens: int | None = None) -> SequenceState | None:
        sha256 = self.model_sha256()
        return self._submit(lambda cpu: cpu._w_save_state(sha256, n_tokens))

    def load_sequence_state(self, state: SequenceState) -> bool:
        if state.model_sha256 != self.model_sha256():
            return False  # another model's cache cells would be read as this one's
        return self._submit(lambda cpu: cpu._w_load_state(state))

    def kv_bytes(self) -> int | None:
        def size(cpu: "LlamaCpu") -> int:
            import llama_cpp

            return int(llama_cpp.llama_state_seq_get_size(cpu._llm.ctx, 0)) if cpu._llm.n_tokens else 0

        return self._submit(size, compute=False)

    def prefill(self, tokens) -> int:
        tokens = list(tokens)
        return self._submit(lambda cpu: cpu._w_prefill(tokens))

    def _w_prefill(self, tokens: list[int]) -> int:
        if len(tokens) >= self.n_ctx:
            raise LlmosError(f"{len(tokens)} tokens do not fit the context of {self.n_ctx}")
        llm = self._llm
        reuse = self._w_reusable(tokens, len(tokens))
        llm.n_tokens = reuse
        llama_private.forget_from(llm, reuse)   # cells past the prefix belong to another text
        llm.eval(tokens[reuse:])
        return len(tokens) - reuse

    def _w_save_state(self, sha256: str | None = None, n_tokens: int | None = None) -> SequenceState | None:
        import ctypes

        import llama_cpp

        llm = self._llm
        if llm.n_tokens == 0:
            return None
        if n_tokens is not None and n_tokens < llm.n_tokens:
            # llama.cpp saves a whole sequence: keep it aside, cut it to the first tokens, save those,
            # and put the whole back (memory copies only, nothing is evaluated again)
            whole = self._w_save_state(sha256)
            llama_private.forget_from(llm, n_tokens)
            llm.n_tokens = n_tokens
            try:
                return self._w_save_state(sha256)
            finally:
                if not self._w_load_state(whole):
                    log.warning("could not put the KV cache back after saving its first %d tokens", n_tokens)
        ctx = llm.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = bytearray(size)
        written = llama_cpp.llama_state_seq_get_data(ctx, (ctypes.c_uint8 * size).from_buffer(buffer), size, 0)
        if written != size:
            raise LlmosError(f"llama.cpp saved {written} of {size} bytes of the KV cache")
        return SequenceState(model_sha256=sha256 or "", tokens=tuple(llm.input_ids[: llm.n_tokens].tolist()),
                             data=bytes(buffer))

    def _w_load_state(self, state: SequenceState) -> bool:
        import ctypes

        import llama_cpp

        llm = self._llm
        n_tokens = len(state.tokens)
        llama_private.forget_from(llm, 0)
        llm.n_tokens = 0
        if not 0 < n_tokens < self.n_ctx:
            return False
        source = ctypes.cast(ctypes.c_char_p(state.data), ctypes.POINTER(ctypes.c_uint8))
        loaded = llama_cpp.llama_state_seq_set_data(llm.ctx, source, len(state.data), 0)
        memory = llama_cpp.llama_get_memory(llm.ctx)
        # Bytes that parse but hold another number of cells than tokens would misplace every position.
        if loaded != len(state.data) or llama_cpp.llama_memory_seq_pos_max(memory, 0) != n_tokens - 1:
            llama_private.forget_from(llm, 0)
            return False
        llm.input_ids[:n_tokens] = state.tokens
        llm.n_tokens = n_tokens
        llama_private.mark_logits_stale(llm)   # the last prompt token is evaluated again before sampling
        return True

    def _w_text_logprob(self, prefix: str, text: str, stats: GenerationStats) -> tuple[float, int]:
        import numpy as np

        llm = self._llm
        head = self._w_tokenize(prefix)
        body = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        tokens = head + body
        if not body:
            return 0.0, 0
        if len(tokens) >= self.n_ctx:
            raise LlmosError(f"{len(tokens)} tokens do not fit the context of {self.n_ctx}")
        start = len(head) - 1  # the position whose logits predict the first token of text
        reuse = self._w_reusable(tokens, start)
        llm.n_tokens = reuse
        llm.eval(tokens[reuse:start])
        # Llama.eval keeps only the last position's logits; these positions all need theirs.
        chunk, total, n_vocab = tokens[start:-1], 0.0, llm.n_vocab()
        for offset in range(0, len(chunk), llm.n_batch):
            piece = chunk[offset: offset + llm.n_batch]
            llama_private.decode_keeping_all_logits(llm, piece)
            logprobs = _log_softmax(llama_private.logits(llm, len(piece)).reshape(len(piece), n_vocab))
            targets = tokens[start + offset + 1: start + offset + 1 + len(piece)]
            total += float(logprobs[np.arange(len(targets)), targets].sum())
        stats.prefill_tokens, stats.cached_tokens = len(tokens) - 1 - reuse, reuse
        return total, len(body)

    def _w_ban_first(self, starts: tuple[str, ...], n_prompt: int):
        """A logits processor that forbids the first generated token from starting with ``starts``."""
        from llama_cpp import LogitsProcessorList
        import numpy as np

        llm = self._llm
        # End-of-turn tokens too: the first token must start some text.
        banned = np.concatenate([self._w_tokens_starting_with(s) for s in starts] + [self._w_end_tokens()])

        def ban(input_ids, scores):
            if llm.n_tokens == n_prompt:  # only before the first token
                scores[banned] = -np.inf
            return scores

        return LogitsProcessorList([ban])

    def _w_end_tokens(self):
        """Ids of the tokens that end a turn (end of generation)."""
        import llama_cpp
        import numpy as np

        if "_end_tokens" not in self.__dict__:
            vocab = llama_private.vocab(self._llm)
            self._end_tokens = np.array([i for i in range(self._llm.n_vocab())
                                         if llama_cpp.llama_vocab_is_eog(vocab, i)], dtype=np.int64)
        return self._end_tokens

    def _w_tokens_starting_with(self, text: str):
        """Ids of the tokens whose text (leading spaces aside) starts with ``text``, or is ``text``'s start."""
        import numpy as np

        cache = self.__dict__.setdefault("_starts", {})
        if text not in cache:
            if "_pieces" not in self.__dict__:
                # Vocabulary text, with the byte-level BPE / SentencePiece marks for space and newline
                # removed from the front: a fast C call per token, no detokenising.
                self._pieces = [llama_private.token_text(self._llm, i).lstrip("ĠĊ▁ \n")
                                for i in range(self._llm.n_vocab())]
            cache[text] = np.array([i for i, piece in enumerate(self._pieces)
                                    if piece and (piece.startswith(text) or (len(piece) >= 3 and text.startswith(piece)))],
                                   dtype=np.int64)
        return cache[text]

    def close(self) -> None:
        if self._worker.is_alive():
            def release(cpu: "LlamaCpu") -> None:
                llm = getattr(cpu, "_llm", None)
                if llm is not None:
                    llm.close()
                cpu._llm = None
            try:
                self._submit(release, compute=False)
            finally:
                self._requests.put(_STOP)
                self._worker.join(timeout=5)
