"""The memory driver: ``recall`` finds what was said earlier in this conversation.

When a conversation outgrows the model's context, the kernel's memory moves its oldest
messages to swap: they stay in the filesystem, marked ``swapped``, and leave only a short
summary in the prompt. ``recall`` searches them with the filesystem's FTS5 index of
messages (stemmed; any of the query's words, messages with more of them first), and only
the calling process's: one conversation never reads another's. Messages still in the
context are not searched: the model sees those already.
"""

from __future__ import annotations

import re
from typing import Any

from llmos_shell import DriverStatus, SyscallContext, UsageError, hookimpl

#: Most messages recall returns, and the characters shown of each.
MAX_MATCHES = 3
MATCH_CHARS = 300
#: Longest query accepted, in characters.
MAX_QUERY = 300
# Looked up in many more rows than shown: the kernel's own call text is dropped after the search.
SEARCHED = 30

# Words every question has ("what did I tell you ..."): searched for only when the query has no other.
_COMMON = frozenset("""a an the and or of to in on at for with about from by is are was were be been am do did
does done i me my mine you your we us our it its this that these those what which who whom whose when where
why how again earlier before ago said say tell told telling remind reminded mention mentioned talk talked
gave give given ask asked there here have has had can could would should will please just
""".split())
_WORD = re.compile(r"\w+(?:'\w+)?")
# The kernel's record of a call it made ("<tool_call>{...}"): not something anyone said.
_CALL_TEXT = re.compile(r"^\s*<tool_call>")
_SPEAKERS = {"user": "you said", "assistant": "I said", "tool": "a function returned"}


def _search_words(query: str) -> str:
    """The query's words worth searching for; all of them if every one is common."""
    words = _WORD.findall(query)
    rare = [w for w in words if w.lower() not in _COMMON and w.lower().split("'")[0] not in _COMMON]
    return " ".join(rare or words)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MATCH_CHARS else text[:MATCH_CHARS].rsplit(" ", 1)[0] + "…"


def recall(ctx: SyscallContext, query: str) -> dict[str, Any]:
    """Look up what was said earlier in this conversation that is no longer in view: facts, names, numbers or codes the user gave before.

    Args:
        query: A few words of what to look up, such as "locker code" or "sister's name".
    """
    if not query.strip():
        raise UsageError("nothing to recall: give a few words of what was said, such as 'locker code'")
    if len(query) > MAX_QUERY:
        raise UsageError(f"the query is too long ({len(query)} characters, at most {MAX_QUERY})")
    if ctx.pid is None:
        raise UsageError("recall searches the calling conversation's earlier messages: there is none in a call by hand")
    words = _search_words(query)
    if not words:
        raise UsageError(f"nothing to recall in {query!r}: give at least one word")
    rows = ctx.fs.search_messages(words, limit=SEARCHED, pid=ctx.pid, swapped=True, any_word=True)
    rows = [r for r in rows if not _CALL_TEXT.match(r["content"])]
    # What was stated answers a question better than the same question asked before (FTS ranks
    # "what was my locker code?" next to "my locker code is 4817"): questions come after statements.
    rows.sort(key=lambda r: r["content"].rstrip().endswith("?"))   # stable: bm25 order within each
    matches = [{"role": r["role"], "seq": r["seq"], "said": _clip(r["content"])} for r in rows[:MAX_MATCHES]]
    if not matches:
        # Nothing to show: the kernel leaves the reply to the model, which still sees the messages
        # in its context (a fact said a few turns ago), and answers a statement ("my code is 4817")
        # as such.
        return {"query": query, "matches": [], "found": None,
                "note": f"Nothing about {query.strip()!r} was found in the earlier part of this conversation."}
    if len(matches) == 1:
        found = f"Earlier {_SPEAKERS.get(matches[0]['role'], matches[0]['role'])}: \"{matches[0]['said']}\""
    else:
        found = "Earlier in this conversation:\n" + "\n".join(
            f"- {_SPEAKERS.get(m['role'], m['role'])}: \"{m['said']}\"" for m in matches)
    return {"query": query, "matches": matches, "found": found}


RECALL_EXAMPLES = [
    "What did I tell you my sister's name was?",
    "Remind me what we said about the budget earlier",
    "What was the code I gave you at the start?",
    "Do you remember what I told you about my flight?",
    "What was the number I mentioned before?",
    "Remind me of the address I gave you",
    "Earlier I told you where I parked. Where was it?",
    "What did I say my favourite colour was?",
    "Which date did I give you for the meeting?",
]


@hookimpl
def register_syscalls(register) -> None:
    register(recall, capabilities=["read_only"], examples=RECALL_EXAMPLES, output="found", timeout=10)


@hookimpl
def driver_status(system) -> DriverStatus:
    return DriverStatus("memory", True, backend="FTS5 over the process's swapped messages")
