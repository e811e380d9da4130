"""Terminal output for every CLI verb: rich on a terminal, plain unwrapped lines otherwise.

Scripts and logs grep error messages, so when the stream is not a terminal nothing is
hard-wrapped (rich's default would cut lines at 80 columns, or at `$COLUMNS`, in the middle
of a path). Tables keep their layout; piped output gets a wide fixed width for them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PIPED_WIDTH = 160  # table width when the output is captured or piped


def make_console(stderr: bool = False, width: int | None = None) -> Console:
    """A console for stdout (or stderr) that never wraps text when the stream is not a TTY."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    if tty:
        return Console(stderr=stderr, width=width, highlight=False)
    return Console(stderr=stderr, width=width or PIPED_WIDTH, soft_wrap=True, highlight=False)


def print_error(message: str) -> None:
    """`error: <message>` on stderr, one unwrapped line per line of the message."""
    from rich.markup import escape

    make_console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")


def print_warning(message: str, console: Console | None = None) -> None:
    """`warning: <message>` on `console` (stderr by default), never wrapped when piped."""
    from rich.markup import escape

    (console or make_console(stderr=True)).print(f"[yellow]warning:[/] {escape(message)}")
