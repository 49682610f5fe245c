"""Running on the machine as it is: no AMX buffers on a CPU with AMX, a crash of llama.cpp's
CPU backend reported in one line (never a bare signal), threads that fit the free cores, and one
llmos program computing at a time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from llmos_shell.cpu import hardware, probe
from llmos_shell.cpu.sharing import MachineTurn, ThreadCount
from llmos_shell.errors import LlmosError, UsageError
from conftest import REPO, assert_one_line_error, run_llmos

AMX = frozenset({"fpu", "avx512f", "amx_tile", "amx_int8", "amx_bf16"})
NO_AMX = frozenset({"fpu", "avx2", "fma"})


def test_extra_buffers_are_off_exactly_where_the_cpu_has_amx():
    assert hardware.extra_buffers(AMX, "auto") is False
    assert hardware.extra_buffers(NO_AMX, "auto") is True
    assert hardware.extra_buffers(AMX, "on") is True
    assert hardware.extra_buffers(NO_AMX, "off") is False
    with pytest.raises(UsageError, match="LLMOS_WEIGHT_REPACK must be on, off or auto"):
        hardware.extra_buffers(NO_AMX, "sometimes")


def test_this_machines_flags_are_read():
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo here")
    assert hardware.cpu_flags(), "no flags line in /proc/cpuinfo"
    assert hardware.has_amx() == any(flag.startswith("amx") for flag in hardware.cpu_flags())


def test_every_model_load_goes_through_the_hardware_check():
    """A bare ``Llama()`` crashes at the first token on an AMX CPU: only these files may build one
    (each inside ``hardware.model_params`` or in a child process); tests use ``conftest.raw_llama``."""
    loaders = {str(path.relative_to(REPO)) for folder in ("llmos_shell", "plugins", "tests", "bench", "tools")
               for path in (REPO / folder).rglob("*.py") if re.search(r"Llama\(\s*model_path", path.read_text())}
    assert loaders == {"llmos_shell/cpu/llama.py", "llmos_shell/cpu/probe.py", "tests/conftest.py",
                       "tests/test_hardware.py", "bench/cpu.py"}


def test_the_load_adapter_reaches_llama_cpp(small_model_path):
    """Fails loudly if a new llama-cpp-python stops building its model params from the defaults."""
    import llama_cpp

    with hardware.model_params(False):
        off = llama_cpp.Llama(model_path=str(small_model_path), n_ctx=128, verbose=False)
    on = llama_cpp.Llama(model_path=str(small_model_path), n_ctx=128, verbose=False)
    try:
        assert off.model_params.use_extra_bufts is False
        assert on.model_params.use_extra_bufts is True
        assert llama_cpp.llama_model_default_params().use_extra_bufts is True   # put back
    finally:
        off.close()
        on.close()


@pytest.mark.model
def test_no_amx_buffers_on_an_amx_cpu(default_model_path, tmp_path):
    if not hardware.has_amx():
        pytest.skip("this CPU has no AMX (no amx_* flag in /proc/cpuinfo): nothing to avoid here")
    # llama.cpp names the buffers it allocates on stderr when verbose; LlmosCpu's choice must leave
    # no AMX buffer, and the first decode must not crash.
    child = textwrap.dedent(f"""
        import llama_cpp
        from llmos_shell.cpu import hardware
        with hardware.model_params(hardware.extra_buffers()):
            llm = llama_cpp.Llama(model_path={str(default_model_path)!r}, n_ctx=256, verbose=True)
        llm.eval(llm.tokenize(b"Hello there, how are you?"))
        print("decoded")
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decoded" in done.stdout
    assert "AMX" not in "\n".join(line for line in done.stderr.splitlines() if "buffer size" in line)


