"""The private names llmos uses of its libraries, checked against the installed versions.

Each library's private uses sit behind one adapter (cpu/llama_private.py, kernel/regex_private.py,
plugins/simpleeval_private.py), which lists them in ``PRIVATE_NAMES``. These tests check every one
still exists with the shape the adapter relies on, so an upgrade of a pinned library that renames
or reshapes one fails here, by name, rather than in the middle of a user's request. A last test
keeps the private uses inside the adapters.
"""

from __future__ import annotations

import ast
import inspect
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from conftest import raw_llama
from llmos_plugins import simpleeval_private
from llmos_shell.cpu import llama_private
from llmos_shell.kernel import regex_private

ROOT = Path(__file__).resolve().parents[1]


def pinned(package: str) -> str | None:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.split("==")[0].strip().lower() == package:
            return line.split("==", 1)[1].strip()
    return None


def parameters(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


def test_every_adapter_names_its_private_uses():
    for adapter in (llama_private, regex_private, simpleeval_private):
        assert adapter.PRIVATE_NAMES, f"{adapter.__name__} lists no private names"


# --- llama-cpp-python -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm(small_model_path):
    model = raw_llama(small_model_path, n_ctx=256, n_batch=64, n_threads=1)
    yield model
    model.close()


def test_llama_cpp_is_the_pinned_version():
    assert metadata.version("llama-cpp-python") == pinned("llama-cpp-python"), (
        "llama-cpp-python differs from the pin in constraints.txt: run this file, then update the pin")


def test_llama_cpp_private_names_have_their_shape(llm):
    import llama_cpp
    import llama_cpp._logger

    assert parameters(llama_cpp._logger.set_verbose) == ["verbose"], "llama_cpp._logger.set_verbose changed"
    assert hasattr(llm, "_batch"), "Llama._batch is gone"
    assert parameters(llm._batch.set_batch) == ["batch", "n_past", "logits_all"], "Llama._batch.set_batch changed"
    assert hasattr(llm, "_ctx"), "Llama._ctx is gone"
    assert parameters(llm._ctx.decode) == ["batch"], "Llama._ctx.decode changed"
    assert isinstance(llm._requires_eval, bool), "Llama._requires_eval is gone"
    # Setting it only helps while Llama.generate still reads it before sampling from cached logits.
    assert "self._requires_eval" in inspect.getsource(llama_cpp.Llama.generate), \
        "Llama.generate no longer reads Llama._requires_eval"
    assert set(llama_private.PRIVATE_NAMES) == {"llama_cpp._logger.set_verbose", "Llama._batch.set_batch",
                                                "Llama._ctx.decode", "Llama._requires_eval"}, \
        "llama_private uses a private name this test does not check"


def test_llama_adapter_reads_the_model(llm):
    """Each adapter function against llama-cpp-python's own public answers."""
    tokens = llm.tokenize(b"The cat sat on the mat", add_bos=False)
    assert llama_private.token_bytes(llm, tokens[1]) == llm.detokenize([tokens[1]])
    assert llama_private.token_text(llm, llm.token_eos()) == "<|im_end|>"
    llm.reset()
    llm.eval(tokens)
    assert llama_private.evaluated_tokens(llm) == tokens
    last = llama_private.logits(llm).copy()
    assert last.shape == (llm.n_vocab(),) and np.isfinite(last).all()
    # Every position's logits from one batch: the last row is the logits Llama.eval left.
    llama_private.forget_from(llm, 2)
    llm.n_tokens = 2
    llama_private.decode_keeping_all_logits(llm, tokens[2:])
    rows = llama_private.logits(llm, len(tokens) - 2)
    assert rows.shape == (len(tokens) - 2, llm.n_vocab())
    assert np.allclose(rows[-1], last, atol=1e-2)
    assert llama_private.evaluated_tokens(llm) == tokens
    llama_private.mark_logits_stale(llm)
    assert llm._requires_eval is True


# --- Python's re parser -------------------------------------------------------------------------------

def test_re_parser_private_names_have_their_shape():
    parsed = regex_private.parse(r"^a[0-9]+$")
    assert isinstance(parsed.state.flags, int), "re._parser.parse(...).state.flags changed"
    constants = regex_private.constants
    missing = [name for name in regex_private.OPCODES + regex_private.AT_CODES + regex_private.CATEGORIES
               + ("MAXREPEAT",) if not hasattr(constants, name)]
    assert not missing, f"re._constants lacks {missing}"
    assert [op for op, _ in parsed] == [constants.AT, constants.LITERAL, constants.MAX_REPEAT, constants.AT]
    low, high, items = list(parsed)[2][1]
    assert (low, high) == (1, constants.MAXREPEAT) and list(items) == [(constants.IN, [(constants.RANGE, (48, 57))])]
    assert regex_private.parse("(?i)a").state.flags & re.IGNORECASE


# --- simpleeval -------------------------------------------------------------------------------------

def test_simpleeval_is_the_pinned_version():
    assert metadata.version("simpleeval") == pinned("simpleeval"), (
        "simpleeval differs from the pin in constraints.txt: run this file, then update the pin")


def test_simpleeval_private_names_have_their_shape():
    from simpleeval import SimpleEval

    evaluator = SimpleEval()
    for name in ("_eval_name", "_eval_unaryop", "_eval_binop", "_eval_call"):
        method = getattr(SimpleEval, name, None)
        assert method is not None and parameters(method) == ["node"], f"SimpleEval.{name} is gone or changed"
    assert isinstance(evaluator.nodes, dict) and evaluator.nodes.get(ast.BinOp) == evaluator._eval_binop, \
        "SimpleEval.nodes no longer maps node types to its _eval_* methods"
    assert set(simpleeval_private.PRIVATE_NAMES) == {"SimpleEval._eval_name", "SimpleEval._eval_unaryop",
                                                     "SimpleEval._eval_binop", "SimpleEval._eval_call",
                                                     "SimpleEval.nodes"}


def test_simpleeval_adapter_walks_arithmetic_only():
    from simpleeval import FeatureNotAvailable, SimpleEval

    evaluator = SimpleEval(names={"pi": 3})
    simpleeval_private.arithmetic_only(evaluator, lambda node: node.value)

    def value(text: str):   # one expression, parsed as the calculator parses it
        return evaluator.eval(text, previously_parsed=ast.parse(text, mode="eval").body)

    assert value("-(2 + pi) * 4") == -20
    with pytest.raises(FeatureNotAvailable):
        value("(1).real")


# --- nothing else reaches them --------------------------------------------------------------------

ADAPTERS = {ROOT / "llmos_shell/cpu/llama_private.py", ROOT / "llmos_shell/kernel/regex_private.py",
            ROOT / "plugins/simpleeval_private.py"}
PRIVATE_USE = re.compile(r"(?<![A-Za-z])_?llm\._\w|\._(ctx|batch|input_ids|requires_eval)\b|llama_cpp\._|"
                         r"re\._parser|re\._constants|sre_parse|sre_constants|\._eval_\w+")


def test_private_uses_stay_in_the_adapters():
    found = []
    for path in sorted((ROOT / "llmos_shell").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py")):
        if path in ADAPTERS:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_USE.search(line.split("#")[0]):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "private library names used outside their adapter:\n" + "\n".join(found)
