"""The first decode, tried in a child process before llmos loads a model for real.

A fault in llama.cpp's CPU backend (such as the AMX crash, see ``hardware.py``) kills the whole
program with a bare signal, the shell's history and the user's half-typed work with it. So the
first time a model file meets a build of llama.cpp on this CPU with given load settings, a child
process loads it and decodes a few tokens. A crash becomes one line naming the cause and the
setting that avoids it. The verdict is cached per (model file, library build, CPU, settings)
under ``~/.cache/llmos/probes/``, so later loads pay one ``stat``.

    python -m llmos_shell.cpu.probe MODEL.gguf --extra-buffers on|off
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from llmos_shell.config import machine_cache, write_cached
from llmos_shell.cpu import hardware

log = logging.getLogger("llmos.cpu")

TIMEOUT_S = 300


def cache_dir() -> Path:
    return machine_cache("probes")


def _library_stamp() -> str:
    """The llama.cpp build: the shared library's size and modification time, and the package version."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    stamp = [importlib.metadata.version("llama_cpp_python")]
    if spec and spec.origin:
        library = Path(spec.origin).parent / "lib"
        for path in sorted(library.glob("*.so*")) if library.is_dir() else ():
            stat = path.stat()
            stamp.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return ";".join(stamp)


def probe_key(model_path: str, extra_buffers: bool) -> str:
    stat = os.stat(model_path)
    parts = [os.path.realpath(model_path), str(stat.st_size), str(stat.st_mtime_ns), _library_stamp(),
             " ".join(sorted(hardware.cpu_flags())), f"extra_buffers={extra_buffers}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def first_decode(model_path: str, extra_buffers: bool) -> str | None:
    """None if a child process decoded with this model and these settings, else why it died
    (the name of the signal). Cached: the child runs once per model, build, CPU and settings."""
    key = probe_key(model_path, extra_buffers)
    record = cache_dir() / f"{key}.json"
    try:
        return json.loads(record.read_text())["crash"]
    except (OSError, ValueError, KeyError):
        pass
    command = [sys.executable, "-m", "llmos_shell.cpu.probe", model_path,
               "--extra-buffers", "on" if extra_buffers else "off"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                              env={**os.environ, "LLMOS_SHARE": "off"})
    except subprocess.TimeoutExpired:
        log.warning("the first-decode probe of %s took over %d s; not cached", model_path, TIMEOUT_S)
        return None
    if done.returncode < 0:
        crash = signal.Signals(-done.returncode).name
        log.error("the first-decode probe of %s died of %s (extra buffers %s):\n%s", model_path, crash,
                  extra_buffers, done.stderr[-4000:])
    else:
        # exit 0, or a Python error (a bad file): the in-process load says what is wrong in words
        crash = None
    # an unwritable cache: probe again next time, nothing worse
    write_cached(record, json.dumps({"model": model_path, "extra_buffers": extra_buffers, "crash": crash,
                                     "returncode": done.returncode}))
    return crash


def _decode_once(model_path: str, extra_buffers: bool) -> None:
    import llama_cpp

    with hardware.model_params(extra_buffers):
        llm = llama_cpp.Llama(model_path=model_path, n_ctx=256, n_batch=64, n_threads=1, verbose=False)
    tokens = llm.tokenize(b"Hello, how are you today? Tell me about the sea.", add_bos=True)
    llm.eval(tokens)   # a batch: the matrix-matrix path
    llm.eval([llm.sample(top_k=1)])   # one token: the matrix-vector path
    llm.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Decode a few tokens with a model (a crash kills only this process).")
    parser.add_argument("model")
    parser.add_argument("--extra-buffers", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    _decode_once(args.model, args.extra_buffers == "on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