def _crashing_probe(tmp_path, when: str):
    """A PYTHONPATH whose sitecustomize kills the probe child with a real SIGSEGV ``when`` its
    arguments contain that text: the crash a faulty CPU backend gives, without needing the CPU."""
    folder = tmp_path / "crash"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import os, signal, sys
        argv = " ".join(getattr(sys, "orig_argv", sys.argv))
        if "llmos_shell.cpu.probe" in argv and {when!r} in argv:
            os.kill(os.getpid(), signal.SIGSEGV)
    """))
    return {"PYTHONPATH": f"{folder}{os.pathsep}{REPO}", "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "LLMOS_WEIGHT_REPACK": "on"}


def test_a_crash_at_the_first_decode_is_one_line(tmp_path, small_model_path, monkeypatch):
    for key, value in _crashing_probe(tmp_path, "--extra-buffers").items():
        monkeypatch.setenv(key, value)
    from llmos_shell.cpu import LlamaCpu

    with pytest.raises(LlmosError) as caught:
        LlamaCpu(small_model_path, name="smollm2", max_ctx=256)
    message = str(caught.value)
    assert "\n" not in message
    assert "crashed (SIGSEGV)" in message and "smollm2" in message
    assert "LLMOS_WEIGHT_REPACK=off" in message
    # The verdict is cached: the next load does not start a child again.
    records = list((tmp_path / "cache" / "llmos" / "probes").glob("*.json"))
    assert len(records) == 2 and all('"crash": "SIGSEGV"' in r.read_text() for r in records)


def test_a_crash_with_extra_buffers_falls_back_to_none(tmp_path, small_model_path, monkeypatch):
    for key, value in _crashing_probe(tmp_path, "--extra-buffers on").items():
        monkeypatch.setenv(key, value)
    from llmos_shell.cpu import LlamaCpu

    cpu = LlamaCpu(small_model_path, name="smollm2", max_ctx=256)
    try:
        assert cpu.extra_buffers is False
        assert cpu.generate(cpu.format_chat([{"role": "user", "content": "Hi"}]), max_tokens=3).text
    finally:
        cpu.close()


def test_the_cli_reports_the_crash_in_one_line(tmp_path, home, small_model_path):
    env = _crashing_probe(tmp_path, "--extra-buffers")
    result = run_llmos("run", "-", "--model", str(small_model_path), home=home, input="Say hello.", env=env)
    line = assert_one_line_error(result, 1)
    assert "crashed (SIGSEGV)" in line and "LLMOS_WEIGHT_REPACK=off" in line


def test_fixed_threads_are_kept():
    assert ThreadCount(cores=2, fixed=1).choose() == 1
    assert ThreadCount(cores=2, fixed=2).prime() == 2


def test_a_busy_core_takes_a_thread_away():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat here")
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: there is no thread to take away")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        count = ThreadCount()
        count.choose()
        time.sleep(1.0)
        assert count.choose() <= cores - 1
    finally:
        busy.kill()
        busy.wait()


def test_one_program_computes_at_a_time(tmp_path):
    lock = tmp_path / "cpu.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from llmos_shell.cpu.sharing import MachineTurn
        with MachineTurn({str(lock)!r}, enabled=True).held():
            print("held", flush=True)
            time.sleep(1.5)
    """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with MachineTurn(lock, enabled=True).held():
            waited = time.monotonic() - started
        assert waited >= 0.8, f"got the turn after {waited:.2f} s while another program held it"
    finally:
        holder.wait(timeout=10)
    started = time.monotonic()
    with MachineTurn(lock, enabled=True).held():   # free again: no wait
        assert time.monotonic() - started < 0.5


def test_the_cpu_gives_a_thread_back_to_a_busy_core(small_cpu):
    cores = small_cpu._threads.cores
    if cores < 2 or not os.path.exists("/proc/stat"):
        pytest.skip("one core, or no /proc/stat: there is no thread to take away")
    prompt = small_cpu.format_chat([{"role": "user", "content": "Say hi."}])
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores - 1)]
    try:
        time.sleep(0.5)
        small_cpu.generate(prompt, max_tokens=2)
        time.sleep(1.0)
        small_cpu.generate(prompt, max_tokens=2)
        assert small_cpu.n_threads <= cores - 1
    finally:
        for spinner in busy:
            spinner.kill()
            spinner.wait()
