"""Key bindings of the prompt, on top of prompt-toolkit's Emacs ones (Ctrl-R searches the history).

* Enter on a line that ends with ``\\`` continues the input on a new line;
* Alt-Enter (or Esc then Enter) inserts a newline anywhere;
* Enter during a Ctrl-R search runs the line found (as in bash), Esc keeps it for editing;
* Ctrl-C clears the line (the shell catches the KeyboardInterrupt), Ctrl-D on
  an empty line exits;
* Tab opens the completions, or takes the only one (prompt-toolkit's own binding).
"""

from __future__ import annotations

from prompt_toolkit import search
from prompt_toolkit.filters import Condition, completion_is_selected, is_searching
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.key_binding.key_processor import KeyPressEvent


def ends_with_backslash(text: str) -> bool:
    """True if the line ends with one unescaped backslash (``\\\\`` is a literal one)."""
    stripped = text.rstrip(" \t")
    count = len(stripped) - len(stripped.rstrip("\\"))
    return count % 2 == 1


def join_continuations(text: str) -> str:
    """What a multi-line input means: the ``\\`` before each line break is dropped, the break kept."""
    lines = text.split("\n")
    for index, line in enumerate(lines[:-1]):
        if ends_with_backslash(line):
            lines[index] = line.rstrip(" \t")[:-1]
    return "\n".join(lines)


def key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @Condition
    def continued() -> bool:
        from prompt_toolkit.application.current import get_app

        buffer = get_app().current_buffer
        document = buffer.document
        return document.is_cursor_at_the_end and ends_with_backslash(document.text)

    @bindings.add("enter", filter=continued & ~completion_is_selected)
    def _continue(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("enter", filter=is_searching)
    def _run_found(event: KeyPressEvent) -> None:
        search.accept_search()
        event.app.current_buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("enter", filter=completion_is_selected)
    def _take_completion(event: KeyPressEvent) -> None:
        """Enter on a highlighted completion takes it instead of running the line."""
        buffer = event.current_buffer
        buffer.complete_state = None

    return bindings
