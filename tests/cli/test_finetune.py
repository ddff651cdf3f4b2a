"""`vitcli finetune` end to end on tiny models and data, through the CLI: the run directory,
resolution change, recipes, the first update, a folder of corrupt, empty, truncated, misnamed
and non-image files, and a tensorflow-datasets source."""

from __future__ import annotations

import json
import shutil
from functools import partial

import numpy as np
import pytest
import yaml

import vitcli
from tests.support.cli import invoke
from tests.support.images import write_colour_folder
from tests.support.runs import optimizer_arrays

finetune = partial(invoke, "finetune")  # `vitcli finetune ARGS`


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


def test_cli_refuses_an_unknown_momentum_dtype(colour_folder, tmp_path):
    result = finetune("--model", "vit-mu8", "--data", colour_folder, "--steps", 1,
                      "--momentum-dtype", "float16", "--out", tmp_path / "run")
    assert result.exit_code != 0
    assert "unknown momentum dtype 'float16'" in result.output
    assert not (tmp_path / "run").exists()


# -- bad data folders --------------------------------------------------------------------------


@pytest.fixture
def messy_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_HOME", str(tmp_path / "home"))
    root = write_colour_folder(tmp_path / "messy", per_class=6)
    good = (root / "red" / "0.png").read_bytes()
    (root / "red" / "empty.png").write_bytes(b"")
    (root / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "green" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "green" / "notes.txt").write_text("not an image")
    (root / "blue" / "PHOTO.JPEG").write_bytes(good)  # a PNG named .JPEG: still an image
    return root


def finetune_from_scratch(data, out, *extra):
    return finetune("--model", "vit-mu8", "--from-scratch", "--data", data, "--res", 16,
                    "--steps", 1, "--batch", 6, "--out", out, *extra)


def test_bad_files_are_listed_in_one_warning_and_skipped(messy_folder, tmp_path):
    result = finetune_from_scratch(messy_folder, tmp_path / "run")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "unreadable" in line]
    assert len(warnings) == 1
    for name in ("empty.png", "truncated.png", "corrupt.jpg", "notes.txt"):
        assert name in result.output
    assert "PHOTO.JPEG" not in result.output and "Traceback" not in result.output


def test_strict_turns_bad_files_into_one_line_error(messy_folder, tmp_path):
    result = finetune_from_scratch(messy_folder, tmp_path / "run", "--strict")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.parametrize("case", ["empty_class", "no_images", "missing_path", "a_file"])
def test_unusable_folders_are_one_line_errors(messy_folder, tmp_path, case):
    if case == "empty_class":
        (messy_folder / "purple").mkdir()
        data = messy_folder
    elif case == "no_images":
        data = tmp_path / "nothing"
        (data / "cats").mkdir(parents=True)
        (data / "cats" / "readme.txt").write_text("no images here")
    elif case == "missing_path":
        data = tmp_path / "absent"
    else:
        data = messy_folder / "red" / "0.png"
    result = finetune_from_scratch(data, tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


# -- a tensorflow-datasets source -------------------------------------------------------------


def test_finetune_on_tfds_source_via_mock_data(tmp_path, mnist_metadata_dir):
    import tensorflow_datasets as tfds

    out = tmp_path / "run"
    tfds_flags = ("--data", "tfds:mnist", "--data-dir", mnist_metadata_dir)
    with tfds.testing.mock_data(num_examples=12, data_dir=mnist_metadata_dir):
        result = invoke("finetune", "--model", "vit-mu4", "--from-scratch", *tfds_flags,
                        "--res", "28", "--steps", "2", "--batch", "8", "--out", out)
        assert result.exit_code == 0, result.output
        assert (out / "labels.txt").read_text().split() == [str(i) for i in range(10)]
        report = invoke("evaluate", out, *tfds_flags, "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["num_examples"] == 12
