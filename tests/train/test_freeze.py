"""Freezing (docs/reference.md, "Training"): each mode keeps exactly its variables bit for bit
through training (SGD, and AdamW whose weight decay would move them), the optimizer holds no
state for them, a run's checkpoint resumes only with the same --freeze, and a --freeze
backbone probe lands near the closed-form few-shot probe on the same frozen features."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import vitcli
from tests.reference.numpy_vit import random_checkpoint
from tests.support.checkpoints import TINY_VIT
from tests.support.checks import vitcli_error
from tests.support.cli import invoke
from tests.support.images import write_colour_splits
from tests.support.models import TINY_HYBRID, random_images
from tests.support.runs import optimizer_arrays
from vitcli.config import TrainConfig, resolve_run_config
from vitcli.models.vit import build_vit
from vitcli.train.groups import trained_variables
from vitcli.train.optim import make_optimizer
from vitcli.train.run import plan_run, run_training
from vitcli.weights.checkpoint import model_arrays, model_from_arrays

CLASSES = 3
EMBEDDINGS = ("embedding/", "cls/", "posembed_input/")
STEM = ("conv_root/", "gn_root/", "block1/", "block2/")
# What each mode keeps fixed, by variable path prefix (spelled out, not vitcli's rule).
FROZEN = {
    "embeddings": EMBEDDINGS + STEM,
    "blocks:1": EMBEDDINGS + STEM + ("encoderblock_0/",),
    "blocks:2": EMBEDDINGS + STEM + ("encoderblock_0/", "encoderblock_1/"),
    "backbone": EMBEDDINGS + STEM + ("encoderblock_", "encoder_norm/", "pre_logits/"),
}


def frozen_by_rule(path: str, mode: str) -> bool:
    return path.startswith(FROZEN[mode])


def tiny_model(kind: str):
    if kind == "hybrid":
        keras.utils.set_random_seed(0)
        return build_vit(TINY_HYBRID)
    arrays = random_checkpoint(3, num_classes=CLASSES, representation_size=16, **TINY_VIT)
    return model_from_arrays(arrays)[0]


def batches(image_size: int, count: int = 3):
    rng = np.random.default_rng(0)
    return [(random_images(image_size, batch=6, seed=seed), rng.integers(0, CLASSES, 6))
            for seed in range(count)]


@pytest.mark.parametrize("mode, recipe, kind", [
    ("embeddings", "finetune", "plain"), ("blocks:1", "finetune", "plain"),
    ("backbone", "finetune", "plain"), ("embeddings", "pretrain", "plain"),
    ("blocks:2", "pretrain", "plain"), ("backbone", "pretrain", "plain"),
    ("embeddings", "finetune", "hybrid")])
def test_frozen_variables_stay_bit_identical(mode, recipe, kind):
    keras.utils.clear_session()
    model = tiny_model(kind)
    start = {variable.path: variable.numpy() for variable in model.weights}
    settings = dict(learning_rate=0.05 if recipe == "finetune" else 1e-2, warmup_steps=1,
                    freeze=mode)
    vitcli.train_steps(model, batches(model.input_shape[1]), recipe=recipe, **settings)
    after = {variable.path: variable.numpy() for variable in model.weights}
    frozen = [path for path in start if frozen_by_rule(path, mode)]
    assert frozen and len(frozen) < len(start)
    for path in frozen:
        np.testing.assert_array_equal(after[path], start[path], err_msg=path)
    trained = ["head/kernel", "head/bias"] + ([] if mode == "backbone" else ["encoder_norm/gamma"])
    for path in trained:
        assert not np.array_equal(after[path], start[path]), path


@pytest.mark.parametrize("mode", ["embeddings", "blocks:1", "backbone"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_frozen_variables_have_no_optimizer_state(mode, optimizer):
    keras.utils.clear_session()
    model = tiny_model("plain")
    config = TrainConfig(optimizer=optimizer, freeze=mode, learning_rate=0.1, warmup_steps=0,
                         ema_decay=0.99)
    groups = trained_variables(model, config)
    assert set(groups.frozen) == {variable.path for variable in model.trainable_variables
                                  if frozen_by_rule(variable.path, mode)}
    assert [variable.path for variable in groups.variables] == [
        variable.path for variable in model.trainable_variables
        if variable.path not in groups.frozen]
    built = make_optimizer(config, 10, groups.multipliers)
    built.build(groups.variables)
    slots = built.momentums if optimizer == "sgd" else [*built.first_moments,
                                                         *built.second_moments]
    per_variable = len(slots) // len(groups.variables)
    expected = {f"{variable.path.replace('/', '_')}_{name}"
                for variable in groups.variables
                for name in (("momentum",) if optimizer == "sgd" else ("mu", "nu"))}
    assert {slot.name for slot in slots} == expected and per_variable in (1, 2)
    assert len(built._model_variables_moving_average) == len(groups.variables)  # EMA too


def test_freeze_beyond_the_depth_or_misspelt_is_one_line():
    model = tiny_model("plain")
    message = vitcli_error(trained_variables, model, TrainConfig(freeze="blocks:3"))
    assert "only 2 encoder blocks" in message and "blocks:0 to blocks:2" in message
    for bad in ("blocks", "blocks:-1", "head", "blocks:1,2"):
        message = vitcli_error(resolve_run_config, "finetune", None,
                               {"train": {"freeze": bad}})
        assert "unknown frozen parameters" in message and "blocks:n" in message
    message = vitcli_error(resolve_run_config, "finetune", None, {"train": {"layer_decay": 1.5}})
    assert "layer-wise learning-rate decay" in message and "(0, 1]" in message


def run_config(data, weights, out, **train):
    return resolve_run_config("finetune", None, {
        "weights": str(weights), "out": str(out), "resume": train.pop("resume", None),
        "data": {"source": str(data)},
        "train": {"batch_size": 12, "learning_rate": 0.05, "warmup_steps": 1,
                  "checkpoint_every": 3, "eval_every": 100, **train}})


def test_run_plans_checkpoints_and_resumes_with_its_freeze(colour_folder, tiny_checkpoint,
                                                          tmp_path):
    keras.utils.clear_session()
    out = tmp_path / "run"
    plan = plan_run(run_config(colour_folder, tiny_checkpoint, out, steps=3, freeze="blocks:1",
                               layer_decay=0.8, ema_decay=0.9))
    assert (plan["freeze"], plan["layer_decay"]) == ("blocks:1", 0.8)
    assert any(line.startswith("parameters: frozen: blocks:1") and "0.8" in line
               for line in plan["plan"])
    run_training(run_config(colour_folder, tiny_checkpoint, out, steps=3, freeze="blocks:1",
                            layer_decay=0.8, ema_decay=0.9))
    with np.load(tiny_checkpoint) as archive:
        start = {key: archive[key] for key in archive.files}

    def check_frozen(path):
        trained = model_arrays(vitcli.load_checkpoint(path))
        frozen = [key for key in trained
                  if key in ("cls", "embedding/kernel", "embedding/bias")
                  or key.startswith(("Transformer/posembed", "Transformer/encoderblock_0/"))]
        assert len(frozen) == 4 + 16
        for key in frozen:
            np.testing.assert_array_equal(trained[key], start[key], err_msg=key)
        moved = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"
        assert not np.array_equal(trained[moved], start[moved])

    check_frozen(out / "model.keras")
    # Slots for the trained variables only (SGD momentum and EMA averages): 20 fewer each.
    model = vitcli.load_checkpoint(out / "model.keras")
    every = make_optimizer(TrainConfig(ema_decay=0.9, learning_rate=0.1, warmup_steps=0), 3)
    every.build(model.trainable_variables)
    assert len(optimizer_arrays(out)) == len(every.variables) - 2 * 20
    run_training(run_config(colour_folder, tiny_checkpoint, out, steps=5, freeze="blocks:1",
                            layer_decay=0.8, ema_decay=0.9, resume=True))
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 5
    check_frozen(out / "model.keras")
    other = run_config(colour_folder, tiny_checkpoint, out, steps=7, freeze="embeddings",
                       layer_decay=0.8, ema_decay=0.9, resume=True)
    assert "does not match this model/optimizer" in vitcli_error(run_training, other)


def test_backbone_probe_is_near_the_closed_form_probe(tiny_checkpoint, tmp_path):
    """The SGD probe and evaluate's ridge-regression probe read the same frozen features
    (the pooled token: fine-tuning drops the pre-logits); on easy data both separate the
    classes, so their accuracies differ by at most a loose margin."""
    keras.utils.clear_session()
    data = write_colour_splits(tmp_path / "colours", train=12, test=8)
    out = tmp_path / "probe"
    run_training(run_config(data, tiny_checkpoint, out, steps=30, freeze="backbone",
                            learning_rate=0.1))
    result = invoke("evaluate", out, "--data", data, "--few-shot", "8", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    probe, closed_form = report["top1"], report["few_shot"]["8shot"]["accuracy"]
    assert probe >= 0.6 and abs(probe - closed_form) <= 0.25, (probe, closed_form)
