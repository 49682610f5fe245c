"""`llmos run FILE...`: task files headless (see :mod:`llmos_shell.tasks` for the format)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import contextmanager

import click

from llmos_shell.errors import EXIT_OK, EXIT_USAGE, UsageError
from llmos_shell.tasks import STATUS_EXIT, Task, load_task, run_task


@click.command("run")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per task (one per line).")
@click.option("--model", "-m", "model",
              help="Model for these tasks (manifest name or .gguf path); wins over `llmos --model` and "
                   "LLMOS_MODEL. [default: the tasks' model, else the configured one]")
@click.option("--approve", type=click.Choice(["ask", "auto", "never"]),
              help="Approval of irreversible syscalls. [default: the task's, else never]")
@click.option("--max-steps", type=click.IntRange(1, 100), help="Most CPU steps per request. [default: 8]")
@click.pass_obj
def run_command(state, files: tuple[str, ...], as_json: bool, model: str | None, approve: str | None,
                max_steps: int | None) -> None:
    """Run task FILES headless ("-" reads one task from stdin).

    Plain output is each reply on stdout. Exit codes: 0 ok (also a task that ends in declared
    function calls), 1 a task failed, 2 a bad task file or model, 3 denied by the approval policy;
    with several files, the highest of them. Ctrl-C or SIGTERM stops the batch at any moment:
    the running task ends `interrupted` (exit 1), with what it had said so far.
    """
    with _signals_interrupt():
        _run(state, files, as_json, model, approve, max_steps)


@contextmanager
def _signals_interrupt():
    """SIGTERM stops the batch as Ctrl-C does (KeyboardInterrupt in the main thread), so the result
    line is still printed and the process marked; SIGINT too, unless it was ignored when we started
    (a background job of a non-interactive shell)."""
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, interrupt)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _interrupted(task: Task, started: float) -> dict:
    """The result of a task stopped before it had a process (while the model loaded)."""
    return {"task": task.source, "status": "interrupted", "output": "", "pid": None, "error": "interrupted",
            "syscalls": [], "model": None, "usage": {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0},
            "timing": {"total_ms": round(1000 * (time.perf_counter() - started), 1), "turns": []}}


def _show(result: dict, as_json: bool, bar=None) -> None:
    if as_json:
        if bar is not None:
            bar.clear()
        click.echo(json.dumps(result, ensure_ascii=False, default=str))
        return
    if result["status"] == "tool_calls":
        for call in result["syscalls"]:
            click.echo(json.dumps({"name": call["name"], "arguments": call["arguments"]}))
    elif result["output"]:
        click.echo(result["output"])
    if result["status"] not in ("ok", "tool_calls"):
        click.echo(f"llmos: {result['task']}: {result['status']}: {result['error']}", err=True)


def _exit_now(code: int) -> None:
    """Exit while a worker thread is still inside llama.cpp (a prefill or a model load that cannot stop
    between tokens): everything is written and the database is committed; waiting would only delay."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(state, files, as_json: bool, model: str | None, approve: str | None, max_steps: int | None) -> None:
    from tqdm import tqdm

    from llmos_shell.kernel.scheduler import RunQueue

    started = time.perf_counter()
    worst = EXIT_OK
    tasks: list[Task] = []
    for source in files:  # check every file before anything runs
        try:
            tasks.append(load_task(source))
        except UsageError as error:
            click.echo(f"llmos: error: {error}", err=True)
            worst = max(worst, EXIT_USAGE)
    if tasks:
        models = {task.get("model") for task in tasks if task.get("model")}
        model_option = click.get_current_context().find_root().params.get("model")  # --model or LLMOS_MODEL
        if model:
            state.config.model = model  # `llmos run --model M`: the user named it for these tasks
        elif not model_option and len(models) == 1:
            state.config.model = models.pop()  # the tasks' model, unless the user named one
        try:
            state.system.cpu  # load the model once, before the batch: a bad model fails here with exit 2
        except KeyboardInterrupt:   # stopped while the model loads: the first task says so
            _show(_interrupted(tasks[0], started), as_json)
            _exit_now(max(worst, STATUS_EXIT["interrupted"]))
    queue = RunQueue(state.system.fs) if tasks else None   # the batch's processes, one at a time
    bar = tqdm(tasks, desc="tasks", unit="task", file=sys.stderr, disable=len(tasks) < 2 or not sys.stderr.isatty())
    interrupted = False
    for task in bar:
        try:
            result = run_task(state.system, task, approve=approve, max_steps=max_steps, queue=queue)
        except UsageError as error:
            click.echo(f"llmos: error: {task.source}: {error}", err=True)
            worst = max(worst, EXIT_USAGE)
            continue
        worst = max(worst, STATUS_EXIT[result["status"]])
        _show(result, as_json, bar)
        if result["status"] == "interrupted" and result["error"] != "killed":   # Ctrl-C ends the batch
            interrupted = True
            break
    if queue is not None and not queue.close(timeout=1.0 if interrupted else 10.0):
        _exit_now(worst)
    sys.exit(worst)

