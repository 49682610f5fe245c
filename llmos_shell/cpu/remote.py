"""A remote CPU: the :class:`Cpu` interface over HTTP to an OpenAI-compatible model server.

Users who outgrow one machine run the model elsewhere: llama.cpp's ``llama-server``,
llama-cpp-python's ``python -m llama_cpp.server`` or vLLM. What each can do is found out
once, at connection (:meth:`RemoteCpu._detect`):

==================  ==========================  ==========================  =====================
                    llama.cpp server            llama-cpp-python server     vLLM
==================  ==========================  ==========================  =====================
completion          ``/completion`` (native)    ``/v1/completions``         ``/v1/completions``
grammar (GBNF)      ``grammar``                 ``grammar``                 ``structured_outputs``
                                                                            (``guided_grammar``
                                                                            before 0.10.2)
next-token probs    ``n_probs``                 ``logprobs`` (top N)        ``logprobs`` (top N)
text log-prob       --                          -- (echo is off by one)     ``echo`` + ``logprobs``
tokenize            ``/tokenize``               ``/extras/tokenize``        ``/tokenize``
chat template       ``/props`` (rendered here)  the GGUF, if found here     ``/tokenize`` messages
context size        ``/props``                  its context-length error    ``max_model_len``
prompt cache        ``cache_prompt``            automatic (prefix reuse)    automatic (APC)
context switch      ``/slots/0?action=save``    --                          --
                    and ``restore`` (with
                    ``--slot-save-path``)
==================  ==========================  ==========================  =====================

With a ``llama-server`` started with ``--slot-save-path``, every request goes to slot 0 and
the CPU can snapshot (:attr:`RemoteCpu.can_snapshot`): a context switch saves the slot to a
file on the server (named by a hash of its tokens) and restores the incoming process's file
(see :mod:`llmos_shell.kernel.snapshots`). The server checks the restored tokens against each
prompt (``cache_prompt``), so a stale file is never wrong, only useless. A decision (the
relevance test scores a short unrelated text) is framed by a save and a restore of the slot too,
as the in-process CPU keeps its KV cache around one: the conversation is not evaluated again after
it, and its cache holds the same values on both CPUs (same logits, same calls). For the same
reason a call's prompt is evaluated in two requests there, all but its last token and then that
one alone, as ``LlamaCpu`` does (:meth:`RemoteCpu._fill_but_last`).

A feature the server lacks is logged once as a note (:attr:`RemoteCpu.notes`) and degrades
the way the kernel already handles: no next-token probabilities means the kernel decodes a
candidate call and checks it; no text log-probability skips the relevance test; no grammar
is an error at the first call, never an unconstrained "call". Requests time out, 429 and 503
are retried with backoff, and every failure is one line (:class:`LlmosError`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

from llmos_shell.cpu.base import Cpu, Generation, GenerationStats, SequenceState
from llmos_shell.errors import LlmosError, UsageError

log = logging.getLogger("llmos.cpu.remote")

PREFIX = "remote:"
CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 600.0      # seconds between two pieces of an answer (a long prefill on a big model)
RETRIES = 4                  # further tries after a 429 or 503
BACKOFF = 0.5                # seconds before the first retry, doubled each time
TOP_N = 20                   # next-token candidates asked for (vLLM allows 20 by default)
FALLBACK_CTX = 2048
# A prompt longer than any context: llama-cpp-python's refusal of it names its context size.
CTX_PROBE_TOKENS = 1 << 18


class ServerRefused(LlmosError):
    """The server answered with an HTTP error."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def remote_url(model: str | None) -> str | None:
    """The server that ``--model remote:URL`` names, else ``LLMOS_CPU_URL``, else None."""
    if model and model.startswith(PREFIX):
        return model[len(PREFIX):]
    return os.environ.get("LLMOS_CPU_URL") or None


def _starts(piece: str, texts: Sequence[str]) -> bool:
    """Does a token's text start one of ``texts`` (leading spaces aside), as LlamaCpu matches them?"""
    piece = piece.lstrip(" \n\t")
    return bool(piece) and any(piece.startswith(t) or (len(piece) >= 3 and t.startswith(piece)) for t in texts)


