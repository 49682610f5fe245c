"""Memory: a process's context window, kept within the model's token budget.

The prompt is the pinned region (system prompt and syscall table, never evicted)
followed by the working set of messages. When the prompt would not leave room
for a reply, the oldest messages are evicted to swap (they stay in the
filesystem, marked ``swapped``) in one batch, down to a low-water mark, so the
prompt prefix then stays stable for many turns and the KV cache keeps working.
Each eviction leaves a short summary in the system prompt: the topics the user
raised in what went out (the first words of each user message, no model call, so
it is fast and never wrong), and that ``recall`` finds what was said. Summaries
change only when an eviction happens, so the prefix stays stable in between.
Token counts use the model's own tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Chat-template control text that must never enter the context from data (tool output, files).
CONTROL_TEXT = re.compile(
    r"<\|[A-Za-z0-9_]{1,40}\|>|</?tool_call>|</?tool_response>|</?tools>|<\|?(?:im_start|im_end|endoftext)\|?>")

MAX_TOOL_CHARS = 3000        # a syscall result longer than this is cut in the middle
LOW_WATER = 0.6              # after an eviction the prompt uses at most this share of the budget
# Stands for the first message where the pinned region is cut from a rendered prompt.
FIRST_MESSAGE = "\u27e6first message\u27e7"
# The summaries of evictions: the words kept of each user message, the characters of one eviction's
# summary, and of them all (the oldest go first). A hint of what went out, not a copy of it: half the
# total for one eviction keeps the topics of the last two or more.
TOPIC_WORDS = 8
TOPIC_CHARS = 60
SUMMARY_CHARS = 400
EVICTION_CHARS = SUMMARY_CHARS // 2
# The syscall that looks up swapped messages (plugins/memory.py): named in the summary when the process has it.
RECALL = "recall"


def sanitise(text: str) -> str:
    """Remove chat-template control tokens from text that comes from tools or files."""
    return CONTROL_TEXT.sub("", text)


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


def topic(text: str) -> str:
    """The first words of a message, on one line, clipped: what it was about."""
    words = sanitise(text).split()
    shown = " ".join(words[:TOPIC_WORDS])
    if len(shown) > TOPIC_CHARS:
        shown = shown[:TOPIC_CHARS].rsplit(" ", 1)[0]
    return shown + ("…" if len(shown) < len(" ".join(words)) else "")


def summarise(evicted: list[dict[str, Any]], limit: int = EVICTION_CHARS) -> str:
    """One eviction's summary: the topics of its user messages in order (each once), within ``limit``
    characters; those that do not fit are counted."""
    topics = list(dict.fromkeys(t for t in (topic(m["content"]) for m in evicted if m["role"] == "user") if t))
    kept: list[str] = []
    for index, text in enumerate(topics):
        rest = len(topics) - index - 1
        candidate = "; ".join(kept + [f'"{text}"']) + (f"; {rest} more" if rest else "")
        if len(candidate) > limit:
            break
        kept.append(f'"{text}"')
    left = len(topics) - len(kept)
    return "; ".join(kept) + (f"{'; ' if kept else ''}{left} more" if left else "")


def bounded(summaries: list[str], limit: int = SUMMARY_CHARS) -> list[str]:
    """The newest summaries that fit in ``limit`` characters together (always the newest one)."""
    kept = [s for s in summaries if s]
    while len(kept) > 1 and sum(len(s) + 2 for s in kept) > limit:
        kept.pop(0)
    return kept


@dataclass
class Memory:
    """The context of one process."""

    system_prompt: str
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)   # the working set
    swapped: int = 0                                                # messages evicted so far
    summaries: list[str] = field(default_factory=list)             # of the evictions, oldest first
    store: Any = None      # the Filesystem, to record messages and mark them swapped
    pid: int | None = None

    def add(self, role: str, content: str, tokens: int = 0, **extra: Any) -> dict[str, Any]:
        if role == "tool":
            content = clip(sanitise(content), MAX_TOOL_CHARS)
        message = {"role": role, "content": content, **extra}
        if self.store is not None and self.pid is not None:
            message["seq"] = self.store.add_message(self.pid, role, content, tokens)
        self.messages.append(message)
        return message

    def _system(self) -> dict[str, Any]:
        content = self.system_prompt
        if self.swapped:
            content += (f"\n\n({self.swapped} earlier messages of this conversation were moved out of "
                        "the context to save space.")
            if self.summaries:
                content += " The user had raised: " + "; ".join(self.summaries) + "."
            if any(tool.get("function", {}).get("name") == RECALL for tool in self.tools):
                content += f" The function {RECALL} looks up what was said in them."
            content += ")"
        return {"role": "system", "content": content}

    def pinned(self, cpu, tools: list[dict[str, Any]] | None = None) -> str:
        """The text every prompt of this process starts with, before its first message: the system
        prompt and the syscall table (``tools`` as in :meth:`render`) in the model's template."""
        chat = [self._system(), {"role": "user", "content": FIRST_MESSAGE}]
        text = cpu.format_chat(chat, tools=(self.tools if tools is None else tools) or None)
        return text[:text.find(FIRST_MESSAGE)] if FIRST_MESSAGE in text else ""

    def render(self, cpu, transient: dict[str, Any] | None = None, tools: list[dict[str, Any]] | None = None,
               hide_last: int = 0) -> str:
        """The whole context as the model's chat prompt (no eviction: see :meth:`prompt`).

        ``tools`` replaces the process's syscall table for this prompt (``[]``: none shown);
        ``hide_last`` leaves out that many of the newest messages (the transient restates them)."""
        shown = self.messages[:len(self.messages) - hide_last] if hide_last else self.messages
        chat = [self._system()] + [{"role": m["role"], "content": m["content"]} for m in shown]
        if transient is not None:
            chat.append(transient)
        return cpu.format_chat(chat, tools=(self.tools if tools is None else tools) or None)

    def prompt(self, cpu, reserve: int, transient: dict[str, Any] | None = None,
               tools: list[dict[str, Any]] | None = None, hide_last: int = 0) -> tuple[str, int]:
        """The prompt for the next generation and its token count, leaving ``reserve`` tokens to reply.

        ``transient`` is a last message shown this time only (not kept in the context); ``tools``
        as in :meth:`render`."""
        budget = cpu.n_ctx - reserve
        prompt = self.render(cpu, transient, tools, hide_last)
        used = cpu.count_tokens(prompt)
        if used <= budget:
            return prompt, used
        evicted: list[dict[str, Any]] = []
        earlier = self.summaries
        while len(self.messages) > 1 + hide_last and used > budget * LOW_WATER:
            evicted.append(self.messages.pop(0))
            self.swapped += 1
            # the summary is part of the prompt measured: kept up to date as the batch grows
            self.summaries = bounded(earlier + [summarise(evicted)])
            prompt = self.render(cpu, transient, tools, hide_last)
            used = cpu.count_tokens(prompt)
        if self.store is not None and self.pid is not None:
            self.store.mark_swapped(self.pid, [m["seq"] for m in evicted if "seq" in m])
        while used > budget:  # one message alone is too long: cut it until it fits
            last = self.messages[-1]
            excess_chars = max(64, (used - budget) * 4)
            if len(last["content"]) <= excess_chars:
                raise ValueError("the system prompt and syscall table alone do not fit the context")
            last["content"] = clip(last["content"], len(last["content"]) - excess_chars)
            prompt = self.render(cpu, transient, tools, hide_last)
            used = cpu.count_tokens(prompt)
        return prompt, used
