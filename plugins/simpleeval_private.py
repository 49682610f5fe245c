"""simpleeval's private node evaluators, in one place.

The calculator (system.py) lets simpleeval walk only arithmetic: names, unary and binary
operators, calls, and numbers read exactly. simpleeval has no public way to narrow the nodes it
walks, so this hands its ``nodes`` table its own private ``_eval_*`` methods for the kinds kept.
``PRIVATE_NAMES`` lists them; tests/test_private_apis.py checks each against the installed
simpleeval (pinned in constraints.txt), so an upgrade that renames one fails there by name.
"""

from __future__ import annotations

import ast
from typing import Any, Callable

PRIVATE_NAMES = {
    "SimpleEval._eval_name": "a method (node)",
    "SimpleEval._eval_unaryop": "a method (node)",
    "SimpleEval._eval_binop": "a method (node)",
    "SimpleEval._eval_call": "a method (node)",
    "SimpleEval.nodes": "an instance's dict from ast node type to the method that evaluates it",
}


def arithmetic_only(evaluator, number: Callable[[ast.Constant], Any]) -> None:
    """Let ``evaluator`` (a ``SimpleEval``) walk names, operators, calls and constants (read by
    ``number``) and refuse every other node: attributes, subscripts, comparisons, strings..."""
    evaluator.nodes = {ast.Name: evaluator._eval_name, ast.UnaryOp: evaluator._eval_unaryop,
                       ast.BinOp: evaluator._eval_binop, ast.Call: evaluator._eval_call,
                       ast.Constant: number}
