"""The run queue (kernel/scheduler.py): one CPU worker serving processes in order, kill, and kills
from another program, with a scripted slow CPU, a real database, and the real small model for `ps`."""

from __future__ import annotations

import re
import threading
import time

import pytest

from conftest import run_llmos
from llmos_shell.kernel.loop import Events, Kernel
from llmos_shell.kernel.scheduler import Job, RunQueue
from llmos_shell.testing import FakeCpu, make_system

STORY = " ".join(f"word{i}" for i in range(400))   # 400 tokens at 20 ms: 8 s unless stopped


class Tokens(Events):
    """Counts the tokens a job streamed, and when the first came."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.first = threading.Event()

    def token(self, text: str) -> None:
        self.pieces.append(text)
        self.first.set()


@pytest.fixture
def machine(tmp_path):
    systems = []

    def make(*replies: str, token_delay: float = 0.02):
        cpu = FakeCpu(list(replies), token_delay=token_delay)
        system = make_system(tmp_path / "home", plugins=[], cpu=cpu)
        kernel = Kernel(system, max_tokens=1000)
        queue = RunQueue(system.fs, kernel)
        systems.append((system, queue))
        return system, kernel, queue

    yield make
    for system, queue in systems:
        queue.close()
        system.close()


def status(system, pid: int) -> str:
    return system.fs.get_process(pid)["status"]


def story_and_question(kernel, queue):
    """Two processes: one streaming the long story, one queued behind it. Returns both processes,
    both jobs and the story's tokens, once the story has started."""
    story, question = kernel.spawn("story", drivers=[]), kernel.spawn("question", drivers=[])
    events = Tokens()
    jobs = queue.submit(story, "Tell me a long story", events=events), queue.submit(question, "And then?")
    assert events.first.wait(10)
    return (story, question), jobs, events


def test_jobs_run_one_at_a_time_in_the_order_submitted(machine):
    system, kernel, queue = machine("first reply", "second reply", "third reply", token_delay=0.01)
    processes = [kernel.spawn(f"p{i}", drivers=[]) for i in range(3)]
    started: list[int] = []
    original = kernel.run

    def run(process, text, **options):
        started.append(process.pid)
        assert sum(job.state == "running" for job in queue.jobs()) == 1   # never two on the CPU
        return original(process, text, **options)

    kernel.run = run
    jobs = [queue.submit(process, f"request {i}") for i, process in enumerate(processes)]
    assert {status(system, p.pid) for p in processes[1:]} == {"waiting"}
    results = [job.wait(30) for job in jobs]
    assert [r.output for r in results] == ["first reply", "second reply", "third reply"]
    assert started == [p.pid for p in processes]
    assert [status(system, p.pid) for p in processes] == ["ok", "ok", "ok"]


def test_kill_stops_a_running_process_within_a_token_and_dequeues_a_waiting_one(machine):
    system, kernel, queue = machine(STORY, "never generated")
    (running, waiting), (story, later), events = story_and_question(kernel, queue)
    time.sleep(0.2)
    assert queue.kill(waiting.pid) == "dequeued"
    killed_at = time.monotonic()
    assert queue.kill(running.pid) == "stopping"
    result = story.wait(5)
    stopped_after = time.monotonic() - killed_at
    assert result.status == "killed" and status(system, running.pid) == "killed"
    assert 0 < len(events.pieces) < 400                   # it was stopped part way ...
    assert stopped_after < 0.5, stopped_after             # ... at once (a token is 20 ms)
    assert later.wait(1).status == "killed" and status(system, waiting.pid) == "killed"
    assert system.fs.messages(waiting.pid) == []          # it never ran: its request never entered the context
    assert queue.kill(running.pid) is None                # nothing of it is left here


def test_a_kill_from_another_program_stops_the_process(machine, tmp_path):
    """`llmos kill PID` (a separate OS process, on the same home) marks it killed; the program
    running it polls the process table and stops it."""
    system, kernel, queue = machine(STORY)
    process = kernel.spawn("story", drivers=[])
    events = Tokens()
    job = queue.submit(process, "Tell me a long story", events=events)
    assert events.first.wait(10)
    killer = run_llmos("kill", str(process.pid), home=tmp_path / "home")
    assert killer.returncode == 0, killer.stderr
    assert f"killed {process.pid}" in killer.stdout
    result = job.wait(5)
    assert result is not None and result.status == "killed"
    assert len(events.pieces) < 400
    assert status(system, process.pid) == "killed"
    again = run_llmos("kill", str(process.pid), home=tmp_path / "home")
    assert again.returncode == 2 and "is not running (it ended: killed)" in again.stderr
    missing = run_llmos("kill", "999", home=tmp_path / "home")
    assert missing.returncode == 2 and "no process 999" in missing.stderr


def test_cancel_takes_a_waiting_job_off_the_queue_at_once(machine):
    system, kernel, queue = machine(STORY, "never")
    (_first, second), (running, waiting), _events = story_and_question(kernel, queue)
    assert queue.ahead_of(waiting) == 1
    queue.cancel(waiting)
    assert waiting.wait(0.5).status == "interrupted"
    assert status(system, second.pid) == "interrupted"
    assert not running.done                               # the other goes on
    queue.cancel(running)
    assert running.wait(5).status == "interrupted"


def test_close_kills_what_is_left(machine):
    system, kernel, queue = machine(STORY, "never")
    (first, second), jobs, _events = story_and_question(kernel, queue)
    queue.close()
    assert [job.wait(5).status for job in jobs] == ["killed", "killed"]
    assert [status(system, p.pid) for p in (first, second)] == ["killed", "killed"]


def test_ps_shows_context_tokens_and_kv_bytes(tmp_path, small_cpu):
    system = make_system(tmp_path / "home", plugins=[], cpu=small_cpu)
    try:
        small_cpu.reset()
        kernel = Kernel(system, max_tokens=12)
        queue = RunQueue(system.fs, kernel)
        process = kernel.spawn("chat", drivers=[])
        assert queue.run(process, "Say hello.", seed=1).status == "ok"
        queue.close()
        row = system.fs.get_process(process.pid)
        assert row["context_tokens"] == small_cpu.count_tokens(process.memory.render(small_cpu, tools=[]))
        per_token = row["kv_bytes"] / small_cpu._llm.n_tokens
        assert row["kv_bytes"] > 0 and per_token > 1000    # SmolLM2-135M: tens of KB a token
    finally:
        system.unload_cpu()
        system.close()
    listing = run_llmos("ps", home=tmp_path / "home")
    assert listing.returncode == 0, listing.stderr
    header, line = listing.stdout.splitlines()[:2]
    assert "CTX" in header and "KV" in header
    assert str(row["context_tokens"]) in line and re.search(r"\s\d+\.\dM\s", line)


def test_a_job_that_ends_just_as_the_wait_gives_up_returns_its_result(machine, monkeypatch):
    """run() waits in steps of 0.1 s: a job that ends between a step's timeout and the check after it
    gives its own result, not "no result" (seen on a loaded machine)."""
    system, kernel, queue = machine("hello")
    real_wait = Job.wait
    late = {"once": True}

    def wait(self, timeout=None):
        if late.pop("once", False):
            self.ended_within(10)   # the job ends now, but this wait "timed out" just before
            return None
        return real_wait(self, timeout)

    monkeypatch.setattr(Job, "wait", wait)
    result = queue.run(kernel.spawn("t", drivers=[]), "Hi")
    assert result.status == "ok" and result.output == "hello"
