"""Any valid JSON Schema a task declares is accepted; one bad task never takes the batch down.

Schemas are generated with a fixed seed, each with an argument value that satisfies it, from
the constructs clients send: typeless properties, anyOf/oneOf, $ref/$defs (recursive too),
enums of mixed types, const, nested arrays, lists of types, additionalProperties schemas,
pattern and format (and, for the batch, constructs no grammar expresses: not, allOf, minimum).
"""

from __future__ import annotations

import contextlib
import io
import json
import random

import jsonschema
import pytest
import yaml

from conftest import assert_one_line_error, run_llmos
from llmos_shell.config import setup_logging
from llmos_shell.kernel.grammar import CALL_OPEN, call_grammar, parse_call, pattern_rule, write_calls
from llmos_shell.syscalls import SyscallTable, declared_syscall
from llmos_shell.testing import FakeCpu, make_system, small_cpu


def _point() -> dict:
    return {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            "required": ["x", "y"]}


# (schema, a value it accepts, whether the grammar enforces it all); "$defs" of a construct go to the root
CONSTRUCTS = [
    lambda rng: ({"description": "The training data for the model."}, "rows.csv", True),
    lambda rng: ({"anyOf": [{"type": "string", "maxLength": 12}, {"type": "integer"}]}, rng.randint(0, 9), True),
    lambda rng: ({"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "integer"}, "maxItems": 3}]},
                 None, True),
    lambda rng: ({"$ref": "#/$defs/point"}, {"x": 1, "y": 2}, True),
    lambda rng: ({"type": "array", "items": {"$ref": "#/$defs/point"}, "maxItems": 2}, [{"x": 0, "y": 0}], True),
    lambda rng: ({"enum": ["red", 3, None, True, 2.5]}, rng.choice(["red", 3, None, True, 2.5]), True),
    lambda rng: ({"const": "fixed"}, "fixed", True),
    lambda rng: ({"const": {"mode": "a\\b \"q\""}}, {"mode": "a\\b \"q\""}, True),
    lambda rng: ({"type": "array", "maxItems": 2, "items": {"type": "array", "maxItems": 2,
                                                           "items": {"type": "integer"}}}, [[1, 2], []], True),
    lambda rng: ({"type": ["string", "null"], "maxLength": 16}, None, True),
    lambda rng: ({"type": ["integer", "boolean"]}, False, True),
    lambda rng: ({"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 3},
                 {"a": 1}, False),
    lambda rng: ({"type": "object", "properties": {"k": {"type": "string", "maxLength": 8}},
                  "additionalProperties": {"type": "boolean"}, "required": ["k"]}, {"k": "v"}, True),
    lambda rng: ({"type": "string", "pattern": "^[a-z]{2,5}-[0-9]{2}$"}, "ab-12", True),
    lambda rng: ({"type": "string", "pattern": r"^\d{3}\.\w+$"}, "123.ok", True),
    lambda rng: ({"type": "string", "pattern": "[xyz]", "maxLength": 10}, "a-x", True),
    lambda rng: ({"type": "string", "format": "date"}, "2024-02-29", True),
    lambda rng: ({"type": "string", "format": "email", "maxLength": 30}, "a@b.example", True),
    lambda rng: ({"$ref": "#/$defs/tree"}, {"v": 1, "kids": [{"v": 2}]}, True),
    lambda rng: (True, "anything", True),
    lambda rng: ({}, [1, "two"], True),
    # beyond any grammar: decoded loosely, still validated
    lambda rng: ({"not": {"type": "null"}}, 1, False),
    lambda rng: ({"allOf": [{"type": "string"}, {"minLength": 2}]}, "ok", False),
    lambda rng: ({"type": "integer", "minimum": 5, "maximum": 9}, 7, False),
    lambda rng: ({"type": "string", "pattern": "^(?=a)ab$"}, "ab", False),
    lambda rng: ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "maxItems": 3}, [1, 2], False),
]

DEFS = {"point": _point(),
        "tree": {"type": "object", "properties": {"v": {"type": "integer"},
                                                  "kids": {"type": "array", "items": {"$ref": "#/$defs/tree"},
                                                           "maxItems": 2}},
                 "required": ["v"]}}


def generated_function(rng: random.Random, index: int, *, enforced_only: bool = False,
                       most: int = 3) -> tuple[dict, dict]:
    """A declared function using 1 to ``most`` constructs, and arguments that satisfy its schema."""
    properties, arguments = {}, {}
    choices = [c for c in CONSTRUCTS if not enforced_only or c(rng)[2]]
    for k in range(rng.randint(1, most)):
        schema, value, _enforced = rng.choice(choices)(rng)
        properties[f"p{k}"] = schema
        arguments[f"p{k}"] = value
    parameters = {"type": "object", "properties": properties, "required": sorted(properties)}
    if "$ref" in json.dumps(properties):
        parameters["$defs"] = DEFS
    spec = {"name": f"fn_{index}", "description": f"Function number {index}.", "parameters": parameters}
    jsonschema.validate(arguments, parameters)  # the generator itself is right
    return spec, arguments


def test_generated_schemas_and_values_agree():
    rng = random.Random(7)
    for index in range(300):
        spec, arguments = generated_function(rng, index)
        syscall = declared_syscall(spec)
        assert syscall.validate(arguments)
        table = SyscallTable()
        table.add(syscall)
        assert call_grammar(table).startswith("root ::= call")


