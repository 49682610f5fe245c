"""Context switches by KV snapshot and instant start, with the real small model, real files and a real database."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import run_llmos
from llmos_shell.config import TEST_MODEL
from llmos_shell.kernel.loop import Kernel
from llmos_shell.kernel.snapshots import SnapshotRefused, SnapshotStore, read_file, tokens_sha256, write_file
from llmos_shell.testing import make_system

CONVERSATIONS = {"a": ["Tell me about cats.", "What do they eat?"], "b": ["Tell me about boats.", "Which is fastest?"]}


@pytest.fixture
def machine(tmp_path, small_cpu):
    """A System on the shared small CPU (which it must not close), its KV cache empty."""
    systems = []

    def make(home: Path = tmp_path / "home", **settings):
        for key, value in settings.items():
            os.environ[key] = value
        try:
            system = make_system(home, plugins=[], cpu=small_cpu)
        finally:
            for key in settings:
                os.environ.pop(key)
        small_cpu.reset()
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.unload_cpu()  # the session's CPU stays open
        system.close()


def take_turns(system, order, *, snapshots: bool = True, temperature: float = 0.0):
    """Processes "a" and "b" taking their turns on the CPU in ``order`` ("abab": switching every
    turn); their replies, what each switch did and each turn's first CPU pass."""
    kernel = Kernel(system, max_tokens=16, snapshots=snapshots)
    processes = {name: kernel.spawn(name, drivers=[]) for name in CONVERSATIONS}
    replies: dict[str, list[str]] = {name: [] for name in CONVERSATIONS}
    switches, timings = [], []
    for name in order:
        result = kernel.run(processes[name], CONVERSATIONS[name][len(replies[name])], seed=5,
                            temperature=temperature)
        assert result.status == "ok", result.error
        replies[name].append(result.output)
        timings.append(result.timing[0])
        switches.append(dict(system.context_switch.last) if system.context_switch else {})
    return replies, switches, timings


def test_a_restored_context_continues_as_if_never_switched_out(machine, tmp_path):
    # bit for bit, seeded sampling at a temperature included: the restored cache is the state the
    # process left, whatever ran in between
    switched, switches, timings = take_turns(machine(tmp_path / "switched"), "abab", temperature=0.8)
    alone, _, _ = take_turns(machine(tmp_path / "alone"), "aabb", temperature=0.8)
    assert switched == alone
    # the second round: each process came back from its own snapshot, evaluating only its new message;
    # without snapshots, it reads its whole context again after the shared system prompt
    _, _, re_read = take_turns(machine(tmp_path / "plain"), "abab", snapshots=False, temperature=0.8)
    assert [s["restored"] for s in switches[2:]] == ["process", "process"]
    for came_back, again in zip(timings[2:], re_read[2:]):
        assert came_back["prefill_tokens"] + came_back["cached_tokens"] == again["prefill_tokens"] + again["cached_tokens"]
        assert came_back["prefill_tokens"] < again["prefill_tokens"]


def test_a_restored_context_gives_the_tokens_of_a_re_read_one(small_cpu):
    # the same text read in one batch then saved and restored after another process ran, or read
    # again from nothing: the same seeded tokens (a reply decoded token by token and then re-read in
    # a batch differs from its decoded state in rounding only: see the test above for that case)
    chat = lambda text: small_cpu.format_chat([{"role": "user", "content": text}])
    context = chat("Here is a list: apples, pears, plums and cherries. " * 6 + "Which fruit is red?")
    small_cpu.reset()
    small_cpu.prefill(small_cpu.tokenize(context)[:-1])
    saved = small_cpu.save_sequence_state()
    small_cpu.generate(chat("Something else entirely: name a colour."), max_tokens=8)
    assert small_cpu.load_sequence_state(saved)
    restored = small_cpu.generate(context, max_tokens=24, seed=9, temperature=0.8)
    assert restored.stats.prefill_tokens == 1
    small_cpu.reset()
    re_read = small_cpu.generate(context, max_tokens=24, seed=9, temperature=0.8)
    assert re_read.stats.cached_tokens == 0
    assert restored.text == re_read.text


def real_states(cpu, count: int):
    """Saved KV states of ``count`` different texts, longer and longer."""
    states = []
    for index in range(count):
        cpu.prefill(cpu.tokenize(f"Note {index}: " + "the quick brown fox jumps over the lazy dog. " * (index + 1)))
        states.append(cpu.save_sequence_state())
    return states


def test_the_budgets_are_never_exceeded_and_spilled_snapshots_come_back(machine, small_cpu, tmp_path):
    system = machine()
    states = real_states(small_cpu, 6)
    ram, disk = int(2.5 * states[2].nbytes), int(3.2 * states[-1].nbytes)
    store = SnapshotStore(lambda: system.fs, tmp_path / "snaps", ram_bytes=ram, disk_bytes=disk)
    pids = [system.fs.create_process(f"p{i}") for i in range(len(states))]
    for pid, state in zip(pids, states):
        store.save_process(pid, state)
        files = list((tmp_path / "snaps").glob("*"))
        assert store.ram_used <= ram
        assert sum(f.stat().st_size for f in files) <= disk
        assert sorted(f.name for f in files) == sorted(r["file"] for r in system.fs.snapshot_files())
    assert system.fs.snapshot_files(kind="process")  # something did leave RAM for disk
    model = small_cpu.model_sha256()
    back = {pid: store.take_process(pid, model) for pid in pids}
    kept = [pid for pid in pids if back[pid] is not None]
    assert kept and all(back[pid] == state for pid, state in zip(pids, states) if back[pid] is not None)
    assert store.take_process(kept[0], model) is None  # taken once: the process runs on from it
    assert store.ram_used == 0 and not system.fs.snapshot_files(kind="process")
    # one bigger than the whole RAM budget goes straight to disk, and comes back from there
    small = SnapshotStore(lambda: system.fs, tmp_path / "small", ram_bytes=16, disk_bytes=disk)
    small.save_process(pids[0], states[-1])
    assert small.ram_used == 0 and len(list((tmp_path / "small").iterdir())) == 1
    assert small.take_process(pids[0], model) == states[-1]


