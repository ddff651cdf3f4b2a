"""Rich progress bars handed to the library as callbacks (the library never prints)."""

from __future__ import annotations

import contextlib

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vitcli.cli.console import error_console
from vitcli.config import size_text


@contextlib.contextmanager
def download_progress(label: str):
    """Yields `progress(done_bytes, total_bytes_or_None)` drawing a download bar on stderr."""
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=error_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


class TrainingProgress:
    """Training callbacks that draw a rich progress bar (step, loss, lr, images/s, ETA)
    and end with a summary table. Used as a context manager around the run."""

    def __init__(self, console):
        from rich.progress import MofNCompleteColumn, TextColumn

        self.console = console
        self.bar = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console,
        )
        self.task = None
        self.last_log: dict = {}
        self.last_eval: dict = {}

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.bar.__exit__(*exc_info)

    def on_start(self, info: dict) -> None:
        from rich.markup import escape

        for line in info["loaded"]:
            self.console.print(f"  {escape(line)}", soft_wrap=True)
        self.console.print(
            f"  {info['train_examples']:,} training images, {info['data']['classes']} classes, "
            f"{size_text(info['image_size'])} px; {info['strategy']}, {info['precision']}; "
            f"run directory {escape(info['run_dir'])}", soft_wrap=True)
        for line in info["plan"]:
            style = "yellow" if line.startswith("warning") else "default"
            self.console.print(f"  [{style}]{escape(line)}[/]", soft_wrap=True)
        if info["start_step"]:
            self.console.print(f"  resuming at step {info['start_step']}")
        self.task = self.bar.add_task("training", total=info["total_steps"],
                                      completed=info["start_step"], status="")

    def on_log(self, record: dict) -> None:
        self.last_log = record
        status = (f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                  f"{record['images_per_sec']:.1f} img/s")
        if self.last_eval:
            status += f"  val {_headline_metric(self.last_eval)}"
        self.bar.update(self.task, completed=record["step"], status=status)

    def on_eval(self, record: dict) -> None:
        self.last_eval = record

    def on_message(self, text: str) -> None:
        from rich.markup import escape

        style = "yellow" if text.startswith("warning") else "default"
        self.console.print(f"  [{style}]{escape(text)}[/]", soft_wrap=True)

    def on_end(self, summary: dict) -> None:
        from rich.table import Table

        table = Table(title="run summary", show_header=False)
        table.add_row("steps", str(summary["step"]))
        if self.last_log:
            table.add_row("final train loss", f"{self.last_log['loss']:.4f}")
        name = "mAP" if "val_map" in self.last_eval else "top-1"
        if summary.get("best_val_top1") is not None:  # the best mAP for multi-label data
            table.add_row(f"best val {name}", f"{summary['best_val_top1']:.2%}")
        if self.last_eval:
            table.add_row(f"final val {name}", _headline_metric(self.last_eval).split(" ")[-1])
        table.add_row("model", summary["model"])
        self.bar.stop()
        self.console.print(table)


def _headline_metric(record: dict) -> str:
    """'top-1 91.20%', or 'mAP 80.10%' for multi-label data ('mAP -' while undefined)."""
    if "val_top1" in record:
        return f"top-1 {record['val_top1']:.2%}"
    value = record.get("val_map")
    return f"mAP {'-' if value is None else f'{value:.2%}'}"
