"""Context switches by KV snapshot, and instant start.

A snapshot is the CPU's :class:`~llmos_shell.cpu.SequenceState`: the model's sha256, the exact
tokens the KV cache held, and llama.cpp's bytes for that one sequence (no logits). It serves a
prompt only as far as its tokens are the prompt's first tokens, so it is never wrong, only more or
less useful; one that does not load (another model, a corrupt, truncated or foreign file) is
dropped, and the CPU evaluates the prompt itself.

:class:`SnapshotStore` keeps them: an LRU in RAM under a byte budget; what leaves RAM goes to a
file under ``$LLMOS_HOME/snapshots/`` recorded in the ``snapshots`` table, files too under a byte
budget. :class:`ContextSwitch` knows whose context the CPU holds. When another process runs, it
saves the outgoing one's state and loads the incoming one's, or else the snapshot of its pinned
prefix (system prompt and syscall table), which is written to disk once per model and prefix, so
a fresh ``llmos run`` or shell conversation starts without evaluating it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
from array import array
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

from llmos_shell.cpu import SequenceState
from llmos_shell.errors import LlmosError

log = logging.getLogger("llmos.snapshots")

MAGIC = b"LLMOSKV\x01"
#: A pinned prefix shorter than this is not worth a file.
MIN_PINNED_TOKENS = 32


class SnapshotRefused(LlmosError):
    """A snapshot file that is not what its record says (corrupt, truncated, foreign)."""


def tokens_sha256(tokens: Sequence[int]) -> str:
    return hashlib.sha256(_token_bytes(tokens)).hexdigest()


def _token_bytes(tokens: Sequence[int]) -> bytes:
    packed = array("i", tokens)
    if struct.pack("=i", 1) != struct.pack("<i", 1):  # files are little-endian wherever written
        packed.byteswap()
    return packed.tobytes()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# --- files ----------------------------------------------------------------------------------

def write_file(path: Path, state: SequenceState) -> int:
    """Write ``state`` to ``path`` (atomically: a reader never sees half a file); returns its size."""
    tokens = _token_bytes(state.tokens)
    header = json.dumps({"model_sha256": state.model_sha256, "n_tokens": len(state.tokens),
                         "tokens_sha256": hashlib.sha256(tokens).hexdigest(), "data_bytes": len(state.data),
                         "data_sha256": hashlib.sha256(state.data).hexdigest()}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    with open(partial, "wb") as out:
        out.write(MAGIC + struct.pack("<I", len(header)) + header)
        out.write(tokens)
        out.write(state.data)
    os.replace(partial, path)
    return path.stat().st_size


def read_file(path: Path, model_sha256: str, prefix_sha256: str | None = None) -> SequenceState:
    """The state in ``path``, checked against its own header (sizes, sha256 of tokens and bytes) and
    the model (and tokens) expected; raises :class:`SnapshotRefused` if anything differs."""
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise SnapshotRefused(f"{path.name}: {error.strerror or error}") from error
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise SnapshotRefused(f"{path.name}: not an llmos snapshot")
    (size,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4 + size
    try:
        header = json.loads(blob[len(MAGIC) + 4: start])
        n_tokens, n_data = int(header["n_tokens"]), int(header["data_bytes"])
    except (ValueError, KeyError, TypeError) as error:
        raise SnapshotRefused(f"{path.name}: unreadable header") from error
    if len(blob) != start + 4 * n_tokens + n_data:
        raise SnapshotRefused(f"{path.name}: {len(blob)} bytes, its header says {start + 4 * n_tokens + n_data}")
    if header.get("model_sha256") != model_sha256:
        raise SnapshotRefused(f"{path.name}: made with another model")
    tokens = blob[start: start + 4 * n_tokens]
    data = blob[start + 4 * n_tokens:]
    digest = hashlib.sha256(tokens).hexdigest()
    if digest != header.get("tokens_sha256") or (prefix_sha256 is not None and digest != prefix_sha256):
        raise SnapshotRefused(f"{path.name}: its tokens are not the ones recorded")
    if hashlib.sha256(data).hexdigest() != header.get("data_sha256"):
        raise SnapshotRefused(f"{path.name}: its KV bytes are corrupt")
    ids = array("i")
    ids.frombytes(tokens)
    if struct.pack("=i", 1) != struct.pack("<i", 1):
        ids.byteswap()
    return SequenceState(model_sha256=model_sha256, tokens=tuple(ids), data=data)


# --- the store ------------------------------------------------------------------------------

class SnapshotStore:
    """Snapshots in RAM (LRU, at most ``ram_bytes``) and in files under ``directory`` (at most
    ``disk_bytes``), the files recorded in the filesystem's ``snapshots`` table."""

    def __init__(self, fs: Callable[[], Any], directory: Path, *, ram_bytes: int, disk_bytes: int) -> None:
        self._fs = fs                      # opened on first use, like the System's
        self.directory = Path(directory)
        self.ram_bytes = ram_bytes
        self.disk_bytes = disk_bytes
        self._ram: OrderedDict[tuple, SequenceState] = OrderedDict()
        self.ram_used = 0
        self._lock = threading.RLock()
        self._on_disk: dict[int, dict] = {}  # pid -> the row of its spilled snapshot

    # process snapshots: the context of a process that is not on the CPU. Only this program
    # runs its processes (their memory is in it), so only it reads or writes their snapshots.
    def save_process(self, pid: int, state: SequenceState) -> None:
        with self._lock:
            self.drop_process(pid)
            self._keep(("process", pid), state)

    def take_process(self, pid: int, model_sha256: str) -> SequenceState | None:
        """The process's snapshot, removed from the store (once it runs, its context moves on)."""
        with self._lock:
            state = self._ram.pop(("process", pid), None)
            if state is not None:
                self.ram_used -= state.nbytes
            row = self._on_disk.get(pid)
            if row is not None:
                state = self._read(row, model_sha256)
                self._forget(row)
            return state if state is not None and state.model_sha256 == model_sha256 else None

    def drop_process(self, pid: int) -> None:
        with self._lock:
            state = self._ram.pop(("process", pid), None)
            if state is not None:
                self.ram_used -= state.nbytes
            if pid in self._on_disk:
                self._forget(self._on_disk[pid])

    # pinned prefixes: shared by every process of that model and table, kept on disk
    def prefix(self, model_sha256: str, tokens: Sequence[int]) -> SequenceState | None:
        digest = tokens_sha256(tokens)
        with self._lock:
            key = ("prefix", model_sha256, digest)
            if key in self._ram:
                self._ram.move_to_end(key)
                return self._ram[key]
            for row in self._fs().snapshot_files(kind="prefix", model_sha256=model_sha256, prefix_sha256=digest):
                state = self._read(row, model_sha256, digest)
                if state is not None:
                    self._fs().touch_snapshot(row["id"])
                    self._keep(key, state, on_disk=True)
                    return state
            return None

    def save_prefix(self, state: SequenceState) -> None:
        digest = tokens_sha256(state.tokens)
        with self._lock:
            name = f"prefix-{state.model_sha256[:12]}-{digest[:16]}.kv"
            if self._write(name, state, kind="prefix", prefix_sha256=digest) is not None:
                self._keep(("prefix", state.model_sha256, digest), state, on_disk=True)

    def forget(self, state: SequenceState) -> None:
        """Drop a snapshot that would not load, wherever it is kept."""
        with self._lock:
            for key in [k for k, v in self._ram.items() if v is state]:
                self.ram_used -= self._ram.pop(key).nbytes
            for row in self._fs().snapshot_files(model_sha256=state.model_sha256,
                                                 prefix_sha256=tokens_sha256(state.tokens)):
                self._forget(row)

    def sweep(self, stale_seconds: float = 600) -> int:
        """Remove what crashed programs left: their processes' snapshot files and rows, and files
        the table does not know (a write cut short leaves a ``.part``) older than ``stale_seconds``
        (a live program may be between writing a file and recording it). Returns files removed."""
        removed = 0
        with self._lock:
            for row in self._fs().orphaned_snapshots():
                self._forget(row)
                removed += 1
            known = {row["file"] for row in self._fs().snapshot_files()}
            try:
                entries = list(self.directory.iterdir())
            except OSError:   # no folder yet
                return removed
            now = time.time()
            for path in entries:
                try:
                    if path.is_file() and path.name not in known and now - path.stat().st_mtime > stale_seconds:
                        path.unlink()
                        removed += 1
                except OSError:
                    continue
        if removed:
            log.info("removed %d snapshot files left by programs that ended", removed)
        return removed

    def close(self) -> None:
        """Forget this program's process snapshots: their processes end with it. Prefixes stay."""
        with self._lock:
            self._ram.clear()
            self.ram_used = 0
            for row in list(self._on_disk.values()):
                self._forget(row)

    # --- inside ---------------------------------------------------------------------------

    def _keep(self, key: tuple, state: SequenceState, on_disk: bool = False) -> None:
        """Into RAM as the most recent; older ones leave for disk (a process's) until it fits."""
        if state.nbytes > self.ram_bytes:
            if not on_disk:
                self._spill(key, state)
            return
        self._ram[key] = state
        self.ram_used += state.nbytes
        while self.ram_used > self.ram_bytes:
            old_key, old = self._ram.popitem(last=False)
            self.ram_used -= old.nbytes
            if old_key[0] == "process":
                self._spill(old_key, old)

    def _spill(self, key: tuple, state: SequenceState) -> None:
        pid = key[1]
        name = f"process-{pid}-{state.model_sha256[:12]}.kv"
        row = self._write(name, state, kind="process", pid=pid, prefix_sha256=tokens_sha256(state.tokens))
        if row is not None:
            self._on_disk[pid] = {"id": row, "file": name, "pid": pid}

    def _write(self, name: str, state: SequenceState, *, kind: str, prefix_sha256: str,
               pid: int | None = None) -> int | None:
        """A file and its row, within the disk budget (older files go first); None if it cannot be."""
        fs = self._fs()
        if state.nbytes > self.disk_bytes:
            return None
        try:
            size = write_file(self.directory / name, state)
        except OSError as error:  # a full or read-only disk: the snapshot is lost, nothing else
            log.warning("could not write snapshot %s: %s", name, error)
            return None
        try:
            row = fs.add_snapshot_file(kind=kind, file=name, model_sha256=state.model_sha256,
                                       prefix_sha256=prefix_sha256, n_tokens=len(state.tokens), size=size, pid=pid)
        except LlmosError as error:  # e.g. the process row is gone
            log.warning("could not record snapshot %s: %s", name, error)
            (self.directory / name).unlink(missing_ok=True)
            return None
        rows = fs.snapshot_files()
        used = sum(r["size"] for r in rows)
        for old in sorted(rows, key=lambda r: r["id"] == row):  # the new one goes last, if it must
            if used <= self.disk_bytes:
                break
            self._forget(old)
            used -= old["size"]
            if old["id"] == row:
                return None
        return row

    def _read(self, row: dict, model_sha256: str, prefix_sha256: str | None = None) -> SequenceState | None:
        try:
            return read_file(self.directory / row["file"], model_sha256, prefix_sha256)
        except SnapshotRefused as error:
            log.warning("snapshot refused, the prompt is evaluated instead: %s", error)
            self._forget(row)
            return None

    def _forget(self, row: dict) -> None:
        self._fs().remove_snapshot(row["id"])
        if row.get("pid") is not None and self._on_disk.get(row["pid"], {}).get("id") == row["id"]:
            del self._on_disk[row["pid"]]
        path = self.directory / row["file"]
        if path.parent == self.directory:  # a name from the table never leads outside the folder
            path.unlink(missing_ok=True)


