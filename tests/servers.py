"""Real model servers as subprocesses, for the tests and bench/serve.py: llama-cpp-python's
``python -m llama_cpp.server`` and ``llmos serve``, each on a free port of 127.0.0.1."""

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
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads or os.cpu_count() or 1),
               "--n_threads_batch", str(threads or os.cpu_count() or 1)]
    if api_key:
        command += ["--api_key", api_key]
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
