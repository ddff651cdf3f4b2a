"""Where the time of vitcli's training step goes, next to timm's: a diagnostic, not part of
`make bench`.

    .venv-bench/bin/python benchmarks/profile_step.py [--model vit-ti16] [--steps 4]
        [--precision bf16]

For vitcli (fp32, default strategy, batch 32, 224 px, the benchmark's thread settings):
- phase timings (median of --steps after 2 warm-ups): the forward pass alone (training=True),
  forward + loss + gradients (no update), and vitcli's whole training step; each without and
  with XLA;
- one whole step under the TensorFlow profiler (tf.profiler.experimental), its kernels summed
  by op type and by phase (forward, backward, optimizer/clipping), read from the .xplane.pb.
For timm (run in a subprocess with the torchvision stand-in): the same phase timings and the
torch profiler's self time by op. Results go to benchmarks/profile_<model>.json and stdout.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH, SIZE, CLASSES, THREADS = 32, 224, 1000, 2
TIMM_NAMES = {"vit-ti16": "vit_tiny_patch16_224", "vit-s16": "vit_small_patch16_224",
              "vit-b16": "vit_base_patch16_224"}
# Profiler events that are bookkeeping, not kernels.
NOT_KERNELS = {"Process", "Record", "Start", "StartRegion", "StopRegion", "ParallelFor",
               "MemoryAllocation", "MemoryDeallocation"}


def median_seconds(run, steps: int) -> float:
    for _ in range(2):
        run()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return round(statistics.median(seconds), 4)


def vitcli_setup(variant: str, precision: str = "fp32"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from vitcli.api import build_model
    from vitcli.config import TrainConfig
    from vitcli.train.optim import make_optimizer
    from vitcli.train.precision import dtype_policy

    with contextlib.suppress(RuntimeError):  # already set by an earlier call
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    model = build_model(variant, num_classes=CLASSES, image_size=SIZE,
                        dtype=dtype_policy(precision))
    optimizer = make_optimizer(TrainConfig(optimizer="sgd", learning_rate=1e-3, warmup_steps=0,
                                           batch_size=BATCH), 10_000)
    optimizer.build(model.trainable_variables)
    images = tf.random.uniform((BATCH, SIZE, SIZE, 3), 0, 255)
    labels = tf.one_hot(tf.random.uniform((BATCH,), 0, CLASSES, tf.int32), CLASSES)
    return model, optimizer, images, labels


def vitcli_phases(variant: str, steps: int, precision: str = "fp32") -> dict:
    """Median seconds of forward, forward+backward and the whole step, without and with XLA."""
    import tensorflow as tf

    from vitcli.train.step import make_train_step, per_example_loss

    model, optimizer, images, labels = vitcli_setup(variant, precision)
    variables = model.trainable_variables
    strategy = tf.distribute.get_strategy()
    out = {}
    for jit in (False, True):
        @tf.function(jit_compile=jit)
        def forward(x):
            return model(x, training=True)

        @tf.function(jit_compile=jit)
        def gradients(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(per_example_loss(y, model(x, training=True), 0.0)) / BATCH
            return tape.gradient(loss, variables)

        step = make_train_step(model, optimizer, strategy, global_batch=BATCH, jit=jit)
        iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
        key = "xla" if jit else "no_xla"
        out[key] = {
            "forward": median_seconds(lambda f=forward: f(images).numpy(), steps),
            "forward_backward": median_seconds(
                lambda g=gradients: g(images, labels)[0].numpy(), steps),
            "train_step": median_seconds(lambda s=step, i=iterator: s(i).numpy(), steps),
        }
        phases = out[key]
        phases["backward"] = round(phases["forward_backward"] - phases["forward"], 4)
        phases["optimizer_and_rest"] = round(phases["train_step"] - phases["forward_backward"],
                                             4)
    return out


def kernel_table(xplane_file: str, seconds: float) -> dict:
    """Kernel time by op type, by phase and by model part from one profiled step's XSpace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(xplane_file).read_bytes())
    by_type: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    by_phase: collections.Counter = collections.Counter()
    by_part: collections.Counter = collections.Counter()
    by_part_type: collections.Counter = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name or name.startswith("EagerLocalExecute"):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                if op_type in NOT_KERNELS:
                    continue
                milliseconds = event.duration_ps / 1e9
                part = part_of(op_name)
                by_type[op_type] += milliseconds
                count[op_type] += 1
                by_phase[phase_of(op_name)] += milliseconds
                by_part[part] += milliseconds
                by_part_type[f"{part} / {op_type}"] += milliseconds
    return {
        "step_seconds": round(seconds, 3),
        "kernel_ms_total": round(sum(by_type.values()), 1),
        "kernel_calls": sum(count.values()),
        "by_type_ms": {key: [round(value, 1), count[key]]
                       for key, value in by_type.most_common(20)},
        "by_phase_ms": {key: round(value, 1) for key, value in by_phase.most_common()},
        "by_part_ms": {key: round(value, 1) for key, value in by_part.most_common()},
        "by_part_and_type_ms": {key: round(value, 1)
                                for key, value in by_part_type.most_common(25)},
    }


