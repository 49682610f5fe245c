"""The tool-call format and the decoding grammar built from the syscall table.

After the kernel decides that the model should call (see kernel.py), it writes
``<tool_call>\n`` itself and the model continues under this grammar: one JSON
object naming a real syscall with schema-valid arguments. The kernel closes the
block with ``\n</tool_call>``, exactly as Qwen's chat template lays tool calls
out, so the model reads and writes the special tokens it was trained on (a
grammar would make it spell ``</tool_call>`` out of plain-text pieces).
JSON Schema to GBNF is llama-cpp-python's converter.
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
def _grammar(schema_json: str) -> str:
    converter = SchemaConverter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False,
                                dotall=False, raw_pattern=False)
    schema = converter.resolve_refs(json.loads(schema_json), "syscalls")
    converter.visit(schema, "call")
    rules = converter.format_grammar()
    # This converter's string characters admit raw control characters, which JSON forbids.
    rules = rules.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x00-\\x1F] |')
    return "root ::= call\n" + rules


def call_grammar(table: SyscallTable) -> str:
    """GBNF for one call of one of the syscalls in ``table``."""
    if not len(table):
        raise ValueError("no syscalls to call")
    return _grammar(json.dumps(call_schema(table)))  # keep the declared parameter order


def parse_call(text: str) -> dict:
    """The call in one grammar-constrained JSON object."""
    call = json.loads(text)
    return {"name": call["name"], "arguments": call.get("arguments", {})}


def call_blocks(text: str) -> list[str]:
    """The JSON text of each ``<tool_call>`` block in ``text``."""
    blocks = (block.replace(CALL_CLOSE.strip(), "").strip() for block in text.split(CALL_OPEN.strip()))
    return [block for block in blocks if block]


def write_calls(calls: list[dict]) -> str:
    """The calls as the model's turn shows them: ``<tool_call>`` blocks, one per line."""
    return "\n".join(CALL_OPEN + json.dumps(call, ensure_ascii=False) + CALL_CLOSE for call in calls)
