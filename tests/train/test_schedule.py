"""The learning-rate schedule against docs/reference.md §6.1's formula, written out in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vitcli.train.optim import WarmupDecay


def reference_lr(step, base, warmup, total, decay):
    progress = np.clip((step - warmup) / (total - warmup), 0.0, 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
    return base * min(1.0, step / warmup) * shape


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_schedule_matches_reference_formula(decay):
    schedule = WarmupDecay(0.03, 500, 10_000, decay)
    for step in (0, 1, 250, 499, 500, 501, 2_000, 5_250, 9_999, 10_000, 12_000):
        expected = reference_lr(step, 0.03, 500, 10_000, decay)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9), step


def test_schedule_peaks_at_end_of_warmup_and_ends_at_zero():
    schedule = WarmupDecay(1.0, 10, 100, "cosine")
    values = [float(schedule(step)) for step in range(101)]
    assert int(np.argmax(values)) == 10 and values[10] == pytest.approx(1.0)
    assert values[100] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_no_warmup_starts_at_the_full_rate_like_the_reference(decay):
    """The reference applies the ramp only when there is a warm-up: step 0 has the base rate."""
    schedule = WarmupDecay(0.03, 0, 100, decay)
    for step in (0, 1, 50, 99, 100):
        progress = step / 100
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
        assert float(schedule(step)) == pytest.approx(0.03 * shape, rel=1e-5, abs=1e-9), step
