"""Training checkpoints are streamed to disk: one variable in memory at a time."""

from __future__ import annotations

import keras
import numpy as np

from tests.support.memory import peak_growth_during
from vitcli.train.state import restore_state, save_state


def wide_model_and_optimizer():
    """Eight 16 MiB kernels and their momentum: 256 MiB of training state."""
    model = keras.Sequential([keras.Input((2048,))]
                             + [keras.layers.Dense(2048, use_bias=False, name=f"dense_{index}")
                                for index in range(8)], name="wide")
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build(model.trainable_variables)
    for variable in optimizer.variables:
        if len(variable.shape) == 2:
            variable.assign(np.full(variable.shape, 0.5, dtype="float32"))
    return model, optimizer


def test_a_checkpoint_holds_one_variable_in_memory_at_a_time(tmp_path):
    model, optimizer = wide_model_and_optimizer()
    state_bytes = sum(int(np.prod(v.shape)) * 4 for v in [*model.weights, *optimizer.variables])
    one_variable = 2048 * 2048 * 4
    growth = peak_growth_during(lambda: save_state(tmp_path, model, optimizer, {"step": 3}))
    assert growth < 4 * one_variable < state_bytes / 4, (growth, state_bytes)

    fresh, fresh_optimizer = wide_model_and_optimizer()
    for variable in fresh_optimizer.variables:
        variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    extra, warnings = restore_state(tmp_path, fresh, fresh_optimizer)
    assert extra == {"step": 3} and warnings == []
    for saved, restored in zip([*model.weights, *optimizer.variables],
                               [*fresh.weights, *fresh_optimizer.variables], strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
