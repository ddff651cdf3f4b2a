"""`vitcli finetune` / `pretrain` end to end on tiny models and data, through the CLI."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import yaml
from typer.testing import CliRunner

import vitcli
from vitcli.cli.app import app

runner = CliRunner()


def finetune(*args):
    return runner.invoke(app, ["finetune", *map(str, args)])


def test_finetune_at_new_resolution_resizes_posemb_exactly(colour_folder, tiny_checkpoint,
                                                           tmp_path):
    out = tmp_path / "run"
    # lr 0: the weights stay as loaded, so the saved model shows the loader's work.
    result = finetune("--weights", tiny_checkpoint, "--data", colour_folder, "--res", 24,
                      "--steps", 2, "--batch", 6, "--lr", 0, "--out", out)
    assert result.exit_code == 0, result.output
    assert "position embeddings 2x2 -> 3x3" in result.output
    with np.load(tiny_checkpoint) as original:
        expected = vitcli.resize_posemb(original["Transformer/posembed_input/pos_embedding"], 3)
    model = vitcli.load_checkpoint(out / "model.keras")
    posemb = model.get_layer("posembed_input").pos_embedding.numpy()
    np.testing.assert_allclose(posemb, expected, rtol=0, atol=1e-7)
    head = model.get_layer("head")
    assert head.units == 3 and not np.any(head.kernel.numpy())
    assert "pre_logits" not in [layer.name for layer in model.layers]


def test_run_directory_holds_everything_to_rerun(colour_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    result = finetune("--weights", tiny_checkpoint, "--data", colour_folder, "--steps", 4,
                      "--batch", 6, "--lr", 0.05, "--warmup", 1, "--eval-every", 2, "--out", out)
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "labels.txt", "metrics.jsonl", "model.keras", "best.keras",
                 "checkpoints/state.npz"):
        assert (out / name).exists(), name
    assert any((out / "tensorboard").iterdir())
    assert (out / "labels.txt").read_text().split() == ["blue", "green", "red"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["steps"] == 4 and config["train"]["optimizer"] == "sgd"
    assert config["data"]["source"] == str(colour_folder)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [4]
    assert [r["step"] for r in records if "val_top1" in r] == [2, 4]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)


def test_existing_run_is_not_overwritten(colour_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    args = ("--weights", tiny_checkpoint, "--data", colour_folder, "--steps", 1, "--batch", 6,
            "--out", out)
    assert finetune(*args).exit_code == 0
    before = (out / "model.keras").read_bytes()
    result = finetune(*args)
    assert result.exit_code == 1 and "--resume" in result.stderr
    assert (out / "model.keras").read_bytes() == before


def test_recipe_file_and_flags_layer(colour_folder, tiny_checkpoint, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"weights": str(tiny_checkpoint),
                                      "data": {"source": str(colour_folder)},
                                      "train": {"steps": 3, "batch_size": 6, "seed": 5}}))
    out = tmp_path / "run"
    result = finetune("--config", recipe, "--steps", 2, "--out", out)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["train"]["steps"], config["train"]["seed"]) == (2, 5)


def test_unknown_recipe_key_is_one_line_error(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  stepz: 3\n")
    result = finetune("--config", recipe, "--data", tmp_path)
    assert result.exit_code == 1
    assert "unknown setting stepz" in result.stderr and "Traceback" not in result.output


def test_resolution_not_divisible_by_patch_is_refused(colour_folder, tiny_checkpoint, tmp_path):
    result = finetune("--weights", tiny_checkpoint, "--data", colour_folder, "--res", 20,
                      "--steps", 1, "--batch", 6, "--out", tmp_path / "run")
    assert result.exit_code == 1 and "not a multiple of 8" in result.stderr


def test_pretrain_from_scratch_learns_colours(colour_folder, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", "--model", "vit-mu8", "--data", str(colour_folder),
                                 "--res", "16", "--steps", "40", "--batch", "12", "--lr", "3e-3",
                                 "--warmup", "5", "--eval-every", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] < 1.5
    model = vitcli.load_checkpoint(out / "model.keras")
    assert model.get_layer("pre_logits").units == 96  # tanh pre-logits of width D


def optimizer_arrays(run) -> list[np.ndarray]:
    with np.load(run / "checkpoints" / "state.npz") as state:
        return [state[key] for key in state.files if key.startswith("optimizer/")]


def test_cli_first_update_has_rate_zero_like_the_reference(colour_folder, tiny_checkpoint,
                                                           tmp_path):
    """The schedule is evaluated at the optimizer's count from 0, as optax does: one step
    with warm-up fills the momentum but leaves every weight as loaded."""
    out = tmp_path / "run"
    result = finetune("--weights", tiny_checkpoint, "--data", colour_folder, "--steps", 1,
                      "--batch", 6, "--warmup", 1, "--out", out)
    assert result.exit_code == 0, result.output
    loaded = vitcli.load_checkpoint(tiny_checkpoint, num_classes=3)
    trained = vitcli.load_checkpoint(out / "model.keras")
    for want, got in zip(loaded.weights, trained.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)
    assert any(np.any(array) for array in optimizer_arrays(out) if array.ndim)


def test_cli_pretrain_keeps_bfloat16_first_moments(colour_folder, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", "--model", "vit-mu8", "--data", str(colour_folder),
                                 "--res", "16", "--steps", "2", "--batch", "6", "--warmup", "1",
                                 "--momentum-dtype", "bfloat16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["momentum_dtype"] == "bfloat16"
    moments = [array for array in optimizer_arrays(out) if array.ndim and np.any(array)]
    representable = [np.array_equal(array, array.astype(ml_dtypes.bfloat16).astype(array.dtype))
                     for array in moments]
    # Adam's first moments are stored in bfloat16, its second moments in float32.
    assert any(representable) and not all(representable)


def test_cli_refuses_an_unknown_momentum_dtype(colour_folder, tmp_path):
    result = finetune("--model", "vit-mu8", "--data", colour_folder, "--steps", 1,
                      "--momentum-dtype", "float16", "--out", tmp_path / "run")
    assert result.exit_code != 0
    assert "unknown momentum dtype 'float16'" in result.output
    assert not (tmp_path / "run").exists()