def test_pattern_translation_writes_json_strings():
    assert pattern_rule("^[a-z]{2}$") == '"\\"" ([\\x61-\\x7A]){2} "\\""'
    # unanchored: anything around it; a quote or a backslash is written escaped
    assert pattern_rule('a"') == '"\\"" [^"\\\\\\x00-\\x1F]* "a" "\\\\\\"" [^"\\\\\\x00-\\x1F]* "\\""'
    with pytest.raises(ValueError):
        pattern_rule("(a)\\1")  # a backreference: no grammar for it


def test_invalid_schema_is_a_bad_task_file_naming_the_function(tmp_path, home):
    bad = {"name": "broken", "parameters": {"type": "object", "properties": {"x": {"type": "colour"}}}}
    dangling = {"name": "dangling", "parameters": {"type": "object", "properties": {"x": {"$ref": "#/$defs/no"}}}}
    for spec in (bad, dangling):
        path = tmp_path / f"{spec['name']}.md"
        path.write_text("---\n" + yaml.safe_dump({"functions": [spec]}) + "---\nCall it.\n")
        line = assert_one_line_error(run_llmos("run", str(path), home=home), 2)
        assert str(path) in line and f"function {spec['name']!r}" in line and "functions.0" in line, line


# --- a batch of 200 tasks, in-process with the scripted CPU --------------------------------------

def run_batch(system, files: list[str]) -> tuple[int, list[dict], str]:
    from llmos_shell.cli.app import CliState
    from llmos_shell.cli.run import run_command

    state = CliState(system.config)
    state.__dict__["system"] = system  # the cached System, with its scripted CPU
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_command.main(["--json", *files], obj=state, standalone_mode=False)
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_a_batch_of_200_tasks_finishes_every_task(tmp_path):
    rng = random.Random(20261124)
    cpu = FakeCpu()
    system = make_system(tmp_path / "home", plugins=[], cpu=cpu)
    setup_logging(system.config)
    files, expected = [], {}
    for index in range(200):
        spec, arguments = generated_function(rng, index)
        kind = "call" if index % 10 else ("broken" if index % 20 == 0 else "reply")
        path = tmp_path / f"task{index:03d}.md"
        path.write_text("---\n" + yaml.safe_dump({"functions": [spec], "max_steps": 2}, sort_keys=False)
                        + f"---\nTask {index}: call {spec['name']} with {json.dumps(arguments)}.\n")
        files.append(str(path))
        if kind == "call":
            cpu.enqueue(write_calls([{"name": spec["name"], "arguments": arguments}]))
        elif kind == "broken":  # the decoder hands back no JSON: an internal error, not the user's
            cpu.enqueue(CALL_OPEN + '{"name": "' + spec["name"] + '", "arguments": {')
        else:
            cpu.enqueue(f"Reply to task {index}.")
        expected[str(path)] = (kind, spec, arguments)
    try:
        code, results, err = run_batch(system, files)
        assert [r["task"] for r in results] == files  # every task gave its result line, in order
        statuses = {"call": "tool_calls", "broken": "error", "reply": "ok"}
        for result in results:
            kind, spec, arguments = expected[result["task"]]
            assert result["status"] == statuses[kind], (result, spec)
            process = system.fs.get_process(result["pid"])
            assert process["status"] == result["status"]  # nothing left "running"
            if kind == "call":
                call = result["syscalls"][0]
                assert call["status"] == "declared" and call["name"] == spec["name"]
                jsonschema.validate(call["arguments"], spec["parameters"])
            elif kind == "broken":
                assert result["error"].startswith("internal error: JSONDecodeError:")
        assert code == 1  # the worst of them: the tasks that failed
        assert err.count("\n") == 0  # with --json, the failures are in their result lines
        log = (system.config.log_path).read_text()
        assert log.count("Traceback") == 10 and "task " in log  # one traceback per broken task
        assert "falling back to any JSON object" not in log  # every schema got a grammar of its own
    finally:
        system.close()


def test_a_bad_file_in_a_batch_is_the_worst_exit_code(tmp_path):
    cpu = FakeCpu()
    system = make_system(tmp_path / "home", plugins=[], cpu=cpu)
    good = tmp_path / "good.md"
    good.write_text("---\nmax_steps: 1\n---\nSay hi.\n")
    bad = tmp_path / "bad.md"
    bad.write_text("---\nfunctions: [{name: f, parameters: {type: object, properties: {x: {minimum: a}}}}]\n"
                   "---\nHi\n")
    cpu.enqueue("Hi.")
    try:
        code, results, err = run_batch(system, [str(good), str(bad)])
    finally:
        system.close()
    assert code == 2 and [r["status"] for r in results] == ["ok"]
    assert str(bad) in err and "function 'f'" in err


# --- real calls under the grammar, with the small model --------------------------------------------

@pytest.fixture(scope="module")
def real_cpu():
    cpu = small_cpu()
    yield cpu
    cpu.close()


def test_thirty_schemas_decode_to_valid_calls_with_a_real_model(real_cpu):
    rng = random.Random(31)
    finished = 0
    for index in range(30):
        spec, _ = generated_function(rng, index, enforced_only=True, most=1)  # one construct: short calls
        table = SyscallTable()
        table.add(declared_syscall(spec))
        prompt = real_cpu.format_chat([{"role": "user", "content": f"Call {spec['name']} with example values."}],
                                      tools=[s.tool_schema() for s in table])
        generation = real_cpu.generate(prompt + CALL_OPEN, max_tokens=120, grammar=call_grammar(table))
        if generation.finish_reason == "length":
            continue  # the model went on past the budget: nothing to check, nothing wrong
        call = parse_call(generation.text)  # exactly one JSON object
        assert call["name"] == spec["name"]
        jsonschema.validate(call["arguments"], spec["parameters"])  # raises if not schema-valid
        finished += 1
    assert finished >= 20  # most calls end well within the budget
