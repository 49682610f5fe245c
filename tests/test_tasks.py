"""Headless tasks: checking task files, JSON output, exit codes, determinism, approval, the examples."""

from __future__ import annotations

import contextlib
import io
import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, assert_one_line_error, run_llmos
from llmos_shell.cli.app import main
from llmos_shell.config import TEST_MODEL
from llmos_shell.errors import UsageError
from llmos_shell.tasks import FRONT_MATTER_SCHEMA, load_task

EXAMPLES = REPO / "examples"


def write(tmp_path: Path, text: str, name: str = "task.md") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, field", [
    ("---\ncolour: red\n---\nHi", "colour"),
    ("---\nmax_steps: many\n---\nHi", "max_steps"),
    ("---\napprove: sometimes\n---\nHi", "approve"),
    ("---\ninputs: [missing.txt]\n---\nHi", "inputs.0"),
    ("---\nmodel: [1, 2\n---\nHi", "bad YAML"),
    ("---\nmax_steps: 3\n---\n   \n", "no request"),
    ("---\n- a\n- b\n---\nHi", "mapping"),
    ("---\nturns: hello\n---\nHi", "turns"),
    ("---\nfunctions: [{description: x}]\n---\nHi", "functions.0"),
    ("---\ntemperature: 9\n---\nHi", "temperature"),
    ("---\noutput: relative/path.md\n---\nHi", "output"),
    ("---\nmax_steps: 3\nHi", "never closed"),
])
def test_bad_task_files_name_the_file_and_field(tmp_path, home, text, field):
    path = write(tmp_path, text)
    result = run_llmos("run", str(path), home=home)
    line = assert_one_line_error(result, 2)
    assert str(path) in line and field in line, line


def test_missing_task_file(home, tmp_path):
    result = run_llmos("run", str(tmp_path / "nope.md"), home=home)
    assert "no such task file" in assert_one_line_error(result, 2)


def test_valid_task_parses(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    task = load_task(str(write(tmp_path, "---\ninputs: [a.txt]\nmax_steps: 2\nseed: 1\n---\nDo it.\n")))
    assert task.body == "Do it." and task.inputs == [tmp_path / "a.txt"] and task.get("max_steps") == 2


# --- 1,000 malformed task files --------------------------------------------------------------

KEYS = sorted(FRONT_MATTER_SCHEMA["properties"])
WRONG = {"model": [1, [], {}], "drivers": ["all", 3, [1]], "approve": ["yes", 1, None], "max_steps": ["x", 0, 1.5, -3],
         "inputs": ["a.txt", [3], ["no-such-file.txt"]], "output": [3, "relative.md", []],
         "functions": ["f", [1], [{"name": 3}], [{"description": "no name"}]], "turns": ["t", [1], [""]],
         "seed": ["s", -1, 1.5], "temperature": ["hot", -1, 5]}

unknown_key = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=12).filter(lambda k: k not in KEYS)
wrong_value = st.sampled_from([(k, v) for k, values in WRONG.items() for v in values])


@st.composite
def malformed_task(draw) -> bytes:
    kind = draw(st.sampled_from(["unknown_key", "wrong_type", "bad_yaml", "empty_body", "not_mapping",
                                 "binary", "unclosed"]))
    body = draw(st.text(alphabet=string.ascii_letters + " .?", min_size=1, max_size=40)).strip() or "Hi"
    if kind == "unknown_key":
        front = yaml.safe_dump({draw(unknown_key): draw(st.integers() | st.text(max_size=5))})
    elif kind == "wrong_type":
        key, value = draw(wrong_value)
        front = yaml.safe_dump({key: value})
    elif kind == "bad_yaml":
        front = draw(st.sampled_from(["a: [1, 2", "{unclosed", "key: : :", "- [x", "a: 'b", "\t- x: y"])) + "\n"
    elif kind == "empty_body":
        return f"---\nmax_steps: 2\n---\n{draw(st.sampled_from(['', ' ', chr(10) * 3]))}".encode()
    elif kind == "not_mapping":
        front = draw(st.sampled_from(["- a\n", "42\n", "'text'\n", "[1, 2]\n"]))
    elif kind == "binary":
        return b"\xff\xfe" + draw(st.binary(min_size=1, max_size=40))
    else:
        return f"---\nmax_steps: 2\n{body}\n".encode()
    return f"---\n{front}---\n{body}\n".encode()