class RemoteCpu(Cpu):
    """A model served over HTTP. Thread-safe: requests are independent (the server queues them)."""

    def __init__(self, url: str, *, api_key: str | None = None, model: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = RETRIES, n_ctx: int | None = None,
                 chat_template: str | None = None) -> None:
        import httpx

        url = url.strip().rstrip("/")
        if not re.match(r"https?://[^/]+", url):
            raise UsageError(f"remote CPU: {url!r} is not an http(s) URL (e.g. remote:http://127.0.0.1:8080)")
        self.url = re.sub(r"/v1$", "", url)
        self.timeout = timeout
        self.retries = retries
        self.notes: list[str] = []
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers,
                                  timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT))
        self._last_top: tuple[str, dict[str, float]] | None = None   # the last decision, reused by a reply
        self._lock = threading.Lock()
        self._formatter = None
        self.slot: int | None = None             # the server slot requests go to (slot save/restore)
        self._slot_text: str | None = None      # the last prompt the slot evaluated (its KV prefix)
        self._slot_tokens: tuple[int, ...] | None = None
        self._token_cache: tuple[str, list[int]] | None = None
        try:
            self._detect(model, n_ctx, chat_template)
        except BaseException:
            self._http.close()
            raise

    # --- HTTP ------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: Any = None, *, stream: bool = False):
        """The response to one request (status below 400), retrying 429/503 with backoff."""
        import httpx

        for attempt in range(self.retries + 1):
            try:
                request = self._http.build_request(method, path, json=body)
                response = self._http.send(request, stream=stream)
            except httpx.ConnectError as error:
                raise LlmosError(f"cannot reach the CPU server at {self.url} ({_reason(error)})") from None
            except httpx.TimeoutException:
                raise LlmosError(f"the CPU server at {self.url} did not answer {path} within "
                                 f"{self.timeout:g} s") from None
            except httpx.RemoteProtocolError as error:
                # a kept-alive connection the server closed while idle (llama-server closes them
                # after 5 s): the request never reached it, so it is sent once more on a new one
                if attempt < self.retries and "without sending a response" in str(error):
                    log.info("%s %s: the server closed an idle connection, sending again", method, path)
                    continue
                raise LlmosError(f"the CPU server at {self.url} dropped the connection ({path}: "
                                 f"{_reason(error)})") from None
            except httpx.TransportError as error:
                raise LlmosError(f"the CPU server at {self.url} dropped the connection ({path}: "
                                 f"{_reason(error)})") from None
            status = response.status_code
            if status in (429, 503) and attempt < self.retries:
                delay = _retry_after(response) or BACKOFF * 2 ** attempt
                response.close()
                log.info("%s %s: HTTP %d, retrying in %.1f s", method, path, status, delay)
                time.sleep(delay)
                continue
            if status < 400:
                return response
            if stream:
                response.read()
            response.close()
            if status in (401, 403):
                raise ServerRefused(f"the CPU server at {self.url} refused the API key (HTTP {status}); "
                                    "set LLMOS_CPU_API_KEY", status)
            raise ServerRefused(f"the CPU server at {self.url} refused {path}: HTTP {status}: "
                                f"{_error_text(response)}", status)
        raise AssertionError("unreachable")

    def _post(self, path: str, body: Any = None, method: str = "POST") -> dict[str, Any]:
        response = self._send(method, path, body)
        return self._decode(response.content, path)

    def _probe(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        """The JSON at ``path``, or None if the server has no such route (or refuses the probe)."""
        try:
            return self._post(path, body, method)
        except ServerRefused as error:
            if error.status in (401, 403):
                raise
            return None

    def _decode(self, raw: bytes | str, path: str) -> dict[str, Any]:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise LlmosError(f"the CPU server at {self.url} sent malformed JSON for {path}: {_clip(raw)}")
        return value

    def _events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The JSON objects of a server-sent-event stream; closing the iterator closes the connection
        (the server stops generating)."""
        import httpx

        response = self._send("POST", path, body, stream=True)
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = self._decode(data, path)
                if "error" in event:
                    raise LlmosError(f"the CPU server at {self.url} failed mid-generation: "
                                     f"{_error_text(event)}")
                yield event
        except httpx.TimeoutException:
            raise LlmosError(f"the CPU server at {self.url} sent nothing for {self.timeout:g} s") from None
        except httpx.TransportError as error:
            raise LlmosError(f"the CPU server at {self.url} broke off the generation ({_reason(error)}); "
                             "is it still running?") from None
        finally:
            response.close()

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.warning("remote CPU %s: %s", self.url, text)

    # --- what the server can do --------------------------------------------------------------

    def _detect(self, model: str | None, n_ctx: int | None, chat_template: str | None) -> None:
        listing = self._post("/v1/models", method="GET")
        cards = [c for c in listing.get("data") or [] if isinstance(c, dict) and c.get("id")]
        if not cards:
            raise LlmosError(f"the CPU server at {self.url} lists no model at /v1/models")
        if model and model not in [c["id"] for c in cards]:
            raise UsageError(f"the CPU server at {self.url} does not serve {model!r}; it serves: "
                             + ", ".join(c["id"] for c in cards))
        card = next(c for c in cards if c["id"] == model) if model else cards[0]
        self.model_id = card["id"]
        self.name = os.path.basename(self.model_id.rstrip("/")) or self.model_id
        self.sha256 = None
        self.top_n: int | None = TOP_N          # next-token candidates, None: no probabilities
        self.grammar_field: str | None = "grammar"
        self.text_logprobs = False
        self._tokenize_path: str | None = None
        self._server_template = False            # vLLM renders the chat template itself
        props = self._probe("GET", "/props")
        if props is not None and "default_generation_settings" in props:
            self.kind = "llama.cpp"
            self._tokenize_path = "/tokenize"
            settings = props.get("default_generation_settings") or {}
            served_ctx = props.get("n_ctx") or settings.get("n_ctx")
            chat_template = chat_template or props.get("chat_template")
            bos, eos = props.get("bos_token") or "", props.get("eos_token") or ""
            self._detect_slots()
        elif self._probe("POST", "/extras/tokenize", {"input": "", "model": self.model_id}) is not None:
            self.kind = "llama-cpp-python"
            self._tokenize_path = "/extras/tokenize"
            served_ctx = self._probe_context()
            bos = eos = ""
            self._note("no log-probability of a given text (its echo log-probs are off by one token): "
                       "the kernel skips its relevance test of calls")
        else:
            version = self._probe("GET", "/version") or {}
            served_ctx = card.get("max_model_len")
            bos = eos = ""
            if "version" in version and (card.get("owned_by") == "vllm" or served_ctx):
                self.kind = "vllm"
                self._tokenize_path = "/tokenize"
                self._server_template = not chat_template
                self.text_logprobs = True
                # vLLM 0.10.2 replaced guided_grammar by structured_outputs.
                self.grammar_field = "structured_outputs" if _version(version["version"]) >= (0, 10, 2) \
                    else "guided_grammar"
            else:
                self.kind = "openai"
                self.grammar_field = None
                self._note("an OpenAI-compatible server of unknown make: no grammar, so no syscalls")
                self._note("no tokenizer endpoint: token counts are estimated (4 characters a token)")
        self.n_ctx = int(n_ctx or served_ctx or FALLBACK_CTX)
        if not (n_ctx or served_ctx):
            self._note(f"its context size is unknown: assuming {FALLBACK_CTX} tokens (set LLMOS_CPU_CTX)")
        if chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(template=chat_template, eos_token=eos, bos_token=bos)
        log.info("remote CPU %s: %s serving %s, context %d", self.url, self.kind, self.model_id, self.n_ctx)

    def _detect_slots(self) -> None:
        """Slot save/restore, if the server was started with ``--slot-save-path``: an unknown action
        is refused with 400 then, and with 501 (not supported) without it. Nothing changes."""
        try:
            self._post("/slots/0?action=llmos-probe", {})
        except ServerRefused as error:
            if error.status == 400:
                self.slot = 0
                self.can_snapshot = True
                log.info("remote CPU %s: context switches by slot save/restore", self.url)
            elif error.status in (401, 403):
                raise

    def _probe_context(self) -> int | None:
        """llama-cpp-python's context size, from its refusal of a prompt longer than any context."""
        try:
            self._post("/v1/completions", {"model": self.model_id, "prompt": " a" * CTX_PROBE_TOKENS,
                                           "max_tokens": 1})
        except ServerRefused as error:
            found = re.search(r"context (?:length is|window of) (\d+)", str(error))
            return int(found.group(1)) if found else None
        return None

    @property
    def needs_template(self) -> bool:
        """True when prompts would be plain transcripts: the caller may supply the model's template
        (:meth:`use_template`)."""
        return self._formatter is None and not self._server_template

    def use_template(self, chat_template: str, bos_token: str = "", eos_token: str = "") -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._formatter = Jinja2ChatFormatter(template=chat_template, eos_token=eos_token, bos_token=bos_token)

    # --- interface ------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        cached = self._token_cache
        if cached is not None and cached[0] == text:
            return list(cached[1])
        tokens = self._tokenize(text)
        self._token_cache = (text, tokens)
        return list(tokens)

    def _tokenize(self, text: str) -> list[int]:
        if self._tokenize_path is None:
            return list(range(max(1, len(text) // 4)))  # an estimate, noted at connection
        if self.kind == "llama.cpp":
            body: dict[str, Any] = {"content": text, "add_special": True, "parse_special": True}
        elif self.kind == "vllm":
            body = {"model": self.model_id, "prompt": text, "add_special_tokens": True}
        else:
            body = {"model": self.model_id, "input": text}
        tokens = self._post(self._tokenize_path, body).get("tokens")
        if not isinstance(tokens, list):
            raise LlmosError(f"the CPU server at {self.url} sent no tokens for {self._tokenize_path}")
        # llama.cpp may give [{"id": .., "piece": ..}] objects
        return [t["id"] if isinstance(t, dict) else t for t in tokens]

    def format_chat(self, messages, tools=None) -> str:
        if self._formatter is not None:
            return self._formatter(messages=list(messages), tools=list(tools) if tools else None).prompt
        if self._server_template:
            body = {"model": self.model_id, "messages": list(messages), "add_generation_prompt": True,
                    "add_special_tokens": False, **({"tools": list(tools)} if tools else {})}
            tokens = self._post("/tokenize", body).get("tokens")
            text = self._post("/detokenize", {"model": self.model_id, "tokens": tokens}).get("prompt")
            if not isinstance(text, str):
                raise LlmosError(f"the CPU server at {self.url} sent no prompt for /detokenize")
            return text
        lines = [f"{m['role']}: {m.get('content') or ''}" for m in messages]
        return "\n".join(lines) + "\nassistant:"

    def _sampling(self, temperature: float, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"temperature": temperature, "top_k": 1 if temperature == 0 else 40}
        if seed is not None:
            body["seed"] = seed
        if self.kind == "llama-cpp-python":
            body["repeat_penalty"] = 1.0   # its server's default is 1.1; in-process llmos uses 1.0
        return body

    def _completion(self, prompt: str, max_tokens: int, *, grammar: str | None = None,
                    stop: Sequence[str] = (), extra: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """The route and body of a completion request in the server's own dialect."""
        if self.kind == "llama.cpp":
            body: dict[str, Any] = {"prompt": prompt, "n_predict": max_tokens, "cache_prompt": True}
            if self.slot is not None:  # the slot a context switch saves and restores
                body["id_slot"] = self.slot
                self._slot_text, self._slot_tokens = prompt, None
        else:
            body = {"model": self.model_id, "prompt": prompt, "max_tokens": max_tokens}
        if stop:
            body["stop"] = list(stop)
        if grammar:
            if self.grammar_field is None:
                raise LlmosError(f"the CPU server at {self.url} cannot constrain decoding to a grammar, "
                                 "which syscalls need (use llama.cpp's server, llama-cpp-python's or vLLM)")
            body[self.grammar_field] = {"grammar": grammar} if self.grammar_field == "structured_outputs" \
                else grammar
        body.update(extra or {})
        return ("/completion" if self.kind == "llama.cpp" else "/v1/completions"), body

    def generate(self, prompt, *, max_tokens=512, grammar=None, stop=(), seed=None, temperature=0.0,
                 on_token=None, cancel=None, ban_first=()) -> Generation:
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        head = self._first_token(prompt, tuple(ban_first), temperature, seed) if ban_first and not grammar else ""
        filled = self._fill_but_last(prompt) if (grammar or seed is not None) and not head else {}
        path, body = self._completion(prompt + head, max(1, max_tokens - bool(head)), grammar=grammar, stop=stop,
                                      extra={**self._sampling(temperature, seed), "stream": True})
        if self.kind == "vllm":
            body["stream_options"] = {"include_usage": True}
        stats = GenerationStats()
        pieces: list[str] = []
        finish = "stop"
        first = last = None
        usage: dict[str, Any] = {}
        if head:
            first = last = time.perf_counter()
            pieces.append(head)
            stats.decode_tokens += 1
            if on_token is not None:
                on_token(head)
        events = self._events(path, body)
        try:
            for event in events:
                piece, done, usage = self._piece(event, usage)
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    stats.decode_tokens += 1
                    pieces.append(piece)
                    if on_token is not None:
                        on_token(piece)
                if done:
                    finish = done
                if cancel.is_set():
                    finish = "cancelled"
                    break
        finally:
            events.close()  # the connection closes: the server stops generating
        text = "".join(pieces)
        if grammar and finish == "stop":
            text = text.strip()  # the server decodes on to the end token; LlamaCpu stops at completion
        self._fill_stats(stats, usage, prompt)
        if filled.get("evaluated") is not None:  # the prompt was evaluated in two requests
            stats.prefill_tokens += int(filled["evaluated"])
            stats.cached_tokens = int(filled.get("cached") or 0)
        stats.clock(started, first, last)
        return Generation(text=text, finish_reason=finish, stats=stats)

    def _fill_but_last(self, prompt: str) -> dict[str, Any]:
        """Evaluate all of ``prompt`` but its last token, so that the generation evaluates that one
        alone, as ``LlamaCpu`` does before a call or a seeded reply: the last token's logits differ
        by rounding between a batch and a single-token decode, and near-ties between two tokens
        (``,`` or ``}}`` after an argument) are decided at that level. The same tokens in the same
        batches give the same calls on both CPUs. llama-server only; returns that request's usage.
        Skipped when the slot already holds all but the last token (it evaluates that one alone)."""
        if self.kind != "llama.cpp" or self.slot is None or self._tokenize_path is None:
            return {}
        tokens = self.tokenize(prompt)
        if len(tokens) < 2 or self.cached_prefix(tokens) >= len(tokens) - 1:
            return {}
        path, body = self._completion(prompt, 0, extra=self._sampling(0.0, None))
        body["prompt"] = tokens[:-1]
        answer = self._post(path, body)
        self._slot_text, self._slot_tokens = None, tuple(tokens[:-1])
        return self._usage_of(answer)

    def _piece(self, event: dict[str, Any], usage: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
        """One stream event: its text, its finish reason if it is the last, and any usage it carries."""
        if self.kind == "llama.cpp":
            done = None
            if event.get("stop"):
                done = "length" if event.get("stopped_limit") or event.get("stop_type") == "limit" else "stop"
                timings = event.get("timings") or {}
                usage = {"prompt_tokens": event.get("tokens_evaluated") or timings.get("prompt_n"),
                         "evaluated": timings.get("prompt_n"), "cached": timings.get("cache_n"),
                         "completion_tokens": timings.get("predicted_n")}
            return event.get("content") or "", done, usage
        choices = event.get("choices") or []
        if event.get("usage"):
            usage = event["usage"]
        if not choices:
            return "", None, usage
        choice = choices[0]
        return choice.get("text") or "", choice.get("finish_reason"), usage

    def _fill_stats(self, stats: GenerationStats, usage: dict[str, Any], prompt: str) -> None:
        evaluated, cached = usage.get("evaluated"), usage.get("cached")
        if evaluated is not None:  # llama.cpp's timings: tokens evaluated now, and reused from its cache
            total = usage.get("prompt_tokens") or evaluated
            stats.prefill_tokens = int(evaluated)
            stats.cached_tokens = int(cached if cached is not None else max(0, total - evaluated))
        else:
            prompt_tokens = usage.get("prompt_tokens")
            if prompt_tokens is None:  # llama-cpp-python's stream carries no usage
                prompt_tokens = self.count_tokens(prompt)
            stats.cached_tokens = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            stats.prefill_tokens = max(0, int(prompt_tokens) - stats.cached_tokens)
        if usage.get("completion_tokens"):
            stats.decode_tokens = int(usage["completion_tokens"])

    # --- probabilities ----------------------------------------------------------------------

    def _top(self, prompt: str) -> dict[str, float]:
        """The ``TOP_N`` likeliest next tokens' texts and log-probabilities (same text: summed)."""
        with self._lock:
            if self._last_top is not None and self._last_top[0] == prompt:
                self.decision_stats = GenerationStats()  # answered without asking the server again
                return self._last_top[1]
        started = time.perf_counter()
        if self.kind == "llama.cpp":
            path, body = self._completion(prompt, 1, extra={"n_probs": self.top_n, **self._sampling(0.0, None)})
        else:
            path, body = self._completion(prompt, 1, extra={"logprobs": self.top_n, **self._sampling(0.0, None)})
        answer = self._post(path, body)
        top = self._top_of(answer, path)
        stats = GenerationStats()
        self._fill_stats(stats, self._usage_of(answer), prompt)
        stats.decode_tokens = 0
        stats.clock(started, None, None)
        self.decision_stats = stats
        with self._lock:
            self._last_top = (prompt, top)
        return top

    def _usage_of(self, answer: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "llama.cpp":
            timings = answer.get("timings") or {}
            return {"prompt_tokens": answer.get("tokens_evaluated") or timings.get("prompt_n"),
                    "evaluated": timings.get("prompt_n"), "cached": timings.get("cache_n")}
        return answer.get("usage") or {}

    def _top_of(self, answer: dict[str, Any], path: str) -> dict[str, float]:
        pairs: list[tuple[str, float]] = []
        try:
            if self.kind == "llama.cpp":
                entry = answer["completion_probabilities"][0]
                if "top_logprobs" in entry:      # llama.cpp since 2025
                    pairs = [(t["token"], float(t["logprob"])) for t in entry["top_logprobs"]]
                else:                            # older: probabilities
                    pairs = [(p["tok_str"], math.log(max(p["prob"], 1e-45))) for p in entry["probs"]]
            else:
                top = answer["choices"][0]["logprobs"]["top_logprobs"][0]
                pairs = [(text, float(value)) for text, value in top.items()]
        except (KeyError, IndexError, TypeError, ValueError):
            raise LlmosError(f"the CPU server at {self.url} sent no next-token probabilities for {path}") from None
        out: dict[str, float] = {}
        for text, value in pairs:
            out[text] = float(_logaddexp(out[text], value)) if text in out else value
        return out

    def next_token_logprobs(self, prompt: str, candidates: Iterable[str]) -> dict[str, float]:
        """Summed over the server's top candidates only: the mass beyond them (small, for a likely
        start) is not counted, so each value is a lower bound."""
        if self.top_n is None:
            raise NotImplementedError
        top = self._top(prompt)
        out = {}
        for candidate in candidates:
            values = [v for text, v in top.items() if _starts(text, (candidate,))]
            out[candidate] = float(_logaddexp(*values)) if values else float("-inf")
        return out

    def _first_token(self, prompt: str, ban: tuple[str, ...], temperature: float, seed: int | None) -> str:
        """The first token of a reply that may not start with ``ban``: "" when the server's own greedy
        choice is allowed, else the likeliest allowed one of its top candidates (sampled when warm)."""
        if self.top_n is None:
            return ""
        top = self._top(prompt)
        allowed = {text: v for text, v in top.items() if text.strip() and not _starts(text, ban)}
        if not allowed:
            return ""  # nothing allowed among the top: let the model choose (the kernel still checks)
        if temperature == 0:
            best = max(top, key=top.get)
            return "" if best in allowed else max(allowed, key=allowed.get)
        texts = list(allowed)
        weights = [math.exp(allowed[t] / temperature) for t in texts]
        return random.Random(seed).choices(texts, weights)[0]

    def logprob(self, prefix: str, text: str) -> tuple[float, int]:
        if self.kind == "llama.cpp":
            return self._forced_logprob(prefix, text)
        if not self.text_logprobs:
            raise NotImplementedError
        started = time.perf_counter()
        path, body = self._completion(prefix + text, 1, extra={"echo": True, "logprobs": 0,
                                                                **self._sampling(0.0, None)})
        answer = self._post(path, body)
        try:
            logprobs = answer["choices"][0]["logprobs"]
            offsets, values = logprobs["text_offset"], logprobs["token_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise LlmosError(f"the CPU server at {self.url} sent no prompt log-probabilities") from None
        end = len(prefix) + len(text)
        # the tokens of ``text``: those starting at or after its first character, within the prompt
        chosen = [v for offset, v in zip(offsets, values) if len(prefix) <= offset < end and v is not None]
        stats = GenerationStats()
        self._fill_stats(stats, self._usage_of(answer), prefix + text)
        stats.decode_tokens = 0
        stats.clock(started, None, None)
        self.decision_stats = stats
        return float(sum(chosen)), len(chosen)

    def _forced_logprob(self, prefix: str, text: str) -> tuple[float, int]:
        """llama-server gives no log-probabilities of prompt tokens (no ``echo``), so the tokens of
        ``text`` (tokenized apart from ``prefix``, as the in-process CPU does) are generated after
        ``prefix`` under a grammar that allows exactly those token ids; each one's log-probability
        (``n_probs``, from the raw logits, before the grammar) is the model's for that token."""
        body = self._post("/tokenize", {"content": text, "add_special": False, "parse_special": False}).get("tokens")
        if not isinstance(body, list):
            raise LlmosError(f"the CPU server at {self.url} sent no tokens for /tokenize")
        body = [t["id"] if isinstance(t, dict) else int(t) for t in body]
        if not body:
            return 0.0, 0
        started = time.perf_counter()
        grammar = "root ::= " + " ".join(f"<[{token}]>" for token in body)
        path, request = self._completion(prefix, len(body), grammar=grammar,
                                         extra={"n_probs": 1, **self._sampling(0.0, None)})
        with self._slot_kept():
            answer = self._post(path, request)
        try:
            entries = answer["completion_probabilities"][:len(body)]
            values = [float(e["logprob"]) if "logprob" in e else math.log(max(e["prob"], 1e-45)) for e in entries]
        except (KeyError, TypeError, ValueError):
            raise LlmosError(f"the CPU server at {self.url} sent no token log-probabilities for {path}") from None
        if len(values) != len(body):
            raise LlmosError(f"the CPU server at {self.url} scored {len(values)} of {len(body)} tokens")
        stats = GenerationStats()
        self._fill_stats(stats, self._usage_of(answer), prefix)
        stats.decode_tokens = 0
        stats.clock(started, None, None)
        self.decision_stats = stats
        return float(sum(values)), len(values)

    # --- context switches on the server: slot save/restore (llama-server --slot-save-path) ---

    can_snapshot = False

    def model_sha256(self) -> str | None:
        """What a slot file is tied to: this server and the model it serves (no file hash is known)."""
        return hashlib.sha256(f"{self.url}|{self.model_id}".encode()).hexdigest()

    @contextmanager
    def _slot_kept(self):
        """Score other text without losing the slot's conversation: the slot is saved to a file
        before and restored after (tens of milliseconds, against evaluating the conversation again),
        as the in-process CPU copies its KV cells out and back (``LlamaCpu._w_cache_kept``)."""
        try:
            saved = self.save_sequence_state()
        except LlmosError as error:   # not kept: the next prompt is evaluated in full, nothing worse
            log.warning("remote CPU %s: could not save the slot before a decision: %s", self.url, error)
            saved = None
        try:
            yield
        finally:
            if saved is not None and not self.load_sequence_state(saved):
                log.warning("remote CPU %s: could not restore the slot after a decision", self.url)

    def _held(self) -> tuple[int, ...]:
        """The tokens the slot's KV cache starts with (the last prompt it evaluated)."""
        if self._slot_tokens is None:
            self._slot_tokens = tuple(self.tokenize(self._slot_text)) if self._slot_text else ()
        return self._slot_tokens

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        if self.slot is None:
            return 0
        n = 0
        for a, b in zip(self._held(), tokens):
            if a != b:
                break
            n += 1
        return n

    def save_sequence_state(self, n_tokens: int | None = None) -> SequenceState | None:
        """The slot saved to a file on the server; the state holds its name, not the KV bytes. Only
        the whole slot can be saved: a shorter ``n_tokens`` (a pinned prefix) gives None."""
        if self.slot is None:
            return None
        held = self._held()
        if not held or (n_tokens is not None and n_tokens < len(held)):
            return None
        digest = hashlib.sha256(f"{self.model_id}|".encode() + json.dumps(held).encode()).hexdigest()
        name = f"llmos-{digest[:32]}.bin"
        answer = self._post(f"/slots/{self.slot}?action=save", {"filename": name})
        reference = {"server": self.url, "file": name, "n_saved": answer.get("n_saved"),
                     "n_bytes": (answer.get("n_written") or answer.get("n_bytes")),
                     "ms": (answer.get("timings") or {}).get("save_ms")}
        return SequenceState(model_sha256=self.model_sha256(), tokens=held,
                             data=json.dumps(reference).encode())

    def load_sequence_state(self, state: SequenceState) -> bool:
        """Restore the slot from the file ``state`` names; False (the slot then empty) if the server
        refuses it (e.g. the file is gone)."""
        if self.slot is None or state.model_sha256 != self.model_sha256():
            return False
        try:
            reference = json.loads(state.data)
            name = reference["file"]
        except (ValueError, KeyError, TypeError):
            return False
        if reference.get("server") != self.url:
            return False
        try:
            self._post(f"/slots/{self.slot}?action=restore", {"filename": name})
        except ServerRefused as error:
            log.warning("remote CPU %s: slot file %s would not restore: %s", self.url, name, error)
            self._slot_text, self._slot_tokens = None, ()
            return False
        self._slot_text, self._slot_tokens = None, tuple(state.tokens)
        return True

    def close(self) -> None:
        self._http.close()


def _logaddexp(*values: float) -> float:
    top = max(values)
    if top == float("-inf"):
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    if "refused" in text.lower():
        return "connection refused: is the server running?"
    return " ".join(text.split())[:200]


def _clip(raw: bytes | str, limit: int = 80) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def _error_text(source: Any) -> str:
    """The message of an OpenAI-style or llama.cpp error body, on one line."""
    if not isinstance(source, dict):
        try:
            source = source.json()
        except ValueError:
            return _clip(source.content)
    error = source.get("error", source) if isinstance(source, dict) else source
    message = error.get("message") if isinstance(error, dict) else error
    message = message if isinstance(message, str) else json.dumps(message)
    return " ".join(message.split())[:300]


def _retry_after(response) -> float | None:
    try:
        return min(30.0, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


# --- wiring: the CPU for `--model remote:URL` / LLMOS_CPU_URL ------------------------------

def connect(config, url: str, local_model: Callable[[str], Any] = lambda name: None) -> RemoteCpu:
    """A RemoteCpu for ``url`` with settings from the environment (``LLMOS_CPU_API_KEY``,
    ``LLMOS_CPU_MODEL``, ``LLMOS_CPU_CTX``, ``LLMOS_CPU_TIMEOUT``). Where the server does not share
    its chat template, the template is read from a local copy of the model: ``LLMOS_CPU_TEMPLATE``
    (a model name or .gguf path), else the file the server names, if it is here or installed."""
    def number(variable: str, kind, default):
        text = os.environ.get(variable, "").strip()
        try:
            return kind(text) if text else default
        except ValueError:
            raise UsageError(f"{variable}: {text!r} is not a number") from None

    cpu = RemoteCpu(url, api_key=os.environ.get("LLMOS_CPU_API_KEY") or None,
                    model=os.environ.get("LLMOS_CPU_MODEL") or None,
                    timeout=number("LLMOS_CPU_TIMEOUT", float, DEFAULT_TIMEOUT),
                    n_ctx=number("LLMOS_CPU_CTX", int, None))
    hint = os.environ.get("LLMOS_CPU_TEMPLATE")
    if cpu.needs_template or hint:
        path = local_model(hint or cpu.model_id)
        if path is not None:
            from llmos_shell.cpu.gguf_check import read_metadata

            template = read_metadata(path).get("tokenizer.chat_template")
            if template:
                cpu.use_template(template)
                log.info("remote CPU: chat template from %s", path)
        elif hint:
            raise UsageError(f"LLMOS_CPU_TEMPLATE: {hint!r} is neither a .gguf file nor an installed model")
    if cpu.needs_template:
        cpu._note("no chat template (set LLMOS_CPU_TEMPLATE to a model name or .gguf): prompts are "
                  "plain transcripts")
    return cpu
