"""Memory: what eviction leaves in the prompt, and ``recall`` of what went to swap.

The unit tests use the scripted CPU (a token is a word) and a real database; the end-to-end
tests run a 100-turn conversation on the real default model, evicted with its own token counts.
"""

from __future__ import annotations

import json

import pytest

from llmos_shell.errors import UsageError
from llmos_shell.kernel.grammar import write_calls
from llmos_shell.kernel.language import WORDS
from llmos_shell.kernel.loop import Kernel
from llmos_shell.kernel.memory import EVICTION_CHARS, SUMMARY_CHARS, summarise, topic
from llmos_shell.testing import FakeCpu, make_system

FACT = "My locker code is 4817, please remember it for me later on today"


@pytest.fixture
def system(tmp_path):
    system = make_system(tmp_path, plugins=["llmos_plugins.memory"], cpu=FakeCpu(n_ctx=300), strict=True)
    yield system
    system.close()


def system_text(prompt: str) -> str:
    """The system message of a FakeCpu prompt."""
    return prompt.split("\n<|")[0]


def chatter(memory, turns: int, start: int = 0) -> None:
    for turn in range(start, start + turns):
        memory.add("user", f"Tell me about subject{turn} and why it matters to people")
        memory.add("assistant", "It is interesting because " + "many reasons apply here " * 3)


def evict_until_swapped(memory, cpu, seq: int) -> None:
    """Chat on, measuring the prompt after every turn as the kernel does, until message ``seq`` is swapped."""
    turn = 0
    while not any(m["seq"] == seq for m in memory.store.messages(memory.pid) if m["swapped"]):
        chatter(memory, 1, start=turn)
        memory.prompt(cpu, reserve=50)
        turn += 1
        assert turn < 200


# --- eviction leaves a summary ------------------------------------------------------------

def test_eviction_leaves_a_summary_of_the_topics_the_user_raised(system):
    cpu = system.cpu
    process = Kernel(system).spawn("t")
    memory = process.memory
    memory.add("user", FACT)
    memory.add("assistant", "Noted, I will keep that in mind. " * 3)
    before = system_text(memory.prompt(cpu, reserve=50)[0])
    assert "moved out" not in before
    chatter(memory, 12)
    prompt, used = memory.prompt(cpu, reserve=50)
    assert memory.swapped > 0 and used <= cpu.n_ctx - 50
    assert all(m["swapped"] for m in system.fs.messages(process.pid)[:memory.swapped])
    text = system_text(prompt)
    # the first words of each evicted user message, clipped; nothing of the assistant's
    assert '"My locker code is 4817, please remember it…"' in text
    assert '"Tell me about subject0 and why it matters…"' in text
    assert "Noted" not in text and "interesting" not in text
    assert "recall" in text   # the process has recall: the summary says it looks up the rest
    # no eviction, no change: the prefix the KV cache holds stays as it was
    memory.add("user", "one more short question")
    again, _ = memory.prompt(cpu, reserve=50)
    assert system_text(again) == text and memory.pinned(cpu) == memory.pinned(cpu)


def test_a_process_without_recall_is_not_told_of_it(system):
    kernel = Kernel(system)
    process = kernel.spawn("t", drivers=[])
    memory = process.memory
    memory.add("user", FACT)
    chatter(memory, 12)
    text = system_text(memory.prompt(system.cpu, reserve=50)[0])
    assert "My locker code" in text and "recall" not in text


def test_the_summary_stays_bounded_and_keeps_the_newest(system):
    cpu = system.cpu
    memory = Kernel(system).spawn("t").memory
    longest, changes, last = 0, 0, None
    for turn in range(300):
        chatter(memory, 1, start=turn)
        swapped = memory.swapped
        text = system_text(memory.prompt(cpu, reserve=50)[0])
        if text != last:
            changes += 1
            assert memory.swapped > swapped or last is None   # the summary changes only at an eviction
        last = text
        longest = max(longest, len(text))
        assert sum(len(s) + 2 for s in memory.summaries) <= SUMMARY_CHARS + 2
    assert changes > 20   # many evictions happened
    assert longest <= len(WORDS.system_prompt) + SUMMARY_CHARS + 200
    assert "subject0 " not in last                    # the oldest summaries went first
    evicted = [m for m in memory.store.messages(memory.pid) if m["swapped"] and m["role"] == "user"]
    assert topic(evicted[-1]["content"]) in last       # the latest eviction is summarised


