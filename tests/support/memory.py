"""Resident memory sampled while something runs. Standard library only: a fresh subprocess
started in the repository root imports it as `from tests.support.memory import ...`."""

from __future__ import annotations

import os
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size now (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def rss_during(action, interval: float = 0.001) -> tuple[int, int]:
    """(resident bytes just before `action`, peak resident bytes while it runs), sampled every
    `interval` seconds by a thread."""
    before, peak, running = resident_bytes(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(interval)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        running[0] = False
        sampler.join()
    return before, max(peak[0], resident_bytes())


def peak_growth_during(action, interval: float = 0.001) -> int:
    """Peak resident memory above the starting level while `action` runs."""
    before, peak = rss_during(action, interval)
    return peak - before


def tensorflow_allocated_bytes() -> int:
    """Bytes TensorFlow's CPU allocator holds now (its own count, not the process's RSS)."""
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("CPU:0")["current"]
