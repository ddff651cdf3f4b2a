"""The one rich Console, and the error boundary: a known error is one line plus a hint."""

from __future__ import annotations

import functools
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from vitcli._environment import import_tensorflow_quietly
from vitcli.errors import VitcliError

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

DEBUG_VARIABLE = "VITCLI_DEBUG"


def print_error(error: VitcliError) -> None:
    error_console.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
    if error.hint:
        error_console.print(f"  [dim]hint: {escape(error.hint)}[/]", soft_wrap=True)


def reports_errors(command=None, *, tensorflow: bool = True):
    """Turns a VitcliError into one line on stderr and exit code 1 (traceback with --debug).

    Also the place where TensorFlow starts, quietly, just before a command's body runs:
    `--help` and the flag errors typer finds never reach here, so they answer at once.
    `tensorflow=False` is for bodies that need none, or that check their flags first and
    import it themselves (`import_tensorflow_quietly`). Use as `@reports_errors` or
    `@reports_errors(tensorflow=False)`.
    """
    if command is None:
        return functools.partial(reports_errors, tensorflow=tensorflow)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            if tensorflow:
                import_tensorflow_quietly()
            return command(*args, **kwargs)
        except VitcliError as error:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            print_error(error)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            error_console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper


def print_json(value) -> None:
    """Plain JSON on stdout (no rich markup), for scripts."""
    import json

    sys.stdout.write(json.dumps(value, indent=2) + "\n")