def run_in_process(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exit_:
            return int(exit_.code or 0), err.getvalue()
    return 0, err.getvalue()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=malformed_task())
def test_a_thousand_malformed_task_files(tmp_path, data):
    path = tmp_path / "fuzzed.md"
    path.write_bytes(data)
    code, err = run_in_process(["--home", str(tmp_path / "home"), "run", str(path)])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (data, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0]


# --- running with the small model ----------------------------------------------------------------

def test_json_output_fields(tmp_path, home, small_model_path):
    path = write(tmp_path, "---\ndrivers: []\nmax_steps: 2\noutput: /outputs/hello.md\n---\nSay hello.")
    result = run_llmos("--model", TEST_MODEL, "run", "--json", str(path), home=home)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["output"].strip() and data["task"] == str(path)
    assert data["model"]["name"] == TEST_MODEL and len(data["model"]["sha256"]) == 64
    assert data["usage"]["prompt_tokens"] > 0 and data["usage"]["completion_tokens"] > 0
    turn = data["timing"]["turns"][0]
    assert {"prefill_tokens", "cached_tokens", "ttft_ms", "decode_tokens", "decode_tok_s"} <= set(turn)
    saved = run_llmos("fs", "cat", "/outputs/hello.md", home=home)
    assert saved.stdout.strip() == data["output"].strip()
    log = run_llmos("log", "--json", "--pid", str(data["pid"]), home=home)
    assert log.returncode == 0, log.stderr


def test_run_takes_the_documented_options_after_the_files(tmp_path, home, small_model_path):
    path = write(tmp_path, "---\ndrivers: []\nmax_steps: 1\n---\nSay hello.")
    # the documented form; the run-level --model wins over the global one
    result = run_llmos("--model", "no-such-model", "run", str(path), "--json", "--model", TEST_MODEL,
                       "--approve", "never", "--max-steps", "1", home=home)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["model"]["name"] == TEST_MODEL
    short = run_llmos("run", str(path), "-m", TEST_MODEL, home=home)
    assert short.returncode == 0 and short.stdout.strip(), short.stderr
    unknown = run_llmos("run", str(path), "--model", "no-such-model", home=home)
    assert "no-such-model" in assert_one_line_error(unknown, 2)


def test_same_seed_same_output(tmp_path, home, small_model_path):
    path = write(tmp_path, "---\ndrivers: []\nseed: 11\ntemperature: 0.9\n---\nWrite one line about rain.")
    first = run_llmos("--model", TEST_MODEL, "run", str(path), home=home)
    second = run_llmos("--model", TEST_MODEL, "run", str(path), home=home)
    assert first.returncode == 0 and first.stdout.strip() and first.stdout == second.stdout


def test_stdin_task_and_batch_exit_code(tmp_path, home, small_model_path):
    result = run_llmos("--model", TEST_MODEL, "run", "-", home=home, input="---\ndrivers: []\n---\nSay yes.")
    assert result.returncode == 0 and result.stdout.strip()
    good = write(tmp_path, "---\ndrivers: []\nmax_steps: 1\n---\nSay hi.", "good.md")
    bad = write(tmp_path, "---\ncolour: red\n---\nHi", "bad.md")
    batch = run_llmos("--model", TEST_MODEL, "run", "--json", str(good), str(bad), home=home)
    assert batch.returncode == 2  # the worst of the tasks
    assert json.loads(batch.stdout.splitlines()[0])["task"] == str(good)  # the good one still ran


