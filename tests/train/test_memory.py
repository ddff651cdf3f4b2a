"""The memory estimate, the budget and the micro-batch plan behind `--accum auto`, and
rematerialisation (same gradients, less memory)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from vitcli.config import ModelConfig, ResNetConfig
from vitcli.errors import VitcliError
from vitcli.models.layers import EncoderBlock
from vitcli.models.registry import decode_variant
from vitcli.models.vit import build_vit
from vitcli.train import memory
from vitcli.train.memory import GIB, MIB

ROOT = Path(__file__).resolve().parents[2]
TI = decode_variant("vit-ti16", num_classes=10)


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# --- The plan. ------------------------------------------------------------------------------
def test_plan_takes_the_largest_divisor_that_fits_and_accumulates_the_rest():
    # 0.8 x 1000 - 100 = 700 bytes for images: 70 fit, and 64 is the largest divisor of 512.
    assert memory.plan_micro_batch(512, 1, per_image=10, fixed=100, budget=1000) == (64, 8)
    assert memory.plan_micro_batch(12, 1, per_image=10, fixed=100, budget=1000) == (12, 1)
    assert memory.plan_micro_batch(7, 1, per_image=100, fixed=100, budget=1000) == (7, 1)
    assert memory.plan_micro_batch(7, 1, per_image=200, fixed=100, budget=1000) == (1, 7)


def test_plan_is_per_replica():
    assert memory.plan_micro_batch(512, 8, per_image=10, fixed=100, budget=1000) == (64, 1)
    assert memory.plan_micro_batch(96, 2, per_image=10, fixed=300, budget=1000) == (48, 1)
    assert memory.plan_micro_batch(96, 2, per_image=20, fixed=300, budget=1000) == (24, 2)


def test_plan_respects_the_safety_margin_exactly():
    assert memory.plan_micro_batch(8, 1, per_image=100, fixed=0, budget=1000, safety=0.8) \
        == (8, 1)
    assert memory.plan_micro_batch(8, 1, per_image=101, fixed=0, budget=1000, safety=0.8) \
        == (4, 2)
    assert memory.plan_micro_batch(8, 1, per_image=101, fixed=0, budget=1000, safety=1.0) \
        == (8, 1)


def test_plan_counts_what_accumulating_micro_batches_costs():
    # Without accumulation 8 images fit (900 <= 1000); accumulating costs 50 per extra
    # micro-batch and counts each image twice: 4 x 2 would need 100 + 50 + 800.
    costs = {"per_micro_batch": 50, "accum_overlap": 2.0}
    assert memory.plan_micro_batch(8, 1, 100, 100, 1000, 1.0, **costs) == (8, 1)
    assert memory.plan_micro_batch(16, 1, 100, 100, 1000, 1.0, **costs) == (2, 8)
    assert memory.plan_peak_bytes(2, 8, 100, 100, **costs) == 100 + 7 * 50 + 2 * 2 * 100
    assert memory.plan_peak_bytes(8, 1, 100, 100, **costs) == 900
    assert memory.plan_peak_bytes(4, 2, 100, 100) == 500


def test_accumulation_costs_describe_the_looped_step():
    assert memory.accumulation_costs(TI, "cpu") == (0, 1.0)
    assert memory.stacked_input_bytes(TI, 8) == 8 * TI.image_size**2 * 3 * 4


def test_plan_refuses_a_batch_the_replicas_do_not_divide():
    with pytest.raises(VitcliError) as error:
        memory.plan_micro_batch(10, 4, per_image=1, fixed=0, budget=1000)
    assert "10" in one_line(error) and "4 replicas" in one_line(error)


def test_plan_refuses_when_one_image_does_not_fit_in_one_line_with_the_numbers():
    with pytest.raises(VitcliError) as error:
        memory.plan_micro_batch(64, 1, per_image=2 * GIB, fixed=3 * GIB, budget=4 * GIB)
    text = one_line(error)
    for number in ("3.00 GiB fixed", "2.00 GiB per image", "80% of 4.00 GiB"):
        assert number in text
    for fix in ("--res", "--remat", "--precision bf16", "--model", "VITCLI_MEMORY_BUDGET"):
        assert fix in text


def test_plan_refusal_names_the_batch_when_accumulating_is_what_does_not_fit():
    with pytest.raises(VitcliError) as error:
        memory.plan_micro_batch(512, 1, per_image=2 * MIB, fixed=GIB, budget=2 * GIB,
                                per_micro_batch=200 * MIB)
    text = one_line(error)
    assert "0.20 GiB per accumulated micro-batch" in text and "--batch" in text
    assert memory.plan_micro_batch(512, 1, per_image=2 * MIB, fixed=GIB, budget=2 * GIB) \
        == (256, 2)


# --- The budget. ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, size", [
    ("1000", 1000), ("3GiB", 3 * GIB), ("512MiB", 512 * MIB), ("512mib", 512 * MIB),
    ("2G", 2 * 10**9), ("2GB", 2 * 10**9), ("1.5GiB", 3 * GIB // 2), ("4 Gi", 4 * GIB),
    ("64k", 64_000), ("1TiB", 1 << 40), (" 10MB ", 10**7), ("7B", 7),
])
def test_sizes_read_binary_and_decimal_units(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "0GiB", "3XB", "GiB", "1e9", "2 G B"])
def test_bad_sizes_are_one_line_errors_naming_the_variable(text):
    with pytest.raises(VitcliError) as error:
        memory.parse_size(text)
    assert memory.BUDGET_ENV in one_line(error)


@pytest.mark.parametrize("device", ["cpu", "gpu", "tpu"])
def test_the_environment_variable_wins_on_every_device(monkeypatch, device):
    monkeypatch.setenv(memory.BUDGET_ENV, "3GiB")
    assert memory.available_bytes(device) == 3 * GIB


def test_a_bad_environment_variable_is_an_error(monkeypatch):
    monkeypatch.setenv(memory.BUDGET_ENV, "plenty")
    with pytest.raises(VitcliError) as error:
        memory.available_bytes("cpu")
    assert "plenty" in one_line(error)


def test_cpu_budget_is_free_memory_plus_what_the_process_holds(monkeypatch):
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    total = memory._read_fields("/proc/meminfo", memory.KIB)["MemTotal"]
    assert 0 < memory.available_bytes("cpu") <= total


def test_tpu_budget_is_the_documented_per_core_figure(monkeypatch):
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    assert memory.available_bytes("tpu") == memory.TPU_CORE_BYTES


def test_unknown_device_is_an_error(monkeypatch):
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    with pytest.raises(VitcliError):
        memory.available_bytes("npu")


def test_gpu_budget_is_the_smallest_visible_card_else_the_fallback(monkeypatch):
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    monkeypatch.setattr(memory, "_tf_gpu_memory_limit", lambda: None)
    monkeypatch.setattr(memory, "_nvidia_smi_totals", lambda: [80 * GIB, 40 * GIB])
    assert memory.available_bytes("gpu") == 40 * GIB
    monkeypatch.setattr(memory, "_nvidia_smi_totals", lambda: [])
    assert memory.available_bytes("gpu") == memory.GPU_FALLBACK_BYTES
    monkeypatch.setattr(memory, "_tf_gpu_memory_limit", lambda: 2 * GIB)
    assert memory.available_bytes("gpu") == 2 * GIB


def test_nvidia_smi_totals_follow_cuda_visible_devices(monkeypatch):
    output = "0, 81559\n1, 40960\n2, 16384\n"

    def run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=output, stderr="")

    monkeypatch.setattr(memory.subprocess, "run", run)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert memory._nvidia_smi_totals() == [81559 * MIB, 40960 * MIB, 16384 * MIB]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert memory._nvidia_smi_totals() == [81559 * MIB, 40960 * MIB]


def write_cgroup(directory: Path, files: dict) -> Path:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_cgroup_v2_and_v1_limits_cap_the_headroom(monkeypatch, tmp_path):
    v2 = write_cgroup(tmp_path / "v2", {"memory.max": "8589934592\n",
                                        "memory.current": "2147483648\n",
                                        "memory.stat": "anon 1\ninactive_file 1073741824\n"})
    v1 = write_cgroup(tmp_path / "v1", {"memory.limit_in_bytes": "4294967296\n",
                                        "memory.usage_in_bytes": "1073741824\n",
                                        "memory.stat": "total_inactive_file 0\n"})
    unlimited = write_cgroup(tmp_path / "none", {"memory.max": "max\n",
                                                 "memory.current": "1\n",
                                                 "memory.limit_in_bytes": "9223372036854771712\n",
                                                 "memory.usage_in_bytes": "1\n"})
    monkeypatch.setattr(memory, "_cgroup_dirs", lambda: [v2])
    assert memory.cgroup_headroom() == 7 * GIB  # 8 - 2 + 1 reclaimable
    monkeypatch.setattr(memory, "_cgroup_dirs", lambda: [v2, v1, unlimited])
    assert memory.cgroup_headroom() == 3 * GIB
    monkeypatch.setattr(memory, "_cgroup_dirs", lambda: [unlimited, tmp_path / "missing"])
    assert memory.cgroup_headroom() is None


# --- The estimate. --------------------------------------------------------------------------
def per_image(config: ModelConfig, precision: str = "fp32", remat: bool = False) -> int:
    return memory.training_bytes_per_image(config, precision, remat)


def test_estimate_grows_with_tokens_width_depth_and_mlp():
    base = per_image(TI)
    assert per_image(TI.replace(image_size=384)) > base
    assert per_image(TI.replace(patch_size=8)) > base
    assert per_image(TI.replace(hidden_size=384, num_heads=6, mlp_dim=1536)) > base
    assert per_image(TI.replace(depth=24)) > base
    assert per_image(TI.replace(mlp_dim=1536)) > base
    assert per_image(TI.replace(num_heads=6)) > base
    assert per_image(TI.replace(resnet=ResNetConfig(), patch_size=4)) > \
        per_image(TI.replace(patch_size=16))
    assert per_image(TI.replace(resnet=ResNetConfig(layers=(3, 4, 9)), patch_size=1)) > \
        per_image(TI.replace(resnet=ResNetConfig(layers=()), patch_size=4))


@pytest.mark.parametrize("variant, res", [("vit-ti16", 224), ("vit-b16", 384),
                                          ("r50-vit-b16", 384), ("vit-mu8", 16)])
def test_remat_and_16_bit_precision_cost_less(variant, res):
    config = decode_variant(variant, image_size=res)
    assert per_image(config, remat=True) < per_image(config)
    assert per_image(config, "bf16") <= per_image(config, "fp32")
    assert per_image(config, "fp16") == per_image(config, "bf16")
    assert per_image(config, "bf16", remat=True) < per_image(config, "bf16")


def test_estimate_refuses_an_unknown_precision():
    with pytest.raises(VitcliError):
        per_image(TI, "int8")


def test_fixed_memory_counts_optimizer_state_and_buffers():
    sgd = memory.fixed_training_bytes(TI, "sgd", "float32")
    assert memory.fixed_training_bytes(TI, "adamw", "float32") > sgd
    assert memory.fixed_training_bytes(TI, "sgd", "bfloat16") < sgd
    assert memory.fixed_training_bytes(TI, "sgd", "float32", accum=False) < sgd
    assert memory.fixed_training_bytes(TI, "sgd", "float32", ema=True) > sgd
    assert memory.fixed_training_bytes(TI.replace(depth=24), "sgd", "float32") > sgd
    parameters = memory.parameter_count(TI)
    # SGD in float32: weights, momentum and at least the gradients, besides the framework.
    assert sgd >= parameters * 12 + memory.FRAMEWORK_BYTES["cpu"]
    with pytest.raises(VitcliError):
        memory.fixed_training_bytes(TI, "lamb")


# --- Rematerialisation. ---------------------------------------------------------------------
TINY = ModelConfig(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=8,
                   image_size=32, num_classes=5, dropout=0.1, attention_dropout=0.1)
TINY_HYBRID = TINY.replace(patch_size=1, resnet=ResNetConfig(layers=(1, 1)))


def gradients(model: keras.Model, images, labels):
    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
        return tape.gradient(loss, model.trainable_variables)

    keras.utils.set_random_seed(1)  # both models' dropout draws from the same seeds
    return [gradient.numpy() for gradient in step(images, labels)]


def twin_models(config: ModelConfig) -> tuple[keras.Model, keras.Model]:
    """The same model (weights and dropout seeds) built without and with remat."""
    keras.utils.set_random_seed(0)
    plain = build_vit(config)
    keras.utils.set_random_seed(0)
    with memory.remat_scope(True):
        remat = build_vit(config)
    head = plain.get_layer("head").kernel  # zero-initialised: nothing else would get gradients
    head.assign(np.random.default_rng(0).normal(0, 0.3, head.shape).astype("float32"))
    remat.set_weights(plain.get_weights())
    return plain, remat


@pytest.mark.parametrize("config", [TINY, TINY_HYBRID], ids=["vit", "hybrid"])
def test_remat_gives_the_same_gradients_dropout_included(config):
    plain, remat = twin_models(config)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, config.image_size, config.image_size, 3)).astype("float32")
    labels = np.eye(5, dtype="float32")[[0, 1, 2, 3]]
    want, got = gradients(plain, images, labels), gradients(remat, images, labels)
    scale = max(np.abs(gradient).max() for gradient in want)
    for left, right in zip(got, want, strict=True):
        np.testing.assert_allclose(left, right, rtol=0, atol=1e-5 * scale)
    assert any(np.abs(gradient).max() > 0 for gradient in want[:-2])  # not just the head's
    checkpointed = {layer.name for layer in remat.layers
                    if getattr(layer, "_vitcli_checkpointed", False)}
    assert {"encoderblock_0", "encoderblock_1"} <= checkpointed
    assert ("block1" in checkpointed) == (config.resnet is not None)


def test_remat_scope_touches_only_what_it_builds():
    assert isinstance(memory.remat_scope(False), type(memory.contextlib.nullcontext()))
    original = EncoderBlock.__init__
    with memory.remat_scope(True):
        assert EncoderBlock.__init__ is not original
    assert EncoderBlock.__init__ is original
    plain = build_vit(TINY)
    assert not any(getattr(layer, "_vitcli_checkpointed", False) for layer in plain.layers)
    memory.rematerialize(plain)
    assert getattr(plain.get_layer("encoderblock_1"), "_vitcli_checkpointed", False)


def test_remat_still_returns_attention_weights():
    _, remat = twin_models(TINY)
    block = remat.get_layer("encoderblock_0")
    tokens, weights = block(tf.zeros((1, TINY.num_tokens, 32)), return_attention=True)
    assert tokens.shape == (1, TINY.num_tokens, 32) and weights.shape == (1, 4, 17, 17)


# --- One real measurement. ------------------------------------------------------------------
# RSS is sampled every 2 ms while the steps run, against the RSS just before them: the
# process's lifetime peak (ru_maxrss) can be set by start-up or tracing, which do not grow
# with the batch, and then hides the activations entirely. The script runs in the repository
# root, so it imports the sampler as tests.support.memory.
MEASURE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import vitcli
    from tests.support.memory import rss_during
    batch = int(sys.argv[1])
    model = vitcli.build_model("vit-mu16", num_classes=10, image_size=224)
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8),
                rng.integers(0, 10, (batch,))) for _ in range(2)]
    before, peak = rss_during(
        lambda: vitcli.train_steps(model, batches, learning_rate=0.01, warmup_steps=0), 0.002)
    print(json.dumps({"before": before, "peak": peak}))
""")


def training_growth(batch: int) -> dict:
    """RSS before and peak RSS during two training steps of `batch` (vit-mu16 at 224 px),
    in a fresh process."""
    completed = subprocess.run([sys.executable, "-c", MEASURE, str(batch)], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_the_estimate_covers_a_real_training_steps_memory():
    small, large = 1, 9
    runs = {batch: training_growth(batch) for batch in (small, large)}
    growth = {batch: run["peak"] - run["before"] for batch, run in runs.items()}
    measured = (growth[large] - growth[small]) / (large - small)
    estimate = per_image(decode_variant("vit-mu16", num_classes=10, image_size=224))
    assert measured > 0.25 * estimate, runs  # it measured activations, not noise
    assert measured <= estimate, runs
