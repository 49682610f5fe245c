"""`llmos fs ...`, `llmos ps` and `llmos log`: the SQLite filesystem from outside the shell.

Thin: the built-ins the shell has too (ls, cat, rm, mkdir, mv, cp, find, grep, ps,
kill, log) do their work in :mod:`llmos_shell.builtins`; the others call one
:class:`~llmos_shell.fs.Filesystem` method. Errors are :class:`~llmos_shell.errors.LlmosError` s (one line, exit 1 or 2);
``grep`` and ``find`` exit 1 when nothing matches, like their Unix namesakes.
Lists print one JSON object per line with ``--json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from llmos_shell import builtins
from llmos_shell.cli.output import echo_json, echo_lines
from llmos_shell.errors import UsageError
from llmos_shell.format import human_size, printable, when
from llmos_shell.fs.versions import acting


def _fs(state):
    return state.system.fs


def _long_line(entry: dict[str, Any]) -> str:
    is_dir = entry["kind"] == "dir"
    name = entry["name"] + ("/" if is_dir and entry["name"] != "/" else "")
    size = "-" if is_dir else human_size(entry["size"])
    mime = "directory" if is_dir else entry["mime"]
    return f"{'d' if is_dir else '-'} {size:>8}  {when(entry['modified'])}  {mime:<24} {name}"


# --- llmos fs -------------------------------------------------------------------------------

@click.group("fs")
@click.pass_context
def fs_group(ctx: click.Context) -> None:
    """The SQLite filesystem: files, folders, search, and copying to and from the host.

    Paths are absolute inside the filesystem ("/notes/a.txt"); relative ones
    start at "/". Examples:

    \b
      llmos fs put report.txt /inputs        # host -> llmos: /inputs/report.txt
      llmos fs ls -l /inputs
      llmos fs grep quarterly /inputs
      llmos fs get /outputs ./results        # llmos -> host: ./results/outputs, or
                                             # ./results itself if it does not exist yet
      llmos fs versions /notes/todo.txt      # earlier contents, kept by every change
      llmos fs restore /notes/todo.txt       # the newest of them back (--version N)
    """
    # one command, one request: what it changes is kept as its versions (fs/versions.py)
    ctx.with_resource(acting())


@fs_group.command("ls")
@click.argument("paths", nargs=-1)
@click.option("-l", "--long", "long_form", is_flag=True, help="Kind, size, modified time and type of each entry.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@click.pass_obj
def fs_ls(state, paths: tuple[str, ...], long_form: bool, as_json: bool) -> None:
    """List directories (default /)."""
    for index, (path, entries) in enumerate(builtins.ls(_fs(state), paths)):
        if as_json:
            echo_lines(entries)
            continue
        if len(paths) > 1:
            click.echo(("\n" if index else "") + f"{path}:")
        for entry in entries:
            if long_form:
                click.echo(_long_line(entry))
            else:
                click.echo(entry["name"] + ("/" if entry["kind"] == "dir" else ""))


@fs_group.command("stat")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def fs_stat(state, path: str, as_json: bool) -> None:
    """Details of a file or directory: type, size, sha256, times."""
    info = _fs(state).stat(path)
    if as_json:
        echo_json(info)
        return
    for key in ("path", "kind", "mime", "size", "text", "sha256"):
        click.echo(f"{key:<9} {info[key] if info[key] is not None else '-'}")
    click.echo(f"{'created':<9} {when(info['created'])}")
    click.echo(f"{'modified':<9} {when(info['modified'])}")


@fs_group.command("cat")
@click.argument("paths", nargs=-1, required=True)
@click.pass_obj
def fs_cat(state, paths: tuple[str, ...]) -> None:
    """Write files' bytes to stdout, exactly as stored."""
    out = click.get_binary_stream("stdout")
    for data in builtins.cat(_fs(state), paths, text=False):
        out.write(data)
    out.flush()


