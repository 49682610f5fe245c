"""The model chooses: the planner for declared functions (task files, API clients) and drivers without examples.

Each step asks the CPU one cheap question first: how likely is the model to start a tool call
here (p(call), :meth:`Engine.wants_call`)? At or above the threshold (KernelPolicy), it decodes a
call under the grammar of the process's syscall table, so the call always names a real syscall
with schema-valid arguments; otherwise the model replies. Below the threshold, the first step of a
turn still writes a candidate call and keeps it only if the request spells out every value in it
(small models answer from memory what a function would look up). A call is then checked against
what the user said: the first call of a turn must be about the request (:meth:`relevant`), values
nobody said leave it, further calls must be grounded or bring something new (grounding.py).
"""

from __future__ import annotations

import logging

from llmos_shell.errors import Cancelled, LlmosError
from llmos_shell.kernel.engine import Engine, Run
from llmos_shell.kernel.grammar import CALL_OPEN, MAX_PARALLEL_CALLS, call_grammar, parse_call, write_calls
from llmos_shell.kernel.grounding import Source, all_said, grounded, refines, repeats, without_inventions
from llmos_shell.kernel.language import WORDS
from llmos_shell.kernel.places import PATH
from llmos_shell.kernel.process import Process
from llmos_shell.kernel.turn import TurnResult, result_text, unmended_failure
from llmos_shell.syscalls import Syscall, SyscallTable

log = logging.getLogger("llmos.kernel")

# Syscalls that work on the filesystem.
FILE_CAPABILITIES = ("reads_fs", "writes_fs")


