"""The one rich Console, and the error boundary: every error is one line plus a hint."""

from __future__ import annotations

import errno
import functools
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from vitcli._environment import import_tensorflow_quietly
from vitcli.errors import VitcliError

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

DEBUG_VARIABLE = "VITCLI_DEBUG"
DEBUG_HINT = "rerun as `vitcli --debug COMMAND ...` for the traceback, and please report it"
# typer's own exits and usage errors: typer prints those itself (usage errors exit 2).
_TYPER_EXITS = (typer.Exit, typer.Abort, TyperException)
# What to do about a failed file operation, by errno.
_OS_HINTS = {
    errno.ENOSPC: "free some space on that file system (or choose another path) and try again",
    errno.EDQUOT: "free some space within your quota (or choose another path) and try again",
    errno.EACCES: "check the permissions of that path, or choose another",
    errno.EPERM: "check the permissions of that path, or choose another",
    errno.EROFS: "that file system is read-only: choose another path",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EISDIR: "that path is a folder: give a file",
    errno.EEXIST: "that path exists already: remove it or choose another",
    errno.ENAMETOOLONG: "use a shorter path",
}


def _one_line(text: str) -> str:
    """`text` on one line: a newline inside a path or a message would split the error."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def print_error(error: VitcliError) -> None:
    error_console.print(f"[bold red]error:[/] {escape(_one_line(error.message))}", soft_wrap=True)
    if error.hint:
        error_console.print(f"  [dim]hint: {escape(_one_line(error.hint))}[/]", soft_wrap=True)


def os_error(error: OSError) -> VitcliError:
    """A failed file operation (most often on a path the user gave): the path(s) and the
    system's reason, e.g. `/proc/run: No such file or directory`."""
    reason = error.strerror or str(error) or type(error).__name__
    paths = [os.fsdecode(path) if isinstance(path, bytes) else str(path)
             for path in (error.filename, error.filename2) if path is not None]
    message = f"{' -> '.join(paths)}: {reason}" if paths else reason
    return VitcliError(message, hint=_OS_HINTS.get(error.errno))


def internal_error(error: BaseException) -> VitcliError:
    """An exception vitcli did not expect, as one line: its type and the first line of its
    message (the traceback is for --debug)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    message = lines[0].strip()[:300] if lines else ""
    return VitcliError(f"internal error: {type(error).__name__}" + (f": {message}" if message
                                                                      else ""), hint=DEBUG_HINT)


def as_vitcli_error(error: Exception) -> VitcliError:
    """Any exception as the one-line error the CLI prints."""
    if isinstance(error, VitcliError):
        return error
    if isinstance(error, OSError):
        return os_error(error)
    if isinstance(error, MemoryError):
        return VitcliError("out of memory", hint="use a smaller --batch, --res or model")
    if _is_data_loss(error):
        return data_loss_error(error)
    return internal_error(error)


def _is_data_loss(error: Exception) -> bool:
    """Whether TensorFlow found a damaged record (a TFRecord's checksum, e.g. packed data)."""
    tensorflow = sys.modules.get("tensorflow")
    return tensorflow is not None and isinstance(error, tensorflow.errors.DataLossError)


def data_loss_error(error: Exception) -> VitcliError:
    """A damaged record as one line: TensorFlow's reason without its op and function names."""
    lines = []
    for line in str(getattr(error, "message", error)).splitlines():
        line = line.strip()
        if line.startswith("{{function_node"):  # eager: the op's name, then the reason
            line = line.split("}}", 1)[-1]
        line = line.split(" [Op:", 1)[0].strip()
        # graph execution: the reason follows where the op was defined, then its node
        if line and not line.startswith(("[[", "File ", "Detected at node", "Graph execution")):
            lines.append(line)
    return VitcliError(f"damaged data: {lines[-1] if lines else 'a record is corrupt'}",
                       hint="a file of the data (a shard of packed data) is damaged: pack "
                            "it again with `vitcli data pack ... --overwrite`")


def reports_errors(command=None, *, tensorflow: bool = True):
    """Turns any error of a command into one line on stderr (plus a hint) and exit code 1:
    a VitcliError as it is, an OSError as its path and reason, anything else as an internal
    error; `vitcli --debug` shows the traceback instead.

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
        except _TYPER_EXITS:
            raise
        except KeyboardInterrupt:
            error_console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None
        except Exception as error:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            print_error(as_vitcli_error(error))
            raise typer.Exit(code=1) from None

    return wrapper


def print_json(value) -> None:
    """Plain JSON on stdout (no rich markup), for scripts."""
    import json

    sys.stdout.write(json.dumps(value, indent=2) + "\n")