def damage(path: Path, how: str) -> None:
    blob = bytearray(path.read_bytes())
    if how == "flipped byte":
        blob[-100] ^= 0xFF
    elif how == "truncated":
        blob = blob[: len(blob) // 2]
    elif how == "not a snapshot":
        blob = bytearray(b"GGUF" + bytes(4000))
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("how", ["flipped byte", "truncated", "not a snapshot", "another model"])
def test_a_damaged_or_foreign_snapshot_file_is_refused(small_cpu, tmp_path, how):
    state = real_states(small_cpu, 1)[0]
    path = tmp_path / "one.kv"
    write_file(path, state)
    assert read_file(path, state.model_sha256, tokens_sha256(state.tokens)) == state
    model = "0" * 64 if how == "another model" else state.model_sha256
    damage(path, how)
    with pytest.raises(SnapshotRefused):
        read_file(path, model, tokens_sha256(state.tokens))


def test_the_cpu_refuses_state_that_does_not_fit_and_keeps_working(small_cpu):
    import dataclasses

    state = real_states(small_cpu, 1)[0]
    assert not small_cpu.load_sequence_state(dataclasses.replace(state, data=state.data[: len(state.data) // 3]))
    assert not small_cpu.load_sequence_state(dataclasses.replace(state, tokens=state.tokens[:-2]))
    assert not small_cpu.load_sequence_state(dataclasses.replace(state, model_sha256="0" * 64))
    assert small_cpu.cached_prefix(state.tokens) == 0  # nothing half-loaded
    assert small_cpu.load_sequence_state(state) and small_cpu.cached_prefix(state.tokens) == len(state.tokens)


def first_turn(system, text: str = "Hello there!"):
    kernel = Kernel(system, max_tokens=16)
    result = kernel.run(kernel.spawn("chat", drivers=[]), text, seed=3)
    assert result.status == "ok", result.error
    return result


def test_a_corrupt_pinned_prefix_is_re_prefilled_with_the_same_reply(machine, tmp_path):
    home = tmp_path / "home"
    first = first_turn(machine(home))
    (row,) = machine(home).fs.snapshot_files(kind="prefix")
    damage(home / "snapshots" / row["file"], "flipped byte")
    system = machine(home)
    again = first_turn(system)
    assert again.output == first.output
    assert system.context_switch.last["restored"] is None
    assert again.timing[0]["prefill_tokens"] == first.timing[0]["prefill_tokens"]
    # the bad file was dropped and a good one written in its place
    (new,) = system.fs.snapshot_files(kind="prefix")
    third_system = machine(home)
    third = first_turn(third_system)
    assert third_system.context_switch.last["restored"] == "prefix" and third.output == first.output


@pytest.mark.slow
def test_instant_start_restores_the_pinned_prefix_in_a_fresh_llmos_run(tmp_path, home, small_model_path):
    task = tmp_path / "task.md"
    task.write_text("---\nfunctions:\n  - name: get_weather\n    description: The current weather in a city.\n"
                    "    parameters: {type: object, properties: {city: {type: string}}, required: [city]}\n"
                    "max_steps: 2\nseed: 1\n---\nSay hello to me.\n")
    runs = []
    for _ in range(2):
        result = run_llmos("--model", TEST_MODEL, "run", "--json", str(task), home=home)
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout))
    cold, warm = (run["timing"]["turns"][0] for run in runs)
    assert cold["cached_tokens"] == 0
    prompt = cold["prefill_tokens"]
    # the second program evaluated only the request: the system prompt and table came from disk
    assert warm["cached_tokens"] >= 0.8 * prompt and warm["prefill_tokens"] <= 0.2 * prompt
    assert runs[0]["output"] == runs[1]["output"]
    files = list((home / "snapshots").iterdir())
    assert len(files) == 1 and files[0].name.startswith("prefix-")


def test_snapshots_left_by_a_crashed_program_are_swept_at_start(tmp_path):
    """A program killed with process snapshots on disk (and a write cut short) leaves files; the next
    llmos to open the home removes them, and keeps what live programs and shared prefixes need."""
    home = tmp_path / "home"
    system = make_system(home, plugins=[])
    fs = system.fs
    folder = system.config.snapshots_dir
    folder.mkdir(parents=True, exist_ok=True)
    dead, live = fs.create_process("dead"), fs.create_process("live")
    fs.conn.execute("UPDATE processes SET owner = 'a-program-that-crashed' WHERE pid = ?", (dead,))
    files = {}
    for name, pid, kind in (("dead", dead, "process"), ("live", live, "process"), ("prefix", None, "prefix")):
        files[name] = folder / f"{name}.kv"
        files[name].write_bytes(b"x" * 100)
        fs.add_snapshot_file(kind=kind, file=files[name].name, model_sha256="0" * 64, prefix_sha256=name,
                             n_tokens=10, size=100, pid=pid)
    stale, fresh = folder / ".dead.kv.123.456.part", folder / ".live.kv.789.1.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))

    system.context_switch   # what a program does on first use of snapshots
    assert not files["dead"].exists() and not stale.exists()
    assert files["live"].exists() and files["prefix"].exists() and fresh.exists()
    assert {row["file"] for row in fs.snapshot_files()} == {"live.kv", "prefix.kv"}
    system.close()
