"""Syscalls: schemas from signatures, validation fuzzed, and grammar-constrained decoding of 50 schemas."""

from __future__ import annotations

import random
from typing import Literal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmos_shell.kernel.grammar import CALL_OPEN, call_blocks, call_grammar, parse_call, write_calls
from llmos_shell.syscalls import (ArgumentError, SyscallError, SyscallTable, declared_syscall, make_syscall,
                                  normalise_schema)


def book(city: str, nights: int, budget: float = 100.0, pets: bool = False,
         room: Literal["single", "double"] = "double", extras: list[str] | None = None, ctx=None) -> str:
    """Book a hotel room.

    Args:
        city: Where to stay.
        nights: How many nights.
        budget: Most to pay per night.
        pets: Whether a pet comes along.
        room: The kind of room.
        extras: Anything else to ask for.
    """
    return f"{city}:{nights}"


def test_schema_from_signature():
    syscall = make_syscall(book, capabilities=["irreversible"])
    props = syscall.parameters["properties"]
    assert syscall.description == "Book a hotel room."
    assert syscall.parameters["required"] == ["city", "nights"]
    assert props["city"] == {"type": "string", "description": "Where to stay."}
    assert props["nights"]["type"] == "integer" and props["budget"]["default"] == 100.0
    assert props["room"]["enum"] == ["single", "double"] and props["room"]["type"] == "string"
    assert props["extras"]["type"] == "array" and props["extras"]["items"] == {"type": "string"}
    assert "ctx" not in props and syscall.wants_ctx and syscall.irreversible


def test_validation_fills_defaults_and_refuses_bad_arguments():
    syscall = make_syscall(book)
    assert syscall.validate({"city": "Oslo", "nights": 2})["room"] == "double"
    for bad in ({"city": "Oslo"}, {"city": "Oslo", "nights": "two"}, {"city": "Oslo", "nights": 1, "room": "suite"},
                {"city": "Oslo", "nights": 1, "spa": True}, ["Oslo", 2]):
        with pytest.raises(ArgumentError) as error:
            syscall.validate(bad)
        assert str(error.value).startswith("book: ") and "\n" not in str(error.value)


def test_bad_syscall_definitions_are_refused():
    def undocumented(x: int) -> int:
        return x

    def untyped(x):
        """Has no types."""

    def varargs(*args: int):
        """Takes anything."""

    for function in (undocumented, untyped, varargs):
        with pytest.raises(SyscallError):
            make_syscall(function)
    with pytest.raises(SyscallError, match="unknown capabilities"):
        make_syscall(book, capabilities=["teleports"])
    with pytest.raises(SyscallError, match="invalid syscall name"):
        make_syscall(book, name="no spaces")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=10)


@settings(max_examples=500, deadline=None)
@given(arguments=json_values | st.dictionaries(st.sampled_from(["city", "nights", "budget", "pets", "room", "extras", "x"]),
                                               json_values, max_size=6))
def test_fuzzed_arguments_are_accepted_or_refused_cleanly(arguments):
    syscall = make_syscall(book)
    schema_ok = jsonschema.Draft202012Validator(syscall.parameters).is_valid(arguments)
    try:
        filled = syscall.validate(arguments)
    except ArgumentError:
        assert not schema_ok
    else:
        assert schema_ok and set(arguments) <= set(filled)


# --- 50 generated schemas, decoded by the real small model under the grammar ----------------

def random_schema(rng: random.Random, depth: int = 0) -> dict:
    kind = rng.choice(["string", "integer", "number", "boolean", "enum", "array", "object"] if depth < 2
                      else ["string", "integer", "number", "boolean", "enum"])
    if kind == "enum":
        return {"type": "string", "enum": rng.sample(["red", "green", "blue", "north", "south", "fast", "slow"], 3)}
    if kind == "array":  # bounded, as real schemas often are: the grammar must honour the bounds
        return {"type": "array", "items": random_schema(rng, depth + 1), "maxItems": rng.randint(1, 4)}
    if kind == "object":
        return random_object(rng, depth + 1)
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(4, 24)}
    return {"type": kind}


def random_object(rng: random.Random, depth: int = 0) -> dict:
    names = rng.sample(["city", "count", "ratio", "enabled", "colour", "tags", "owner", "limit", "note", "size"],
                       rng.randint(1, 4))
    properties = {name: random_schema(rng, depth) for name in names}
    required = [name for name in names if rng.random() < 0.6]
    return {"type": "object", "properties": properties, "required": required}


def test_grammar_accepts_a_valid_call_and_parses_it():
    table = SyscallTable()
    table.add(declared_syscall({"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}))
    grammar = call_grammar(table)
    assert grammar.startswith("root ::= call")
    text = CALL_OPEN + '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert [parse_call(block) for block in call_blocks(text)] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert write_calls([{"name": "get_weather", "arguments": {"city": "Paris"}}]) == text


def test_bfcl_style_types_are_normalised():
    schema = normalise_schema({"type": "dict", "properties": {"x": {"type": "float"}, "t": {"type": "tuple"}},
                               "required": ["x", "missing"]})
    assert schema == {"type": "object", "properties": {"x": {"type": "number"}, "t": {"type": "array"}},
                      "required": ["x"]}


def test_fifty_generated_schemas_always_decode_to_valid_calls(small_cpu):
    rng = random.Random(20261123)
    for index in range(50):
        functions = [{"name": f"tool_{index}_{k}", "description": f"Tool number {k}.",
                      "parameters": random_object(rng)} for k in range(rng.randint(1, 3))]
        table = SyscallTable()
        for spec in functions:
            table.add(declared_syscall(spec))
        prompt = small_cpu.format_chat([{"role": "user", "content": f"Use one of the tools, please ({index})."}],
                                       tools=[s.tool_schema() for s in table])
        generation = small_cpu.generate(prompt + CALL_OPEN, max_tokens=1500, grammar=call_grammar(table))
        assert generation.finish_reason == "stop", (index, generation.text)
        call = parse_call(generation.text)  # the text is exactly one JSON object
        syscall = table.get(call["name"])
        jsonschema.validate(call["arguments"], syscall.parameters)  # raises if not schema-valid
