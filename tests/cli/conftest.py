"""A small trained run directory shared by the evaluate/predict/export CLI tests."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.reference.numpy_vit import random_checkpoint
from tests.train.conftest import TINY_VIT, write_colour_folder
from vitcli.cli.app import app


@pytest.fixture(scope="session")
def colour_split_folder(tmp_path_factory):
    """DIR/{train,test}/<colour>/..., test drawn with another seed."""
    root = tmp_path_factory.mktemp("colour-splits")
    write_colour_folder(root / "train", per_class=12, seed=0)
    write_colour_folder(root / "test", per_class=6, seed=1)
    return root


@pytest.fixture(scope="session")
def trained_run(colour_split_folder, tmp_path_factory):
    weights = tmp_path_factory.mktemp("w") / "tiny.npz"
    np.savez(weights, **random_checkpoint(2, num_classes=4, **TINY_VIT))
    out = tmp_path_factory.mktemp("runs") / "colours"
    result = CliRunner().invoke(app, [
        "finetune", "--weights", str(weights), "--data", str(colour_split_folder),
        "--steps", "30", "--batch", "12", "--lr", "0.05", "--warmup", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


from tests.data.conftest import mnist_metadata_dir  # noqa: E402, F401  (a shared fixture)
