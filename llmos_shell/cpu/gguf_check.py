"""Check that a file is a sound GGUF model before llama.cpp sees it.

llama.cpp trusts the header it reads, and some malformed files crash the whole
process. This reads the header, the metadata and the tensor table with bounds
checks at every step, and checks that every tensor lies inside the file and
that the architecture is one llama.cpp knows. Type codes, quantisation block
sizes and architecture names come from the `gguf` package (maintained with
llama.cpp); its own reader parses every vocabulary string into numpy objects,
which takes seconds on a 150k-token vocabulary, so it is not used here.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from llmos_shell.config import machine_cache, write_cached
from llmos_shell.errors import BadModelFile

CHECKER = "1"                   # bump when the checks change: files that passed are checked again

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_COUNT = 10_000_000          # entries in one table or array; beyond it the header is corrupt
MAX_DIMS = 4

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


class _Corrupt(Exception):
    pass


class _Reader:
    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.size = size

    def read(self, n: int) -> bytes:
        if n < 0 or self.handle.tell() + n > self.size:
            raise _Corrupt(f"runs past the end of the file at byte {self.handle.tell()}")
        return self.handle.read(n)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        n = self.unpack("<Q")
        if n > MAX_COUNT:
            raise _Corrupt(f"implausible count {n}")
        return n

    def string(self, keep: bool = True) -> str | None:
        n = self.unpack("<Q")
        if n > self.size:
            raise _Corrupt(f"string of {n} bytes in a file of {self.size}")
        if not keep:
            self.skip(n)
            return None
        return self.read(n).decode("utf-8", "replace")

    def skip(self, n: int) -> None:
        if self.handle.tell() + n > self.size:
            raise _Corrupt(f"runs past the end of the file at byte {self.handle.tell()}")
        self.handle.seek(n, os.SEEK_CUR)

    def value(self, kind: int, keep: bool = True) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == STRING:
            return self.string(keep)
        if kind == ARRAY:
            item_kind, n = self.unpack("<I"), self.count()
            if item_kind in _SCALARS:  # fixed size: skip in one seek
                self.skip(n * struct.calcsize(_SCALARS[item_kind]))
                return None
            for _ in range(n):
                self.value(item_kind, keep=False)
            return None
        raise _Corrupt(f"unknown metadata value type {kind}")


def _open(path: Path) -> tuple[int, int]:
    try:
        if path.is_dir():
            raise BadModelFile(f"{path}: is a directory, not a model file")
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadModelFile(f"{path}: no such model file") from None
    except OSError as error:
        raise BadModelFile(f"{path}: cannot read model file ({error.strerror})") from None
    if size == 0:
        raise BadModelFile(f"{path}: model file is empty")
    return size, 0


def _parse(path: Path, tensors: bool) -> dict[str, Any]:
    import gguf

    size, _ = _open(path)
    with path.open("rb") as handle:
        reader = _Reader(handle, size)
        head = handle.read(4)
        if head != MAGIC:
            raise BadModelFile(f"{path}: not a GGUF model file (starts with {head!r}, expected b'GGUF')")
        try:
            version = reader.unpack("<I")
            if version not in SUPPORTED_VERSIONS:
                raise BadModelFile(f"{path}: unsupported GGUF version {version} (expected 2 or 3)")
            n_tensors, n_kv = reader.count(), reader.count()
            metadata: dict[str, Any] = {}
            for _ in range(n_kv):
                key = reader.string()
                metadata[key] = reader.value(reader.unpack("<I"))
            facts = {"version": version, "tensors": n_tensors, "metadata": metadata, "size": size}
            if not tensors:
                return facts
            alignment = int(metadata.get("general.alignment") or gguf.GGUF_DEFAULT_ALIGNMENT)
            end = 0
            for _ in range(n_tensors):
                name = reader.string()
                n_dims = reader.unpack("<I")
                if not 0 < n_dims <= MAX_DIMS:
                    raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions")
                dims = [reader.unpack("<Q") for _ in range(n_dims)]
                kind, offset = reader.unpack("<I"), reader.unpack("<Q")
                try:
                    block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
                except (ValueError, KeyError):
                    raise _Corrupt(f"tensor {name!r} has unknown type {kind}") from None
                elements = 1
                for dim in dims:
                    elements *= dim
                end = max(end, offset + elements // block * type_size)
            data_start = -(-handle.tell() // alignment) * alignment
        except struct.error as error:
            raise BadModelFile(f"{path}: corrupt GGUF file ({error})") from None
        except _Corrupt as error:
            raise BadModelFile(f"{path}: corrupt or truncated GGUF file ({error})") from None
    if data_start + end > size:
        raise BadModelFile(f"{path}: truncated GGUF file ({size} bytes, its tensors need {data_start + end})")
    facts["data_end"] = data_start + end
    return facts


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The GGUF metadata: scalars and strings (arrays such as the vocabulary are skipped, as None)."""
    return _parse(Path(path), tensors=False)["metadata"]


def check_gguf(path: str | os.PathLike) -> dict[str, Any]:
    """Raise BadModelFile unless ``path`` is a complete GGUF of a known architecture; return facts about it.

    A file that passed is remembered by its path, size and modification time (walking a 150k-token
    vocabulary costs most of a second at every model load); any change to the file checks it again."""
    path = Path(path)
    record = _record(path)
    try:
        if record is not None and record.exists():
            return {**json.loads(record.read_text()), "path": str(path)}
    except (OSError, ValueError):
        pass   # a damaged record: check the file again
    facts = _check(path)
    if record is not None:
        write_cached(record, json.dumps(facts))   # unwritable: the file is checked again next time
    return facts


def _record(path: Path) -> Path | None:
    """Where a pass of this very file (path, size, mtime) is remembered; None if it cannot be stat'ed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = f"{CHECKER}|{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
    return machine_cache("gguf-checks") / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _check(path: Path) -> dict[str, Any]:
    import gguf

    facts = _parse(path, tensors=True)
    arch = facts["metadata"].get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise BadModelFile(f"{path}: GGUF file names no model architecture")
    if arch not in set(gguf.MODEL_ARCH_NAMES.values()):
        raise BadModelFile(f"{path}: unknown model architecture {arch!r}")
    return {"path": str(path), "version": facts["version"], "architecture": arch, "tensors": facts["tensors"],
            "size": facts["size"], "context_length": facts["metadata"].get(f"{arch}.context_length")}
