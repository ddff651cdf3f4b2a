"""What the training images look like, from a small sample: enough to choose a crop."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vitcli.data import ops
from vitcli.data.sources import Split

SAMPLE = 32


def median_side(split: Split, sample: int = SAMPLE) -> int | None:
    """The median shorter side (px) of up to `sample` images spread over the split, or None
    when none could be read. Folders are sampled evenly by index; sequential sources
    (tensorflow-datasets) from their start."""
    if split.num_examples <= 0:
        return None
    if split.median_side is not None:  # measured when the data was packed
        return split.median_side
    if split.random_access:
        picks = np.linspace(0, split.num_examples - 1, min(sample, split.num_examples))
        chosen = sorted({int(index) for index in picks})
        subset = Split(split.name, len(chosen), files=[split.files[i] for i in chosen],
                       labels=[split.labels[i] for i in chosen])
        examples = subset.examples()
    else:
        examples = split.examples().take(sample)
    examples = examples.map(lambda encoded, _: tf.shape(ops.decode_image(encoded))[:2])
    sides = [int(min(shape)) for shape in examples.ignore_errors().as_numpy_iterator()]
    return int(np.median(sides)) if sides else None
