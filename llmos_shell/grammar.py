"""The decoding grammar built from the syscall table.

After the kernel decides that the model should call (see kernel.py), the model
continues from ``<tool_call>\\n`` under this grammar: one JSON object naming a
real syscall with schema-valid arguments, closed by ``</tool_call>``, optionally
followed by more calls (parallel calls), exactly as Qwen's chat template lays
tool calls out. JSON Schema to GBNF is llama-cpp-python's converter.
"""

from __future__ import annotations

import json
from functools import lru_cache

from llama_cpp.llama_grammar import SchemaConverter

from llmos_shell.syscalls import SyscallTable

CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"
# Most calls in one step: without a bound, small models repeat the same call until the token limit.
MAX_PARALLEL_CALLS = 5


def call_schema(table: SyscallTable) -> dict:
    """JSON Schema of one call: {"name": <a syscall>, "arguments": <its parameters>}."""
    options = []
    for syscall in table:
        options.append({
            "type": "object",
            "properties": {"name": {"const": syscall.name}, "arguments": syscall.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    return options[0] if len(options) == 1 else {"oneOf": options}


@lru_cache(maxsize=64)
def _grammar(schema_json: str, parallel: bool) -> str:
    converter = SchemaConverter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False,
                                dotall=False, raw_pattern=False)
    schema = converter.resolve_refs(json.loads(schema_json), "syscalls")
    converter.visit(schema, "call")
    close = json.dumps(CALL_CLOSE)
    more = f' ( "\\n" {json.dumps(CALL_OPEN)} call {close} )?' * (MAX_PARALLEL_CALLS - 1) if parallel else ""
    rules = converter.format_grammar()
    # This converter's string characters admit raw control characters, which JSON forbids.
    rules = rules.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x00-\\x1F] |')
    return f"root ::= call {close}{more}\n" + rules


def call_grammar(table: SyscallTable, parallel: bool = True) -> str:
    """GBNF for one call (or up to MAX_PARALLEL_CALLS, if ``parallel``) of the syscalls in ``table``."""
    if not len(table):
        raise ValueError("no syscalls to call")
    return _grammar(json.dumps(call_schema(table)), parallel)  # keep the declared parameter order


def parse_calls(text: str) -> list[dict]:
    """The calls in grammar-constrained output (the text after the first ``<tool_call>\\n``)."""
    calls = []
    for block in text.split("<tool_call>"):
        block = block.replace("</tool_call>", "").strip()
        if not block:
            continue
        call = json.loads(block)
        calls.append({"name": call["name"], "arguments": call.get("arguments", {})})
    return calls