@fs_group.command("put")
@click.argument("host_path", type=click.Path(allow_dash=True))
@click.argument("dest", required=False, default="/")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.pass_obj
def fs_put(state, host_path: str, dest: str, as_json: bool) -> None:
    """Copy a host file or folder to DEST (default /), as `cp -r` does.

    An existing directory DEST (or one written with a trailing /) receives it
    under its own name; otherwise DEST is its new path. Missing folders on the
    way are made. `-` reads stdin into the file DEST.
    """
    fs = _fs(state)
    if host_path == "-":
        if dest.endswith("/") or fs.is_dir(dest):
            raise UsageError("`put -` needs a destination file, e.g. llmos fs put - /notes/a.txt")
        from llmos_shell.fs.files import MAX_FILE_BYTES

        data = click.get_binary_stream("stdin").read(MAX_FILE_BYTES + 1)   # the limit, without reading on
        info = fs.write(dest, data)
        summary = {"path": info["path"], "files": 1, "dirs": 0, "bytes": info["size"], "skipped": []}
    else:
        summary = fs.import_host(host_path, dest)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['path']}: {summary['files']} file(s), {summary['bytes']} bytes")
    for skipped in summary["skipped"]:   # host names can hold terminal escapes: shown escaped
        click.echo(f"skipped {printable(skipped['host'])}: {skipped['why']}", err=True)


