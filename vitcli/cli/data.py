"""`vitcli data pack`: an image folder's checked images as TFRecord shards (vitcli.data.pack)."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from vitcli._environment import import_tensorflow_quietly
from vitcli.cli import options as opt
from vitcli.cli.console import console, error_console, reports_errors
from vitcli.cli.options import with_default
from vitcli.config import TARGET_SHARD_BYTES, PackConfig
from vitcli.errors import VitcliError
from vitcli.files import terminate_as_interrupt

app = typer.Typer(help="Prepare data: pack an image folder into TFRecord shards.",
                  no_args_is_help=True)
STAGES = {"index": "checking images", "pack": "packing"}


@contextlib.contextmanager
def pack_progress():
    """Yields `progress(stage, done, total)` drawing one bar per stage on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=error_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def default_out(folder: str) -> str:
    """`FOLDER-packed`, beside the folder (a trailing slash ignored)."""
    trimmed = folder.rstrip("/")
    if not trimmed or trimmed.endswith(("://", ":")):
        raise VitcliError(f"give --out: {folder} has no name to put the packed data beside")
    return f"{trimmed}-packed"


@app.command("pack")
@reports_errors(tensorflow=False)  # the settings are checked first
def pack_command(
    folder: Annotated[str, typer.Argument(
        help="Image folder: DIR/<class>/... or DIR/{train,val,test}/<class>/...")],
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help=with_default("The folder to write: a path, gs://... or ram://...",
                                         "FOLDER-packed, beside FOLDER"))] = None,
    shards: Annotated[int | None, typer.Option("--shards", help=with_default(
        "About this many shards in all, in proportion to the splits (each at least one).",
        f"one per {TARGET_SHARD_BYTES // 2**20} MiB of images"))] = None,
    workers: Annotated[int | None, typer.Option("--workers", help=with_default(
        "Shards written at once.", "the CPU count"))] = None,
    val_split: opt.ValSplit = None,
    strict: opt.Strict = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Pack into a folder that holds "
                                            "other files or another pack (only a pack's own "
                                            "files are replaced).")] = False,
) -> None:
    """Pack the checked images of an image folder into TFRecord shards with a JSON index.

    The packed folder is read by --data like the image folder: the same splits, classes and
    examples, in the same order. A stopped pack resumes when run again.

    Example: vitcli data pack ./flowers --out ./flowers-packed --shards 16
    """
    from vitcli.config import check_value, data_config

    out = out or default_out(folder)
    # Every setting checked before TensorFlow starts: a typo answers at once.
    shards, workers = (check_value(PackConfig, "shards", shards),
                       check_value(PackConfig, "workers", workers))
    data = data_config({"source": folder, "val_split": val_split, "strict": strict})
    import_tensorflow_quietly()
    from vitcli.data.pack import pack_folder

    # SIGTERM takes Ctrl-C's path: the writers stop and remove their temporaries.
    with terminate_as_interrupt(), pack_progress() as progress:
        result = pack_folder(folder, out, data, shards=shards, workers=workers,
                             overwrite=overwrite, progress=progress)
    if result.skipped:
        from rich.markup import escape

        path, reason = result.skipped[0]
        console.print(f"  [yellow]warning: left out {len(result.skipped)} unusable file(s), "
                      f"e.g. {escape(path)} ({escape(reason)})[/]", soft_wrap=True)
    counts = ", ".join(f"{count:,} {name}" for name, count in result.examples.items())
    console.print(f"packed {counts} images of {len(result.class_names)} classes into "
                  f"{result.out} ({result.written} shard(s) written, {result.kept} kept)",
                  soft_wrap=True, markup=False)
