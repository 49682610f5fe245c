"""The router plans: the planner for requests over the drivers (router.py chooses, the model fills in).

The router turns the request into steps (which syscall, on which file); each step's call is
filled in here (:meth:`RouterPlanner._fill`): the kernel sets what it knows (the file the step
reads, the previous step's output, a path the request names), the model decodes the rest under the
grammar, seeing only that syscall. Each step's output is piped into the next. The reply is the
last step's output where its syscall declares one, else the model's answer from the results.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import Any

from llmos_shell.config import machine_cache
from llmos_shell.errors import Cancelled, LlmosError
from llmos_shell.kernel.destinations import store_choices
from llmos_shell.kernel.engine import Engine, Run
from llmos_shell.kernel.grammar import CALL_OPEN, call_grammar, parse_call, write_calls
from llmos_shell.kernel.grounding import Source, without_inventions
from llmos_shell.kernel.language import WORDS
from llmos_shell.kernel.memory import sanitise
from llmos_shell.kernel.places import ANY_PATH, named_paths
from llmos_shell.kernel.process import Process
from llmos_shell.kernel.router import Router, Step
from llmos_shell.kernel.turn import (SyscallRecord, TurnResult, content_words, lines_asked_for, literal,
                                     nothing_shown, read_paths, result_text, shown, stores)
from llmos_shell.syscalls import Syscall, SyscallTable

log = logging.getLogger("llmos.kernel")

# A file name without a folder ("report.txt"), and where such names are looked for.
BARE_NAME = re.compile(r"(?<![\w./-])[\w-]+\.[A-Za-z0-9]{1,5}\b(?!/)")
INPUT_FOLDERS = ("/inputs/", "/")


class RouterPlanner:
    """The router's plan, one step after another, then the reply."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.kernel = engine.kernel   # max_steps, max_tokens, policy
        self._router: Router | None = None

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router(cache_dir=machine_cache("router"))
        return self._router

    def turn(self, process: Process, text: str, turn: TurnResult, run: Run) -> None:
        """The router's plan, one step after another (each step's output piped into the next), then the
        reply: the last step's output where its syscall declares one, else the model's answer."""
        engine, cpu_reserve = self.engine, self.kernel.max_tokens
        turn_start = len(process.memory.messages) - 1   # this turn's messages: the request onwards
        text = self._with_full_paths(text)
        turn.roles = engine.roles(text)
        plan = self.router.plan(text, process.table, engine.kind_of)
        if not plan.steps and (again := self._follow_up_syscall(process, text, plan.scores)) is not None:
            plan.steps.append(Step(again, plan.scores.get(again.name, 0.0)))   # "And into Catalan?"
        candidate = self.router.described_candidate(plan, process.table)
        if candidate is not None and self._would_call(process, candidate, turn):
            plan.steps.append(Step(candidate, plan.scores[candidate.name]))
        log.debug("plan for %r: %s", text[:200], plan.names)
        turn.plan = plan.names
        piped: str | None = literal(text)
        last: SyscallRecord | None = None
        for step in plan.steps[:self.kernel.max_steps]:
            if run.cancel.is_set():
                raise Cancelled("cancelled")
            call = self._fill(process, step.syscall, text, step.path, piped, turn, run)
            process.memory.add("assistant", write_calls([call]))
            if engine.dispatch(process, [call], turn, run, request=text):
                return  # denied
            last = turn.syscalls[-1]
            if last.status != "ok":
                break
            if step.syscall.output and nothing_shown(last.result, step.syscall.output):
                continue   # nothing found (recall): the next step reads what it would have read anyway
            # text from a tool is data: no chat-template control tokens go on to the next step
            piped = sanitise(shown(last.result, step.syscall.output) if step.syscall.output
                             else result_text(last.result))
        output = process.table.get(last.name).output if last is not None else None
        if last is not None and last.status != "ok":
            # A failed step is a failed task: the user asked for its result and did not get it.
            turn.status = "error"
            turn.error = f"{last.name} failed: {last.error}"
            process.memory.add("assistant", WORDS.could_not.format(error=turn.error))
            return
        if output and not nothing_shown(last.result, output):
            turn.output = sanitise(self._outputs(process, turn))  # shown, and kept in the context
            process.memory.add("assistant", turn.output)
            run.events.token(turn.output)
            turn.status = "ok"
            return
        memory = process.memory
        if last is None:   # a request the model answers itself
            prompt, _used = memory.prompt(engine.cpu, reserve=cpu_reserve, tools=[])
        elif output:       # the syscall had nothing to show (recall found nothing): as if it never ran
            prompt, _used = memory.prompt(engine.cpu, reserve=cpu_reserve, tools=[],
                                          transient={"role": "user", "content": text},
                                          hide_last=len(memory.messages) - turn_start)
        elif (picked := lines_asked_for(text, [r.result for r in turn.syscalls if r.status == "ok"],
                                        self.kernel.policy)):
            # "Which errors are in /logs/app.log?": every line that names them, as written (the
            # model, asked, lists one of two)
            turn.output = picked
            memory.add("assistant", picked)
            run.events.token(picked)
            turn.status = "ok"
            return
        else:
            # A result the model answers a question from (a file read for "how many eggs?"). Small
            # models lose a result behind call and tool turns ("I don't have any function results"):
            # the request is asked again with the results as plain data, in place of this turn.
            data = "\n\n".join(f"[{r.name} {json.dumps(r.arguments.get('path') or '', ensure_ascii=False)}]\n"
                               f"{sanitise(result_text(r.result))}" for r in turn.syscalls if r.status == "ok")
            transient = {"role": "user", "content": f"{data}\n\n{WORDS.answer_from.format(request=text)}"}
            prompt, _used = memory.prompt(engine.cpu, reserve=cpu_reserve, transient=transient,
                                          tools=[], hide_last=len(memory.messages) - turn_start)
        turn.output = engine.reply(process, prompt, turn, run, tools=[])  # kept by reply
        turn.status = "ok"

    def _with_full_paths(self, text: str) -> str:
        """The request with bare file names that exist written as paths: "summarise report.txt" in a
        task whose inputs landed in /inputs/ is about /inputs/report.txt."""
        def full(match: re.Match) -> str:
            for folder in INPUT_FOLDERS:
                if self.engine.kind_of(folder + match.group(0)) is not None:
                    return folder + match.group(0)
            return match.group(0)

        return BARE_NAME.sub(full, text)

    def _would_call(self, process: Process, syscall: Syscall, turn: TurnResult) -> bool:
        """Shown only this syscall, is the model likely to call it now? (A syscall the router knows
        from its description alone: see Router.described_candidate.)"""
        prompt, _used = process.memory.prompt(self.engine.cpu, reserve=self.kernel.max_tokens,
                                              tools=[syscall.tool_schema()])
        return self.engine.wants_call(process, prompt, self.kernel.policy.call_threshold, turn)

    def _outputs(self, process: Process, turn: TurnResult) -> str:
        """What the user sees after the last step: its output; for a step that only stores or plays
        what an earlier step made (write_file, speak), that text too."""
        last = turn.syscalls[-1]
        syscall = process.table.get(last.name)
        text = shown(last.result, syscall.output)
        feeds = [r for r in turn.syscalls[:-1] if r.status == "ok"]
        if feeds and syscall.capabilities & {"writes_fs", "audio_out"} and syscall.input:
            before = feeds[-1]
            made = process.table.get(before.name)
            if made.output and not nothing_shown(before.result, made.output):
                text = shown(before.result, made.output) + "\n\n" + text
        # a driver that may be wrong says so (hookspecs: ``unsure``): told to the user, never piped on
        doubts = [r.result["unsure"] for r in turn.syscalls
                  if r.status == "ok" and isinstance(r.result, dict) and r.result.get("unsure")]
        if doubts:
            text += "\n\n" + "\n".join(f"(unsure: {doubt})" for doubt in dict.fromkeys(doubts))
        return text

    def _fill(self, process: Process, syscall: Syscall, request: str, path: str | None, piped: str | None,
              turn: TurnResult, run: Run) -> dict:
        """The call of one planned step. The kernel sets what it knows: the file the step reads, the
        previous step's output (or the request's quoted text) for its ``input``, a path when the request
        names one; the model decodes the rest under the grammar, seeing only this syscall."""
        properties = dict(syscall.parameters.get("properties", {}))
        required = list(syscall.parameters.get("required", []))
        fixed: dict[str, Any] = {}
        if "path" in properties:
            named = named_paths(request)
            if path is None and stores(syscall):
                # never over a file an earlier step read, unless the request says to store there
                named = store_choices(turn.roles, read_paths(process, turn))
                if not named and ANY_PATH.search(request) and "path" in required:
                    raise LlmosError(f"{syscall.name}: the request names no file to store to besides "
                                     f"{', '.join(turn.roles.paths)}, which it reads: say where "
                                     "(\"... and save it to /notes/new.txt\")")
            if path is not None:
                fixed["path"] = path
            elif len(named) == 1:
                fixed["path"] = named[0]
            elif named:
                properties["path"] = {**properties["path"], "enum": named}
            elif "path" not in required:
                properties.pop("path")   # nobody named one: the driver's default, never an invented path
        if syscall.input and piped is None and path is None:
            piped = self._followed_up(process, syscall, request)
        if syscall.input and piped is not None:
            fixed[syscall.input] = piped
        elif path is not None and syscall.input and syscall.input not in required:
            properties.pop(syscall.input, None)   # it reads the file: no text besides (summarise's text)
        if syscall.from_request is not None:   # values the request's phrasing gives away ("... in Catalan")
            said_values = syscall.from_request(request) or {}
            fixed.update({k: v for k, v in said_values.items() if k in properties and k not in fixed})
        for key in fixed:
            properties.pop(key, None)
        said = content_words(request)
        for key in [k for k in properties if k not in required]:
            # An optional argument is offered only when the request speaks of it ("add ... to the end"
            # for append): otherwise small models fill it anyway (a source language "water").
            if not said & content_words(key.replace("_", " ") + " " + properties[key].get("description", "")):
                properties.pop(key)
        arguments: dict[str, Any] = dict(fixed)
        if properties:
            schema = {**syscall.parameters, "properties": properties,
                      "required": [r for r in required if r in properties]}
            arguments.update(self._decode_rest(process, syscall, schema, turn, run, Source([request, piped or ""])))
        return {"name": syscall.name, "arguments": arguments}

    def _decode_rest(self, process: Process, syscall: Syscall, schema: dict, turn: TurnResult, run: Run,
                     source: Source) -> dict:
        """The arguments the kernel could not set, decoded by the model under ``schema``'s grammar."""
        engine, cpu = self.engine, self.engine.cpu
        free = dataclasses.replace(syscall, parameters=schema)
        prompt, _used = process.memory.prompt(cpu, reserve=self.kernel.max_tokens, tools=[free.tool_schema()])
        engine.on_cpu(process, prompt, tools=[free.tool_schema()])
        generation = cpu.generate(prompt + CALL_OPEN, max_tokens=self.kernel.max_tokens,
                                  grammar=call_grammar(SyscallTable.of([free])), seed=run.seed,
                                  temperature=0.0, cancel=run.cancel)
        turn.count(generation.stats, "call")
        if generation.cancelled:
            raise Cancelled("cancelled")
        if generation.finish_reason != "stop":
            raise LlmosError(f"the model's call of {syscall.name} was cut short after "
                             f"{generation.stats.decode_tokens} tokens")
        return without_inventions(parse_call(generation.text), schema, source)["arguments"]

    def _follow_up_syscall(self, process: Process, request: str, scores: dict[str, float]) -> Syscall | None:
        """The syscall a follow-up fragment asks for again: "And into Catalan?" right after a
        translation reads as chat to the router, yet it is the same action on the same text. The
        last syscall this process ran, when the request reads as a follow-up (WORDS.follow_up) and
        that syscall is the router's first choice among syscalls."""
        if not WORDS.follow_up.search(request) or len(request.split()) > self.kernel.policy.follow_up_words:
            return None
        earlier = [r for r in self.engine.machine.fs.syscalls(process.pid) if r["status"] == "ok"]
        if not earlier or earlier[-1]["name"] not in process.table:
            return None
        best = max((n for n in scores if n), key=scores.get, default=None)
        if best != earlier[-1]["name"]:
            return None
        syscall = process.table.get(best)
        return syscall if syscall.input and self._followed_up(process, syscall, request) else None

    def _followed_up(self, process: Process, syscall: Syscall, request: str) -> str | None:
        """The text a follow-up request works on: "And into Catalan?" after "Translate 'good night'
        into Spanish" is the same text again. A short request that gives no text of its own (no
        quotes, no path, no lead-in) and reads as a follow-up (WORDS.follow_up) takes the ``input`` of
        this process's last successful call of the same syscall; else None."""
        if WORDS.quoted.search(request) or ANY_PATH.search(request) or WORDS.lead_in.match(request.strip()) \
                or len(request.split()) > self.kernel.policy.follow_up_words or not WORDS.follow_up.search(request):
            return None
        earlier = [r for r in self.engine.machine.fs.syscalls(process.pid)
                   if r["name"] == syscall.name and r["status"] == "ok"]
        value = earlier[-1]["arguments"].get(syscall.input) if earlier else None
        return value if isinstance(value, str) and value.strip() else None