@fs_group.command("get")
@click.argument("path")
@click.argument("dest", required=False, default=".")
@click.option("--no-clobber", "-n", is_flag=True, help="Refuse to replace existing host files.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.pass_obj
def fs_get(state, path: str, dest: str, no_clobber: bool, as_json: bool) -> None:
    """Copy a file or folder to the host at DEST (default: the current directory), as `cp -r` does.

    An existing directory DEST receives it under its own name; otherwise DEST
    is its new path, whose directory must exist. Nothing is ever written
    outside the directory named: no `..`, no absolute names, no writing through
    symbolic links.
    """
    from llmos_shell.fs.host import get

    summary = get(_fs(state), path, dest, overwrite=not no_clobber)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{printable(summary['path'])}: {summary['files']} file(s), {summary['bytes']} bytes")


@fs_group.command("rm")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Remove directories and everything in them.")
@click.pass_obj
def fs_rm(state, paths: tuple[str, ...], recursive: bool) -> None:
    """Remove files (and, with -r, directories)."""
    builtins.rm(_fs(state), paths, recursive=recursive)


@fs_group.command("mkdir")
@click.argument("paths", nargs=-1, required=True)
@click.option("-p", "--parents", is_flag=True, help="Create parents as needed; no error if it exists.")
@click.pass_obj
def fs_mkdir(state, paths: tuple[str, ...], parents: bool) -> None:
    """Create directories."""
    builtins.mkdir(_fs(state), paths, parents=parents)


@fs_group.command("mv")
@click.argument("src")
@click.argument("dst")
@click.pass_obj
def fs_mv(state, src: str, dst: str) -> None:
    """Move or rename a file or directory (into DST if it is a directory)."""
    builtins.mv(_fs(state), src, dst)


@fs_group.command("cp")
@click.argument("src")
@click.argument("dst")
@click.pass_obj
def fs_cp(state, src: str, dst: str) -> None:
    """Copy a file or a directory tree (into DST if it is a directory)."""
    builtins.cp(_fs(state), src, dst)


@fs_group.command("find")
@click.argument("pattern")
@click.argument("path", required=False, default="/")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per match.")
@click.pass_obj
def fs_find(state, pattern: str, path: str, as_json: bool) -> None:
    """Paths under PATH matching a glob: '*.txt' matches names, 'notes/**/*.md' whole paths."""
    matches = builtins.find(_fs(state), pattern, path)
    if as_json:
        echo_lines(matches)
    else:
        for match in matches:
            click.echo(match["path"])
    if not matches:
        sys.exit(1)


@fs_group.command("grep")
@click.argument("pattern")
@click.argument("path", required=False, default="/")
@click.option("-E", "--regex", is_flag=True, help="PATTERN is a regular expression (default: words, via FTS5).")
@click.option("-i", "--ignore-case", is_flag=True, help="With --regex: ignore case (word search always does).")
@click.option("-l", "--files-with-matches", "names_only", is_flag=True, help="Print only the paths of matching files.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per matching line.")
@click.pass_obj
def fs_grep(state, pattern: str, path: str, regex: bool, ignore_case: bool, names_only: bool, as_json: bool) -> None:
    """Lines of text files under PATH containing PATTERN's words (stemmed), or matching a regex with -E."""
    matches = builtins.grep(_fs(state), pattern, path, regex=regex, ignore_case=ignore_case)
    if names_only:
        seen = list(dict.fromkeys(m["path"] for m in matches))
        for name in seen:
            click.echo(json.dumps({"path": name}) if as_json else name)
    elif as_json:
        echo_lines(matches)
    else:
        for match in matches:
            click.echo(f"{match['path']}:{match['line']}:{match['text']}")
    if not matches:
        sys.exit(1)


@fs_group.command("versions")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version.")
@click.pass_obj
def fs_versions(state, path: str, as_json: bool) -> None:
    """The kept earlier versions of a file (also of one deleted since), oldest first.

    Each is the content PATH had until a change replaced it: a write, an append, a delete, a move
    or copy over it, a restore or an undo; with the process (pid) that made that change.
    `llmos fs restore PATH --version N` puts one back.
    """
    fs = _fs(state)
    rows = fs.versions(path)
    if as_json:
        echo_lines(rows)
        return
    if not rows:
        raise UsageError(f"no earlier versions of {path}")
    click.echo(f"{'VERSION':>7} {'SIZE':>8}  {'REPLACED':<19}  {'BY':<8} {'PID':>5}  {'MIME':<24} SHA256")
    for row in rows:
        click.echo(f"{row['version']:>7} {human_size(row['size']):>8}  {when(row['created'])}  {row['change']:<8} "
                   f"{row['pid'] if row['pid'] is not None else '-':>5}  {(row['mime'] or '-')[:24]:<24} "
                   f"{row['sha256'][:12]}")


@fs_group.command("restore")
@click.argument("path")
@click.option("--version", "-v", "version", type=int, help="The version to put back (default: the newest).")
@click.pass_obj
def fs_restore(state, path: str, version: int | None) -> None:
    """Put an earlier version of a file back (see `llmos fs versions PATH`).

    Restoring is a change like any other: what the file holds now becomes a version too.
    """
    info = _fs(state).restore(path, version)
    click.echo(f"restored {info['path']} ({human_size(info['size'])})")


@fs_group.command("check")
@click.pass_obj
def fs_check(state) -> None:
    """Check the database file (PRAGMA integrity_check); exit 1 if it is damaged."""
    result = _fs(state).integrity_check()
    click.echo(result)
    if result != "ok":
        sys.exit(1)


# --- llmos ps / log -------------------------------------------------------------------------

@click.command("ps")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per process.")
@click.pass_obj
def ps_command(state, as_json: bool) -> None:
    """Processes: pid, parent, live status (waiting, running, then how they ended), context tokens,
    KV bytes, messages, syscalls, model, name."""
    rows = builtins.ps(_fs(state))
    if as_json:
        echo_lines(rows)
        return
    click.echo(f"{'PID':>5} {'PARENT':>6}  {'STATUS':<11} {'CTX':>5} {'KV':>9} {'MSGS':>5} {'CALLS':>5}  "
               f"{'CREATED':<19}  {'MODEL':<28} NAME")
    for row in rows:
        tokens, kv = row["context_tokens"], row["kv_bytes"]
        click.echo(f"{row['pid']:>5} {row['parent'] or '-':>6}  {row['status']:<11} "
                   f"{'-' if tokens is None else tokens:>5} {'-' if kv is None else human_size(kv):>9} "
                   f"{row['messages']:>5} {row['syscalls']:>5}  {when(row['created'])}  "
                   f"{(row['model'] or '-')[:28]:<28} {row['name']}")


@click.command("kill")
@click.argument("pids", nargs=-1, type=int, required=True)
@click.pass_obj
def kill_command(state, pids: tuple[int, ...]) -> None:
    """Stop processes PIDS: the llmos program running each (a shell, `llmos run`, `llmos serve`)
    stops it within a token, or takes it off its run queue; `ps` then shows it killed."""
    for pid in pids:
        click.echo(str(builtins.kill(_fs(state), pid)))


@click.command("log")
@click.option("--pid", type=int, help="Only this process's syscalls.")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Only the last N entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per syscall.")
@click.pass_obj
def log_command(state, pid: int | None, limit: int | None, as_json: bool) -> None:
    """The syscall audit log: every call the model made, its arguments, status and result."""
    rows = builtins.log(_fs(state), pid=pid, limit=limit)
    if as_json:
        echo_lines(rows)
        return
    for row in rows:
        arguments = json.dumps(row["arguments"], ensure_ascii=False)
        if len(arguments) > 80:
            arguments = arguments[:79] + "…"
        line = (f"{when(row['started'])}  pid {row['pid'] if row['pid'] is not None else '-':<4} "
                f"{row['name']:<16} {row['status']:<8} {row['ms']:>8.1f} ms  {arguments}")
        if row["error"]:
            line += f"  error: {row['error']}"
        click.echo(line)
