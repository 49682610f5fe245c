"""`llmos run FILE...`: task files headless (see :mod:`llmos_shell.tasks` for the format)."""

from __future__ import annotations

import json
import sys

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
    with several files, the highest of them.
    """
    from tqdm import tqdm

    from llmos_shell.kernel.scheduler import RunQueue

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
        state.system.cpu  # load the model once, before the batch: a bad model fails here with exit 2
    queue = RunQueue(state.system.fs) if tasks else None   # the batch's processes, one at a time
    bar = tqdm(tasks, desc="tasks", unit="task", file=sys.stderr, disable=len(tasks) < 2 or not sys.stderr.isatty())
    for task in bar:
        try:
            result = run_task(state.system, task, approve=approve, max_steps=max_steps, queue=queue)
        except UsageError as error:
            click.echo(f"llmos: error: {task.source}: {error}", err=True)
            worst = max(worst, EXIT_USAGE)
            continue
        worst = max(worst, STATUS_EXIT[result["status"]])
        if as_json:
            bar.clear()
            click.echo(json.dumps(result, ensure_ascii=False, default=str))
        else:
            if result["status"] == "tool_calls":
                for call in result["syscalls"]:
                    click.echo(json.dumps({"name": call["name"], "arguments": call["arguments"]}))
            elif result["output"]:
                click.echo(result["output"])
            if result["status"] not in ("ok", "tool_calls"):
                click.echo(f"llmos: {task.source}: {result['status']}: {result['error']}", err=True)
        if result["status"] == "interrupted" and result["error"] != "killed":   # Ctrl-C ends the batch
            break
    if queue is not None:
        queue.close()
    sys.exit(worst)