# --- the context switch ---------------------------------------------------------------------

class ContextSwitch:
    """Whose context the CPU's KV cache holds, and the moves when that changes."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.owner: int | None = None
        self._cpu: Any = None
        self._lock = threading.Lock()
        self._pending: tuple[int, tuple[int, ...]] | None = None   # (pid, a pinned prefix to save)
        #: What the last switch did: saved_bytes, restored ("process", "prefix" or None), restored_tokens, ms.
        self.last: dict[str, Any] = {}

    def enter(self, cpu: Any, pid: int, prompt: str, pinned: Callable[[], str | None] | None = None) -> None:
        """Give the CPU process ``pid``'s context before it evaluates ``prompt``.

        ``pinned`` gives the text the process's prompts start with before any message (system
        prompt and syscall table); its state is restored for a process that has none of its own,
        and saved to disk (by :meth:`settle`) the first time it is seen."""
        if not getattr(cpu, "can_snapshot", False):
            return
        with self._lock:
            if cpu is self._cpu and pid == self.owner:
                return  # the same process goes on: the CPU's own prefix reuse serves it
            try:
                self._enter(cpu, pid, prompt, pinned)
            except Exception:  # a snapshot is an optimisation: without it the CPU reads the prompt
                log.exception("context switch to process %s failed; its prompt is evaluated in full", pid)
                self.owner, self._pending = pid, None

    def _enter(self, cpu: Any, pid: int, prompt: str, pinned: Callable[[], str | None] | None) -> None:
        started = time.perf_counter()
        if cpu is not self._cpu:
            self._cpu, self.owner = cpu, None
        model = cpu.model_sha256()
        saved = 0
        if self.owner is not None:
            state = cpu.save_sequence_state()
            if state is not None:
                self.store.save_process(self.owner, state)
                saved = state.nbytes
        self.owner = pid
        tokens = cpu.tokenize(prompt)
        best, best_n, kind = None, cpu.cached_prefix(tokens), None
        own = self.store.take_process(pid, model)
        if own is not None and common_prefix(own.tokens, tokens) > best_n:
            best, best_n, kind = own, common_prefix(own.tokens, tokens), "process"
        head: list[int] = []
        text = pinned() if pinned is not None else None
        if text:
            head = tokens[:common_prefix(cpu.tokenize(text), tokens)]
        # the prompt's last token is evaluated anyway: a prefix must stop before it
        head = head[:len(tokens) - 1] if len(head) >= MIN_PINNED_TOKENS else []
        prefix = self.store.prefix(model, head) if head else None
        if prefix is not None and len(head) > best_n:
            best, best_n, kind = prefix, len(head), "prefix"
        if best is not None and not cpu.load_sequence_state(best):
            log.warning("a %s snapshot of %d tokens would not load: the prompt is evaluated instead",
                        kind, len(best.tokens))
            self.store.forget(best)
            kind = None
        # a prefix not seen before is saved once the CPU has evaluated it for this prompt
        self._pending = (pid, tuple(head)) if head and prefix is None else None
        self.last = {"saved_bytes": saved, "restored": kind,
                     "restored_tokens": len(best.tokens) if kind else 0,
                     "ms": round(1000 * (time.perf_counter() - started), 2)}

    def settle(self, cpu: Any, pid: int) -> None:
        """After process ``pid``'s turn: write the pinned prefix it was the first to evaluate to disk."""
        with self._lock:
            if self._pending is None or self._pending[0] != pid or cpu is not self._cpu:
                return
            head, self._pending = self._pending[1], None
            try:
                if cpu.cached_prefix(head) == len(head):
                    state = cpu.save_sequence_state(len(head))
                    if state is not None:
                        self.store.save_prefix(state)
            except Exception:  # the next process reads the prefix itself, and saves it then
                log.exception("could not save the pinned prefix of process %s", pid)

    def release(self, pid: int) -> None:
        """Process ``pid`` will not run again: its snapshot goes, and nothing is saved for it."""
        with self._lock:
            self.store.drop_process(pid)
            if self.owner == pid:
                self.owner = None

    def close(self) -> None:
        with self._lock:
            self.owner = self._cpu = None
            self.store.close()
