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
