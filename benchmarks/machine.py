"""The benchmarks share the machine with whatever else runs on it: these helpers measure how many
CPU cores other processes use and wait for them to quiet down before a measurement."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

QUIET_LOAD = 0.25  # cores other processes may use while a measurement runs
# The longest wait for them before each measurement; then it measures anyway (and says so).
QUIET_WAIT_SECONDS = float(os.environ.get("BENCH_QUIET_WAIT", "120"))
# How often a disturbed measurement is repeated; the quietest run is kept.
RETRIES = int(os.environ.get("BENCH_RETRIES", "1"))


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, of this process and its finished children)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return machine, own


def foreign_load(before: tuple[float, float], after: tuple[float, float],
                 seconds: float) -> float:
    """Cores kept busy by other processes (not this one or its children) between two
    `cpu_seconds()` readings `seconds` apart."""
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / max(seconds, 1e-9))


def wait_until_quiet(log=print, limit: float = QUIET_WAIT_SECONDS) -> float:
    """Waits (at most `limit` s) until other processes use under QUIET_LOAD cores over a
    2-second window; returns the last load seen."""
    waited = 0.0
    while True:
        before, start = cpu_seconds(), time.perf_counter()
        time.sleep(2.0)
        load = foreign_load(before, cpu_seconds(), time.perf_counter() - start)
        if load < QUIET_LOAD or waited >= limit:
            if waited:
                log(f"    waited {waited:.0f}s for other processes (load now {load:.2f} cores)")
            return load
        waited += 2.0


class LoadMeter:
    """`with LoadMeter() as meter: ...` then `meter.load`: other processes' cores meanwhile."""

    def __enter__(self):
        self.before, self.start = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.load = round(foreign_load(self.before, cpu_seconds(), self.seconds), 2)
        return False