def test_one_big_eviction_is_clipped_and_counts_what_it_leaves_out():
    batch = [{"role": "user", "content": f"Question number {i} about the weather in town {i}"} for i in range(40)]
    batch += [{"role": "tool", "content": "a result"}, {"role": "user", "content": "   "}]
    text = summarise(batch)
    assert len(text) <= EVICTION_CHARS and text.startswith('"Question number 0 about')
    shown = text.count('"') // 2
    assert text.endswith(f"; {40 - shown} more")
    assert topic("word " * 3) == "word word word" and topic("x" * 100).endswith("…")
    assert summarise([{"role": "assistant", "content": "only the assistant spoke"}]) == ""


# --- recall -------------------------------------------------------------------------------

def test_recall_is_a_read_only_syscall_of_the_bundled_drivers(tmp_path):
    system = make_system(tmp_path, cpu=FakeCpu(), strict=True)
    try:
        syscall = system.table.get("recall")
        assert syscall.driver == "memory" and syscall.output == "found" and syscall.examples
        # not a file syscall: a request that names a file is not offered recall, and it needs no path
        assert syscall.capabilities == {"read_only"}
        assert list(syscall.parameters["properties"]) == ["query"]
    finally:
        system.close()


def test_recall_finds_its_own_swapped_messages_only(system):
    kernel = Kernel(system)
    mine, other = kernel.spawn("mine"), kernel.spawn("other")
    fact = mine.memory.add("user", FACT)
    evict_until_swapped(mine.memory, system.cpu, fact["seq"])
    mine.memory.add("user", "The locker room downstairs has a new code lock")   # still in the context
    # another conversation's swapped fact is never shown
    seq = system.fs.add_message(other.pid, "user", "My locker code is 1234")
    system.fs.mark_swapped(other.pid, [seq])

    result = system.call("recall", {"query": "locker code"}, pid=mine.pid)
    assert [m["said"] for m in result["matches"]] == [FACT]
    assert result["matches"][0]["role"] == "user"
    assert "4817" in result["found"] and "1234" not in json.dumps(result)
    assert "locker room" not in json.dumps(result)
    # the other process finds its own
    assert "1234" in system.call("recall", {"query": "locker code"}, pid=other.pid)["found"]


def test_recall_ranks_what_was_stated_above_the_same_question_asked(system):
    process = Kernel(system).spawn("t")
    seqs = [system.fs.add_message(process.pid, "user", text) for text in
            ("What was my locker code again?", "Remind me, what is the locker code?", FACT)]
    system.fs.mark_swapped(process.pid, seqs)
    # a whole question as the query: the words every question has are not searched for
    result = system.call("recall", {"query": "What was my locker code?"}, pid=process.pid)
    assert result["matches"][0]["said"] == FACT and len(result["matches"]) == 3


def test_recall_says_clearly_when_nothing_was_found(system):
    process = Kernel(system).spawn("t")
    process.memory.add("user", "giraffes are tall")   # in the context, not swapped
    result = system.call("recall", {"query": "giraffes"}, pid=process.pid)
    assert result["matches"] == [] and result["found"] is None   # nothing for the user: the model replies
    assert result["note"] == "Nothing about 'giraffes' was found in the earlier part of this conversation."


@pytest.mark.parametrize("query", ["", "   ", "?!", '"', "AND(", "NEAR(", "*", '"locker', "locker AND(",
                                   "OR", "what was it?", "x" * 400, "locker:code", "-", "^locker", "NOT code"])
def test_a_bad_query_is_a_clear_error_or_no_match_never_a_crash(system, query):
    process = Kernel(system).spawn("t")
    seq = system.fs.add_message(process.pid, "user", FACT)
    system.fs.mark_swapped(process.pid, [seq])
    try:
        result = system.call("recall", {"query": query}, pid=process.pid)
    except UsageError as error:
        assert "\n" not in str(error) and str(error)
        return
    assert isinstance(result["matches"], list) and (result["found"] or result["note"])
    if "locker" in query or "code" in query:
        assert result["matches"] and "4817" in result["found"]


def test_recall_by_hand_has_no_conversation_to_search(system):
    with pytest.raises(UsageError, match="calling conversation"):
        system.call("recall", {"query": "locker code"})