def phase_of(op_name: str) -> str:
    if op_name.startswith("gradient_tape/"):
        return "backward"
    if op_name.startswith("vit-"):
        return "forward"
    return "loss, clipping, optimizer"


def part_of(op_name: str) -> str:
    """The part of the model an op belongs to (the q/k/v/out projections and the attention
    einsums share the attention scope: tell them apart by op type, MatMul vs BatchMatMul)."""
    for marker, label in (("MultiHeadDotProductAttention", "attention"), ("MlpBlock", "MLP"),
                          ("LayerNorm", "LayerNorm"), ("encoder_norm", "LayerNorm"),
                          ("/embedding", "patch embedding")):
        if marker in op_name:
            return label
    if op_name.startswith(("gradient_tape/", "vit-")):
        return "other model ops (residuals, head, embeddings)"
    return "loss, clipping, optimizer"


def vitcli_profile(variant: str, precision: str = "fp32") -> dict:
    import tensorflow as tf

    from vitcli.train.step import make_train_step

    model, optimizer, images, labels = vitcli_setup(variant, precision)
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), global_batch=BATCH)
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    for _ in range(2):
        step(iterator).numpy()
    logdir = tempfile.mkdtemp(prefix="vitcli-profile-")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    step(iterator).numpy()
    seconds = time.perf_counter() - start
    tf.profiler.experimental.stop()
    files = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))
    return kernel_table(files[-1], seconds)


def timm_worker(variant: str, steps: int) -> dict:
    import timm
    import torch
    import torch.nn.functional as functional

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAMES[variant], num_classes=CLASSES).train()
    images = torch.rand(BATCH, 3, SIZE, SIZE) * 2 - 1
    labels = torch.randint(0, CLASSES, (BATCH,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def forward():
        model(images).sum().item()

    def forward_backward():
        loss = functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def step():
        forward_backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    phases = {"forward": median_seconds(forward, steps),
              "forward_backward": median_seconds(forward_backward, steps),
              "train_step": median_seconds(step, steps)}
    phases["backward"] = round(phases["forward_backward"] - phases["forward"], 4)
    phases["optimizer_and_rest"] = round(phases["train_step"] - phases["forward_backward"], 4)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    rows = sorted(profile.key_averages(), key=lambda row: -row.self_cpu_time_total)
    table = {row.key: [round(row.self_cpu_time_total / 1000, 1), row.count] for row in rows[:15]}
    return {"phases": phases, "self_ms_by_op": table}


def run_timm(variant: str, steps: int) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(HERE / "torchvision_standin"), OMP_NUM_THREADS=str(THREADS),
               MKL_NUM_THREADS=str(THREADS))
    done = subprocess.run([sys.executable, __file__, "--timm-worker", variant, "--steps",
                           str(steps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit-ti16")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="vitcli's precision (timm is profiled in fp32)")
    parser.add_argument("--timm-worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.timm_worker:
        print(json.dumps(timm_worker(args.timm_worker, args.steps)))
        return
    sys.path.insert(0, str(HERE))
    from machine import LoadMeter, wait_until_quiet

    report: dict = {"model": args.model}
    wait_until_quiet()
    with LoadMeter() as meter:
        report["timm"] = run_timm(args.model, args.steps)
    report["timm"]["foreign_load_cores"] = meter.load
    wait_until_quiet()
    with LoadMeter() as meter:
        report["vitcli_phases"] = vitcli_phases(args.model, args.steps, args.precision)
        report[f"vitcli_profile_{args.precision}"] = vitcli_profile(args.model, args.precision)
    report["vitcli_foreign_load_cores"] = meter.load
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"
    out = Path(args.out or HERE / f"profile_{args.model}{suffix}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