# --- the examples, with the default model -------------------------------------------------------

def run_example(name: str, home: Path, *extra: str):
    result = run_llmos("run", "--json", *extra, str(EXAMPLES / name), home=home)
    return result, (json.loads(result.stdout) if result.stdout.strip() else {})




@pytest.mark.model
def test_example_declared_function(home):
    result, data = run_example("weather-function.md", home)
    assert result.returncode == 0, result.stderr
    assert data["status"] == "tool_calls"
    call = data["syscalls"][0]
    assert call["name"] == "get_weather" and call["status"] == "declared"
    assert call["arguments"]["city"].lower() in ("lisbon", "lisboa")


@pytest.mark.model
def test_example_denied_delete_keeps_the_file(home):
    result, data = run_example("cleanup-denied.md", home)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert data["status"] == "denied"
    assert data["syscalls"][-1]["name"] == "delete_file" and data["syscalls"][-1]["status"] == "denied"
    still = run_llmos("fs", "cat", "/inputs/old-notes.txt", home=home)
    assert still.returncode == 0 and "plumber" in still.stdout


@pytest.mark.model
def test_example_conversation(home):
    result, data = run_example("conversation.md", home)
    assert result.returncode == 0, result.stderr
    assert data["status"] == "ok" and len(data["timing"]["turns"]) >= 3
    # the last turn ("Which of the two cities is further north?") is answered from the earlier ones
    assert "paris" in data["output"].lower() or "rome" in data["output"].lower()
    # the later turns reuse the KV cache of the earlier ones
    assert data["timing"]["turns"][-1]["cached_tokens"] > 0


@pytest.mark.model
def test_example_summarise_report(home):
    result, data = run_example("summarise-report.md", home)
    # the request names a file, so the model calls; the summary is about the report's subject
    assert result.returncode == 0, (result.stdout, result.stderr)
    first = data["syscalls"][0]
    assert first["name"] == "summarise" and first["arguments"]["path"] == "/inputs/report.txt"
    assert "librar" in first["result"]["summary"].lower()
    # one step, then the summary itself is the reply (summarise declares it as its output)
    assert len(data["syscalls"]) == 1
    assert data["status"] == "ok" and data["output"] == first["result"]["summary"]
    saved = run_llmos("fs", "cat", "/outputs/report-summary.md", home=home)
    assert saved.returncode == 0 and "librar" in saved.stdout.lower()
    # every pass of the CPU is timed and counted (none here: the path is the one named, and nothing
    # else was asked, so the call needs no decoding)
    passes = data["timing"]["turns"]
    assert all(p["kind"] == "call" for p in passes)
    assert data["usage"]["prompt_tokens"] == sum(p["prefill_tokens"] + p["cached_tokens"] for p in passes)


@pytest.mark.model
def test_example_translate_note(home):
    result, data = run_example("translate-note.md", home)
    assert result.returncode == 0, (result.stdout, result.stderr)
    call = data["syscalls"][0]
    assert call["name"] == "translate" and call["status"] == "ok"
    assert "cat is on the table" in call["arguments"]["text"].lower()
    assert call["arguments"]["target_lang"].lower() in ("es", "spa", "spanish")
    translation = call["result"]["translation"].lower()
    assert "gato" in translation and "mesa" in translation
    assert "gato" in data["output"].lower()  # the reply gives the translation


@pytest.mark.model
@pytest.mark.system
def test_example_sign_to_spanish(home):
    result, data = run_example("sign-to-spanish.md", home)
    assert result.returncode == 0, (result.stdout, result.stderr)
    # the file is read first (the model cannot know what it says), then what it says is translated
    assert [call["name"] for call in data["syscalls"]] == ["ocr", "translate"]
    ocr, translate = data["syscalls"]
    assert "MUSEUM" in ocr["result"]["text"] and "MUSEUM" in translate["arguments"]["text"]
    assert "museo" in translate["result"]["translation"].lower()
    assert "museo" in data["output"].lower()