class ModelPlanner:
    """Steps of p(call), a decoded call and its checks, dispatch; then the model's reply."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.kernel = engine.kernel   # max_steps, max_tokens, policy, force_call

    def turn(self, process: Process, text: str, turn: TurnResult, run: Run) -> None:
        engine, kernel, policy = self.engine, self.kernel, self.kernel.policy
        turn.roles = engine.roles(text)
        for _step in range(kernel.max_steps):
            if run.cancel.is_set():
                raise Cancelled("cancelled")
            prompt, _used = process.memory.prompt(engine.cpu, reserve=kernel.max_tokens)
            # A syscall already answered in this turn is not offered again: small models loop on
            # the call they just made; a chain goes on to other syscalls (ocr, then translate).
            # One that failed stays, so the model can mend its arguments.
            table = process.table.without({r.name for r in turn.syscalls if r.status == "ok"})
            if turn.syscalls:
                threshold = policy.chain_threshold
            elif self._names_a_file(text):
                # A request about a file needs a syscall on that file: the model cannot know what
                # it holds otherwise, and left to choose it "translates" a text it never saw.
                threshold = policy.file_threshold
                table = table.with_capability(*FILE_CAPABILITIES) or table
            else:
                threshold = policy.call_threshold
            wants_call = bool(len(table)) and engine.wants_call(process, prompt, threshold, turn)
            if not wants_call and not turn.syscalls:
                # Small models answer questions from memory (and wrongly: "radium was discovered
                # in 1984") even when a function looks the answer up. So the first step writes a
                # call anyway, kept only if the request spells out every value in it. Not a
                # file syscall: a request about a file names it (see above).
                table = table.without({s.name for s in table.with_capability(*FILE_CAPABILITIES)})
            if len(table) and (wants_call or not turn.syscalls):
                calls, tokens = self._decode_calls(process, prompt, table, turn, text, run, wanted=wants_call)
                calls = self._worth_making(calls, process, turn, text, wanted=wants_call)
                if calls:
                    process.memory.add("assistant", write_calls(calls), tokens=tokens)
                    if engine.dispatch(process, calls, turn, run, request=text):
                        return
                    continue
                # a repeated or unrelated call: have the model answer instead
            if turn.syscalls:
                prompt, _used = process.memory.prompt(engine.cpu, reserve=kernel.max_tokens,
                                                      transient=WORDS.answer_now)
            elif wants_call:
                prompt, _used = process.memory.prompt(engine.cpu, reserve=kernel.max_tokens,
                                                      transient=WORDS.no_function_fits)
            turn.output = engine.reply(process, prompt, turn, run)
            turn.status = "ok"
            failed = unmended_failure(turn.syscalls)
            if failed is not None:   # the reply can only tell of the failure: the task failed
                turn.status = "error"
                turn.error = f"{failed.name} failed: {failed.error}"
            return
        turn.status = "max_steps"
        turn.error = f"no reply after {kernel.max_steps} steps"

    def _names_a_file(self, text: str) -> bool:
        """Does the request name a file or folder that exists in the filesystem?"""
        for match in PATH.finditer(text):
            try:
                if self.engine.machine.fs.exists(match.group(0)):
                    return True
            except LlmosError:  # not a valid path after all
                continue
        return False

    def _worth_making(self, calls: list[dict], process: Process, turn: TurnResult, request: str, *,
                      wanted: bool) -> list[dict]:
        """The decoded calls the kernel makes; none means the model answers instead.

        ``wanted``: the model was likely to call here (p(call) at least the threshold)."""
        if turn.syscalls:
            # Small models go on calling after the answer is in (read the file just summarised,
            # search for its name): a further call must bring something new.
            done = [r.call for r in turn.syscalls]
            return [c for c in calls if not repeats(c, done, process.table.get(c["name"]).parameters)]
        if not calls:
            return []
        # The first call of a turn must be about the request: small models call whatever function
        # they are shown (a BMI function for a triangle's area).
        return calls if self.relevant(request, process.table.get(calls[0]["name"]), turn, wanted=wanted) else []

    def _decode_calls(self, process: Process, prompt: str, table: SyscallTable, turn: TurnResult,
                      request: str, run: Run, wanted: bool = True) -> tuple[list[dict], int]:
        """Decode one call, then candidate further calls of the same syscall, kept while grounded;
        return the calls and the tokens decoded for them.

        ``wanted``: the model was likely to call here. If not, the first call must be spelled out
        by the request (every value said), else there is no call; and a first call cut short by
        the token limit is no call rather than an error.

        Small models end their turn after one call whatever the request, so the kernel opens the
        next call itself and keeps it only if its new values come from the request or this turn's
        results (see grounding.py). Another syscall waits for the next step: it usually needs this
        one's result (read the sign, then translate what it says), which a call now could only guess.
        Values nobody said are taken out of every call where the schema allows."""
        cpu = self.engine.cpu
        source = Source([request] + [result_text(r.result) for r in turn.syscalls if r.status == "ok"])
        self.engine.on_cpu(process, prompt)
        calls: list[dict] = []
        tokens = 0
        for _ in range(MAX_PARALLEL_CALLS if process.parallel_calls else 1):
            prefix = write_calls(calls) + "\n" if calls else ""
            generation = cpu.generate(prompt + prefix + CALL_OPEN, max_tokens=self.kernel.max_tokens,
                                      grammar=call_grammar(table), seed=run.seed, temperature=0.0, cancel=run.cancel)
            turn.count(generation.stats, "call")
            if generation.cancelled:
                raise Cancelled("cancelled")
            if generation.finish_reason != "stop":
                if calls or not wanted:
                    break
                raise LlmosError(f"the model's call was cut short after {generation.stats.decode_tokens} tokens")
            call = parse_call(generation.text)
            parameters = process.table.get(call["name"]).parameters
            call = without_inventions(call, parameters, source)
            if not calls and not wanted and not all_said(call, parameters, source):
                return [], 0  # further candidates would repeat its values: don't decode them
            if calls and not grounded(call, calls, source):
                break
            tokens += generation.stats.decode_tokens
            # A call that only adds arguments to an earlier one is that call made more precise.
            calls = [c for c in calls if not refines(call, c)] + [call]
            table = process.table.subset([call["name"]])
        return calls, tokens

    def relevant(self, request: str, syscall: Syscall, turn: TurnResult, *, wanted: bool) -> bool:
        """Does the request make the syscall's name and description more likely, per token, than a
        request that says nothing? For a call the model did not want (``wanted`` False), is also the
        request more likely after the description than after one that says nothing?

        Pointwise mutual information from the model itself: a small model judges relevance poorly
        when asked (its yes/no hovers at 50 %) but its likelihoods separate related from unrelated."""
        if self.kernel.force_call:
            return True
        policy = self.kernel.policy
        request = request[:policy.relevance_chars]
        function = WORDS.relevance_function.format(name=syscall.name,
                                                   description=syscall.description)[:policy.relevance_chars]
        try:
            pmi = self._pmi(function, WORDS.relevance_asked.format(request=request), WORDS.relevance_base, turn)
            log.debug("relevance of %s: %.3f per token (threshold %.2f)", syscall.name, pmi,
                      policy.relevance_threshold)
            if pmi < policy.relevance_threshold or wanted:
                return pmi >= policy.relevance_threshold
            given = WORDS.request_given.format(name=syscall.name, description=syscall.description)
            back = self._pmi(request, given, WORDS.request_base, turn)
        except NotImplementedError:
            return True
        log.debug("request given %s: %.3f per token (threshold %.2f)", syscall.name, back,
                  policy.unwanted_call_relevance)
        return back >= policy.unwanted_call_relevance

    def _pmi(self, text: str, given: str, base: str, turn: TurnResult) -> float:
        """How much likelier ``text`` is after ``given`` than after ``base``, in nats per token."""
        cpu = self.engine.cpu
        after_base, n_tokens = cpu.logprob(base, text)
        turn.count(cpu.decision_stats, "decision")
        after_given, _ = cpu.logprob(given, text)
        turn.count(cpu.decision_stats, "decision")
        return (after_given - after_base) / max(1, n_tokens)