def test_a_routed_request_recalls_and_replies_with_what_was_found(system):
    # the real router, the scripted CPU: it fills in the query; the reply is recall's output
    kernel = Kernel(system, max_tokens=50)
    process = kernel.spawn("t")
    fact = process.memory.add("user", FACT)
    evict_until_swapped(process.memory, system.cpu, fact["seq"])
    system.cpu.enqueue(write_calls([{"name": "recall", "arguments": {"query": "locker code"}}]))
    result = kernel.run(process, "What did I tell you my locker code was?")
    assert result.status == "ok", result.error
    assert [(r.name, r.status) for r in result.syscalls] == [("recall", "ok")]
    assert result.output == f'Earlier you said: "{FACT}"'


# --- the real model, end to end -----------------------------------------------------------

FILLER_SUBJECTS = [
    "the weather this weekend", "a good pasta recipe", "how tides work", "learning the guitar",
    "the history of Rome", "planting tomatoes", "why the sky is blue", "training for a 10k run",
    "the plot of a detective novel", "how vaccines work", "choosing a laptop", "my cat's new habits",
    "a trip to the mountains", "saving money on groceries", "how bees make honey", "the rules of chess",
    "writing a cover letter", "the best time to see the northern lights", "fixing a squeaky door",
    "some code I wrote for my website", "learning Spanish", "a board game for four players",
]


FILLER_QUESTIONS = ["Can you tell me a little about {}?", "What do you know about {}?",
                    "I was reading about {} today. Anything I should know?", "Any tips on {}?",
                    "Let's talk about {} for a moment."]


def hundred_turns(memory, cpu, reserve: int, fact: str) -> None:
    """Turns 1-100 of a conversation, turn 3 stating ``fact``: added to the memory directly (97 real
    replies would take too long), each followed by the prompt the kernel would build, so eviction
    happens as in a real conversation, with the model's own token counts."""
    for turn in range(1, 101):
        if turn == 3:
            memory.add("user", fact)
            memory.add("assistant", "Got it, I will remember that.")
        else:
            subject = FILLER_SUBJECTS[turn % len(FILLER_SUBJECTS)]
            memory.add("user", FILLER_QUESTIONS[turn % len(FILLER_QUESTIONS)].format(subject))
            memory.add("assistant", f"Sure. {subject.capitalize()} is a big topic, so here is a short "
                                    "overview with the main points and one practical tip to start with.")
        memory.prompt(cpu, reserve=reserve, tools=[])   # the routed reply's prompt: no syscall table


@pytest.mark.model
@pytest.mark.parametrize("fact, question, answer", [
    ("My locker code is 4817.", "What was my locker code?", "4817"),
    ("By the way, I parked the car on level 6 in bay 213 of the station garage.",
     "Where did I say I left the car?", "213"),
])
def test_a_fact_from_turn_3_is_recalled_after_100_turns(tmp_path, default_cpu, fact, question, answer):
    system = make_system(tmp_path / "home", cpu=default_cpu, strict=True)
    try:
        default_cpu.reset()
        kernel = Kernel(system)
        process = kernel.spawn("chat")
        hundred_turns(process.memory, default_cpu, kernel.max_tokens, fact)
        stated = next(m for m in system.fs.messages(process.pid) if m["content"] == fact)
        assert stated["swapped"] and len(process.memory.summaries) >= 2   # several evictions
        assert all(m["content"] != fact for m in process.memory.messages)   # out of the working set

        result = kernel.run(process, question, seed=0)
        assert result.status == "ok", result.error
        assert [r.name for r in result.syscalls] == ["recall"], result.plan
        # the reply is what recall found in swap
        assert answer in result.syscalls[0].result["found"], (result.syscalls[0].arguments, result.syscalls[0].result)
        assert answer in result.output, result.output
    finally:
        system.unload_cpu()   # the session's CPU stays open
        system.close()


def test_when_recall_finds_nothing_the_model_replies(system):
    """A question about the past that recall has nothing for (the answer is still in the context,
    or was never said): recall has nothing to show, so the model answers,
    as if no syscall had run (its call stays in the audit log, not in what the model is shown)."""
    kernel = Kernel(system, max_tokens=50)
    process = kernel.spawn("t")
    system.cpu.enqueue(write_calls([{"name": "recall", "arguments": {"query": "locker code"}}]),
                       "Got it: your locker code is 4817.")
    result = kernel.run(process, "What did I say my locker code was?")
    assert result.status == "ok", result.error
    assert [(r.name, r.status) for r in result.syscalls] == [("recall", "ok")]
    assert result.output == "Got it: your locker code is 4817."
    reply_prompt = system.cpu.prompts[-1]
    assert "recall" not in reply_prompt.split("<|system|>")[-1].split("\n<|user|>", 1)[-1]
