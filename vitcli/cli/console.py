"""The one rich Console, and the error boundary: a known error is one line plus a hint."""

from __future__ import annotations

import functools
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from vitcli.errors import VitcliError

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

DEBUG_VARIABLE = "VITCLI_DEBUG"


def print_error(error: VitcliError) -> None:
    error_console.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
    if error.hint:
        error_console.print(f"  [dim]hint: {escape(error.hint)}[/]", soft_wrap=True)


def reports_errors(command):
    """Turns a VitcliError into one line on stderr and exit code 1 (traceback with --debug)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
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
