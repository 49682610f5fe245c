"""Real model servers as subprocesses, for the tests and bench/serve.py: llama-cpp-python's
``python -m llama_cpp.server``, llama.cpp's ``llama-server`` (built by tools/build-llama-server.sh)
and ``llmos serve``, each on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from llmos_shell.cpu import hardware

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server started by ``command``, ready once ``/v1/models`` answers; stopped on exit."""

    def __init__(self, command: list[str], port: int, *, env: dict | None = None, ready_timeout: float = 180) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix="llmos-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(REPO),
                                        env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            self._wait(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.output()[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout:g} s: {self.output()[-2000:]}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def llama_server(model_path, *, n_ctx: int = 2048, threads: int | None = None, api_key: str | None = None,
                 port: int | None = None) -> ServerProcess:
    """llama-cpp-python's OpenAI-compatible server on ``model_path``."""
    port = port or free_port()
    # Its models load with llama.cpp's default extra buffers, which crash at the first token on a CPU
    # with AMX (ggml-org/llama.cpp#20824) and it has no option to turn them off: there, it runs
    # inside llmos's hardware.model_params(False), as the in-process CPU loads its model.
    server = ["-m", "llama_cpp.server"] if not hardware.has_amx() else ["-c", (
        "import runpy, sys; from llmos_shell.cpu import hardware; sys.argv[0] = 'llama_cpp.server'\n"
        "with hardware.model_params(False): runpy.run_module('llama_cpp.server', run_name='__main__')")]
    command = [sys.executable, *server, "--model", str(model_path), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads or os.cpu_count() or 1),
               "--n_threads_batch", str(threads or os.cpu_count() or 1)]
    if api_key:
        command += ["--api_key", api_key]
    return ServerProcess(command, port)


def llama_cpp_binary() -> Path | None:
    """The ``llama-server`` that ``make test`` built (tools/build-llama-server.sh), or $LLAMA_SERVER; None if absent."""
    if os.environ.get("LLAMA_SERVER"):
        return Path(os.environ["LLAMA_SERVER"])
    pins = (REPO / "constraints.txt").read_text().splitlines()
    version = next((line.split("==", 1)[1].strip() for line in pins if line.startswith("llama-cpp-python==")), "")
    cache = os.environ.get("LLAMA_SERVER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "llmos" / "llama-server"
    binary = Path(cache) / version / "bin" / "llama-server"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def llama_cpp_server(model_path, *, n_ctx: int = 4096, threads: int | None = None, slot_save_path=None,
                     port: int | None = None, args: tuple[str, ...] = ()) -> ServerProcess:
    """llama.cpp's ``llama-server`` on ``model_path``: one slot, so a process's context is that slot's;
    with ``slot_save_path``, slots can be saved and restored (context switches on the server)."""
    binary = llama_cpp_binary()
    if binary is None:
        raise RuntimeError("llama-server is not built (make llama-server)")
    port = port or free_port()
    command = [str(binary), "--model", str(model_path), "--host", "127.0.0.1", "--port", str(port),
               "--ctx-size", str(n_ctx), "--parallel", "1", "--threads", str(threads or os.cpu_count() or 1),
               # Attention computed as llama-cpp-python computes it in-process (its default; llama-server's
               # "auto" turns flash attention on), so both CPUs have the same logits (README: BFCL through llama-server)
               "--no-webui", "--flash-attn", "off", *args]
    if slot_save_path is not None:
        command += ["--slot-save-path", str(slot_save_path)]
    if hardware.has_amx():   # llama.cpp's repacked buffers crash there (ggml-org/llama.cpp#20824)
        command.append("--no-repack")
    return ServerProcess(command, port)


def llmos_serve(home, model: str, *, token: str | None = None, args: tuple[str, ...] = (),
                env: dict | None = None, port: int | None = None) -> ServerProcess:
    """``llmos serve`` with ``model`` as its CPU, its data in ``home``."""
    port = port or free_port()
    command = [sys.executable, "-m", "llmos_shell", "--home", str(home), "--model", model, "serve",
               "--port", str(port), *args]
    if token:
        command += ["--token", token]
    return ServerProcess(command, port, env=env)
