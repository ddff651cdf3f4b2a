"""The `vitcli` command: sub-commands are registered here, one module each.

Nothing here or in the command modules imports TensorFlow at module level: `--help` and
flag errors answer at once, and a command starts TensorFlow only when its body runs
(console.reports_errors).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from vitcli import __version__
from vitcli.cli import data, evaluate, export, inspect, models, predict, train, weights
from vitcli.cli.console import DEBUG_VARIABLE

app = typer.Typer(
    name="vitcli",
    help="Vision Transformer (ViT) transfer learning: train, fine-tune, evaluate and serve.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"vitcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_show_version,
                                          is_eager=True, help="Print the version.")] = False,
) -> None:
    """vitcli: the Vision Transformer of 'An Image is Worth 16x16 Words', in Keras 3."""
    if debug:
        os.environ[DEBUG_VARIABLE] = "1"


# One option list, two recipes: each command's help shows its own recipe's defaults.
app.command("finetune", help=train.FINETUNE_HELP)(train.make_train_command("finetune"))
app.command("pretrain", help=train.PRETRAIN_HELP)(train.make_train_command("pretrain"))
app.command("evaluate")(evaluate.evaluate_command)
app.command("predict")(predict.predict_command)
app.command("export")(export.export_command)
app.command("models")(models.models_command)
app.add_typer(weights.app, name="weights")
app.add_typer(inspect.app, name="inspect")
app.add_typer(data.app, name="data")


def main() -> None:
    app()
