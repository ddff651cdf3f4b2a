"""The CLI driven in this process, as a user types it, and the checks of its one-line errors."""

from __future__ import annotations

from typer.testing import CliRunner

from vitcli.cli.app import app

runner = CliRunner()


def invoke(*args):
    """Runs `vitcli ARGS` in this process; each argument is passed as str(argument)."""
    return runner.invoke(app, [str(arg) for arg in args])


def error_lines(result) -> list[str]:
    """The `error:` lines a command wrote to stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def one_error_line(result) -> str:
    """The one `error:` line of a failed command (no traceback), lower-cased."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr
    return errors[0].lower()
