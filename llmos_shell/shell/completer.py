"""Tab completion: command names, paths of the SQLite filesystem, host paths, syscalls, models.

What an argument completes to comes from the command registry (``complete=``);
in a request to the model, a word starting with ``/`` completes as a path.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from typing import TYPE_CHECKING, Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from llmos_shell.errors import LlmosError
from llmos_shell.fs.paths import ROOT, normalise
from llmos_shell.shell.commands import COMMANDS, commands

if TYPE_CHECKING:  # pragma: no cover
    from llmos_shell.shell.app import Shell

log = logging.getLogger("llmos.shell")

# The last shell word before the cursor, quotes included ("my fi, 'a b'/c, plain).
LAST_WORD = re.compile(r"""(?:[^\s"']|"[^"]*"?|'[^']*'?)*$""")
PLACEHOLDERS = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}


def unquote(raw: str) -> str:
    for closing in ("", '"', "'"):
        try:
            words = shlex.split(raw + closing)
        except ValueError:
            continue
        return words[0] if words else ""
    return raw


def quote(text: str) -> str:
    return text if re.fullmatch(r"[\w@%+=:,./~-]*", text) else shlex.quote(text)


def words_before(text: str) -> list[str]:
    """The complete words of ``text`` (which ends where the current word starts)."""
    for closing in ("", '"', "'"):
        try:
            return shlex.split(text + closing)
        except ValueError:
            continue
    return text.split()


class ShellCompleter(Completer):
    def __init__(self, shell: "Shell") -> None:
        self.shell = shell
        self.host_paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        try:
            yield from self._completions(document, complete_event)
        except LlmosError:
            return
        except Exception:  # completion must never break the prompt
            log.exception("completion failed")

    def _completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if "\n" in text:
            text = text.rsplit("\n", 1)[1]
        raw = LAST_WORD.search(text).group()
        before = words_before(text[: len(text) - len(raw)])
        word = unquote(raw)
        if not before:
            yield from self._commands(word, raw)
            return
        entry = COMMANDS.get(before[0])
        if entry is None:  # a request to the model: paths are still handy
            if word.startswith("/"):
                yield from self._fs_paths(word, raw, dirs_only=False)
            return
        if entry.raw and entry.name == "call":
            yield from self._call(text[len(before[0]):].lstrip())
            return
        kind = entry.completion_kind(len(before) - 1)
        if kind in ("path", "dir"):
            yield from self._fs_paths(word, raw, dirs_only=kind == "dir")
        elif kind == "host":
            yield from self._host_paths(word, raw, event)
        elif kind == "command":
            yield from self._commands(word, raw, meta=False)
        elif kind == "model":
            yield from self._models(word, raw)
        elif kind == "approve":
            for mode in ("ask", "auto", "never"):
                if mode.startswith(word):
                    yield Completion(mode, -len(raw))

    def _commands(self, word: str, raw: str, meta: bool = True) -> Iterable[Completion]:
        for entry in commands():
            for name in (entry.name, *entry.aliases):
                if name.startswith(word) and name.isalpha():
                    yield Completion(name, -len(raw), display_meta=entry.summary if meta else None)

    def _fs_paths(self, word: str, raw: str, dirs_only: bool) -> Iterable[Completion]:
        shell = self.shell
        if "/" in word:
            head, _, prefix = word.rpartition("/")
            directory = normalise(head or ROOT, shell.cwd)
            shown = head + "/"
        else:
            directory, prefix, shown = shell.cwd, word, ""
        if word.startswith("~"):
            return
        fs = shell.fs
        if not fs.is_dir(directory):
            return
        for entry in fs.ls(directory):
            is_dir = entry["kind"] == "dir"
            if dirs_only and not is_dir:
                continue
            if not entry["name"].startswith(prefix):
                continue
            name = entry["name"] + ("/" if is_dir else "")
            yield Completion(quote(shown + name), -len(raw), display=name,
                             display_meta="dir" if is_dir else f"{entry['size']} B")

    def _host_paths(self, word: str, raw: str, event: CompleteEvent) -> Iterable[Completion]:
        for completion in self.host_paths.get_completions(Document(word), event):
            full = word[: len(word) + completion.start_position] + completion.text
            yield Completion(quote(full), -len(raw), display=completion.display)

    def _models(self, word: str, raw: str) -> Iterable[Completion]:
        from llmos_shell.cpu.models import manifests

        for name, manifest in sorted(manifests().items()):
            if name.startswith(word):
                yield Completion(name, -len(raw), display_meta=f"{manifest.size / 1e6:.0f} MB")

    def _call(self, rest: str) -> Iterable[Completion]:
        """``call NAME {json}``: syscall names, then a skeleton of the required arguments."""
        table = self.shell.system.table
        if " " not in rest:
            for syscall in table:
                if syscall.name.startswith(rest):
                    summary = syscall.description.split(". ")[0][:60]
                    yield Completion(syscall.name, -len(rest), display_meta=summary)
            return
        name, _, arguments = rest.partition(" ")
        arguments = arguments.lstrip()
        if name not in table or arguments not in ("", "{"):
            return
        parameters = table.get(name).parameters
        properties = parameters.get("properties", {})
        skeleton = {key: PLACEHOLDERS.get(properties[key].get("type"), "")
                    for key in parameters.get("required", []) if key in properties}
        yield Completion(json.dumps(skeleton, ensure_ascii=False), -len(arguments),
                         display_meta="required arguments")
