"""How long this process has been running: the start-up cost a user waits through before the
first training step (imports, data indexing, model building, tracing), as the run reports it."""

from __future__ import annotations

import os
import time
from pathlib import Path

_IMPORTED = time.monotonic()  # the fallback start where /proc is not there


def seconds_since_start() -> float:
    """Seconds since this process started: on Linux the system's uptime less the process's
    start tick (field 22 of /proc/self/stat, clock ticks after boot); elsewhere since vitcli
    was imported."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # the fields after the name
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
