"""Training and inference throughput and peak memory: vitcli vs timm (PyTorch) vs keras-hub.

Run through `benchmarks/run.sh` (which builds `.venv-bench`); by hand:

    .venv-bench/bin/python benchmarks/throughput.py [--quick] [--models vit-ti16,vit-s16]

The method (README.md beside this file): every configuration (framework, precision, XLA,
model) runs in a fresh subprocess that builds the model, times inference steps first and then
training steps on one synthetic batch held in memory, and reads the process's peak RSS after
each phase. Configurations of one model run one after another, round after round, so every
framework sees the same machine state. The figures are medians over the timed steps of all
rounds; the fraction of peak divides the model FLOPs the step performs by the machine's
measured fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from machine import QUIET_LOAD, QUIET_WAIT_SECONDS, RETRIES, LoadMeter, wait_until_quiet

HERE = Path(__file__).resolve().parent
STANDIN_PATH = HERE / "torchvision_standin"
BATCH = 32
IMAGE_SIZE = 224
NUM_CLASSES = 1000
PEAK_N, PEAK_REPEATS = 2048, 10
THREADS = 2  # intra-op threads for every framework (TF inter-op: 1, torch inter-op: 1)
LEARNING_RATE = 1e-3
MOMENTUM = 0.9
CLIP_NORM = 1.0  # vitcli's default recipe clips the global gradient norm; all do the same
TIMM_NAMES = {"vit-ti16": "vit_tiny_patch16_224", "vit-s16": "vit_small_patch16_224",
              "vit-b16": "vit_base_patch16_224"}


@dataclass(frozen=True)
class Config:
    """One measured configuration (everything but the model)."""

    framework: str  # vitcli | timm | keras-hub
    precision: str = "fp32"  # fp32 | bf16
    jit: bool = False  # vitcli: the whole training step XLA-compiled (--jit)
    compiled: bool = False  # timm: torch.compile'd (inference only: its training compile
    # takes minutes per model on 2 cores)

    @property
    def label(self) -> str:
        return (f"{self.framework} {self.precision}{' XLA' if self.jit else ''}"
                f"{' torch.compile' if self.compiled else ''}")


# bf16 with whole-step XLA is left out: XLA:CPU ran it at 0.53-0.63x timm (benchmarks/profile.md).
CONFIGS = [
    Config("vitcli", "fp32"), Config("timm", "fp32"), Config("timm", "fp32", compiled=True),
    Config("keras-hub", "fp32"), Config("vitcli", "fp32", jit=True), Config("vitcli", "bf16"),
    Config("timm", "bf16"), Config("timm", "bf16", compiled=True),
]


@dataclass
class Steps:
    """Warm-up and timed steps per phase, per round."""

    train_warmup: int
    train_timed: int
    infer_warmup: int
    infer_timed: int


# Chosen so that the full run stays near 20 minutes on 2 cores, where one training step at
# batch 32 takes about 1.7 s (ti16), 5.5 s (s16) and 18-20 s (b16), plus each configuration's
# start-up and warm-up: b16 gets one warm-up and ONE timed training step per configuration.
# --rounds N repeats the whole interleaved sequence N times (the medians pool all rounds).
FULL_STEPS = {"vit-ti16": Steps(2, 5, 2, 6), "vit-s16": Steps(1, 3, 1, 4),
              "vit-b16": Steps(1, 1, 1, 2)}
QUICK_STEPS = {"vit-ti16": Steps(1, 3, 1, 3)}


# ---------------------------------------------------------------------------------------------
# Worker side: one configuration in this process.
# ---------------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def time_steps(step, warmup: int, timed: int, first_warmup=None,
               first: list | None = None) -> list[float]:
    """Runs `warmup` untimed steps (the first through `first_warmup` when given; its seconds
    appended to `first`), then returns the seconds of each of `timed` steps; `step()`
    returns only once its work is done."""
    for index in range(warmup):
        start = time.perf_counter()
        (first_warmup or step)() if index == 0 else step()
        if index == 0 and first is not None:
            first.append(time.perf_counter() - start)
    seconds = []
    for _ in range(timed):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def set_tf_threads() -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def synthetic_tf_batch():
    import tensorflow as tf

    tf.random.set_seed(0)
    images = tf.random.uniform((BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), 0.0, 255.0)
    labels = tf.one_hot(tf.random.uniform((BATCH,), 0, NUM_CLASSES, tf.int32), NUM_CLASSES)
    return images, labels


def vitcli_steps(variant: str, config: Config):
    """(inference step, training step) of vitcli's own code paths."""
    import keras
    import tensorflow as tf

    from vitcli.api import build_model
    from vitcli.config import TrainConfig
    from vitcli.evaluate.inference import forward_function
    from vitcli.train.optim import make_optimizer
    from vitcli.train.precision import dtype_policy
    from vitcli.train.step import make_train_step

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    images, labels = synthetic_tf_batch()
    with strategy.scope():
        model = build_model(variant, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                            dtype=dtype_policy(config.precision))
        recipe = TrainConfig(optimizer="sgd", learning_rate=LEARNING_RATE, momentum=MOMENTUM,
                             warmup_steps=0, batch_size=BATCH, grad_clip_norm=CLIP_NORM)
        optimizer = make_optimizer(recipe, total_steps=10_000)
        optimizer.build(model.trainable_variables)
    train_step = make_train_step(model, optimizer, strategy, global_batch=BATCH,
                                 grad_clip_norm=CLIP_NORM, jit=config.jit)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(data))
    # vitcli's evaluation path; with XLA the same call compiled (vitcli has no XLA inference).
    forward = (tf.function(lambda x: model(x, training=False), jit_compile=True)
               if config.jit else forward_function(model))
    return (lambda: forward(images).numpy()), (lambda: train_step(iterator).numpy())


def keras_hub_steps(variant: str, config: Config):
    """keras-hub's ViTBackbone + class token + Dense head, trained with Keras' own
    `train_on_batch` (compiled without XLA, Keras' default on CPU)."""
    import keras
    import keras_hub
    import tensorflow as tf

    from vitcli.models.registry import decode_variant

    keras.utils.set_random_seed(0)
    row = decode_variant(variant)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), patch_size=row.patch_size,
        num_layers=row.depth, num_heads=row.num_heads, hidden_dim=row.hidden_size,
        mlp_dim=row.mlp_dim, layer_norm_epsilon=1e-6, dtype="float32")
    pixels = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    tokens = backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(pixels))
    logits = keras.layers.Dense(NUM_CLASSES, name="head")(tokens[:, 0])
    model = keras.Model(pixels, logits)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM,
                                                 global_clipnorm=CLIP_NORM),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    images, labels = synthetic_tf_batch()
    forward = tf.function(lambda x: model(x, training=False))
    return (lambda: forward(images).numpy()), (lambda: model.train_on_batch(images, labels))


def timm_steps(variant: str, config: Config):
    """timm's ViT in PyTorch eager mode (fp32, or bf16 through CPU autocast)."""
    import timm
    import torch
    import torch.nn.functional as functional

    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAMES[variant], num_classes=NUM_CLASSES)
    forward = torch.compile(model) if config.compiled else model  # Inductor, C++ on CPU
    images = torch.rand(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    labels = torch.randint(0, NUM_CLASSES, (BATCH,))
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    bf16 = config.precision == "bf16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def infer():
        model.eval()
        with torch.inference_mode(), autocast():
            return forward(images).float().sum().item()

    def train():
        model.train()
        with autocast():
            loss = functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()
        return loss.item()

    return infer, train


def standin_guard():
    """(wrap, check): `wrap(step)` runs a step with a profile hook that records any frame of the
    torchvision stand-in; `check()` fails if one ran or a stand-in function was ever called."""
    import torchvision

    if not getattr(torchvision, "STANDIN", False):
        raise SystemExit(f"expected the torchvision stand-in, imported {torchvision.__file__}")
    seen: list[str] = []

    def hook(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(torchvision.STANDIN_ROOT):
            seen.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    def wrap(step):
        def profiled():
            sys.setprofile(hook)
            try:
                step()
            finally:
                sys.setprofile(None)
        return profiled

    def check():
        if seen or torchvision.CALLS:
            raise SystemExit(f"torchvision stand-in code ran: {seen or torchvision.CALLS}")
        return {"standin_frames_in_profiled_steps": 0, "standin_calls": 0}

    return wrap, check


def run_worker(spec: dict) -> dict:
    config = Config(spec["framework"], spec["precision"], spec["jit"], spec["compiled"])
    steps = Steps(**spec["steps"])
    if config.compiled:  # inference only (see Config)
        steps = Steps(0, 0, max(steps.infer_warmup, 1), steps.infer_timed)
    guard = None
    if config.framework == "timm":
        import torch

        torch.set_num_threads(THREADS)
        torch.set_num_interop_threads(1)
        infer, train = timm_steps(spec["model"], config)
        guard = standin_guard()
    else:
        set_tf_threads()
        maker = vitcli_steps if config.framework == "vitcli" else keras_hub_steps
        infer, train = maker(spec["model"], config)
    wrap = guard[0] if guard else (lambda step: step)
    result = {"rss_after_build_mib": peak_rss_mib()}
    first_infer, first_train = [], []
    result["infer_seconds"] = time_steps(infer, steps.infer_warmup, steps.infer_timed,
                                         wrap(infer), first_infer)
    result["infer_peak_rss_mib"] = peak_rss_mib()
    result["train_seconds"] = time_steps(train, steps.train_warmup, steps.train_timed,
                                         wrap(train), first_train)
    result["train_peak_rss_mib"] = peak_rss_mib()
    # the first call of each phase: tracing / compilation and the step itself
    result["first_infer_seconds"] = first_infer[0] if first_infer else None
    result["first_train_seconds"] = first_train[0] if first_train else None
    if guard:
        result["standin"] = guard[1]()
    return result


def run_peak_worker(library: str) -> dict:
    """The best GFLOP/s of a PEAK_N x PEAK_N matmul in one library (fp32, and bf16 where it
    has it), each library in its own process: TF's spinning thread pools would slow a torch
    matmul in the same process."""
    import numpy as np

    flop = 2 * PEAK_N**3
    a = np.random.default_rng(0).random((PEAK_N, PEAK_N), dtype=np.float32)
    b = np.random.default_rng(1).random((PEAK_N, PEAK_N), dtype=np.float32)

    def best(run) -> float:
        run()
        times = []
        for _ in range(PEAK_REPEATS):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return round(flop / min(times) / 1e9, 1)

    if library == "numpy":
        return {"numpy_fp32": best(lambda: a @ b)}
    if library == "tensorflow":
        set_tf_threads()
        import tensorflow as tf

        matmul = tf.function(tf.matmul)
        ta, tb = tf.constant(a), tf.constant(b)
        ha, hb = tf.cast(ta, tf.bfloat16), tf.cast(tb, tf.bfloat16)
        return {"tensorflow_fp32": best(lambda: matmul(ta, tb).numpy()),
                "tensorflow_bf16": best(lambda: matmul(ha, hb).numpy())}
    import torch

    torch.set_num_threads(THREADS)
    # torch's own tensors: from_numpy buffers measured 90-104 GFLOP/s here, torch.rand 181-198.
    xa, xb = torch.rand(PEAK_N, PEAK_N), torch.rand(PEAK_N, PEAK_N)
    ya, yb = xa.bfloat16(), xb.bfloat16()
    return {"torch_fp32": best(lambda: xa @ xb), "torch_bf16": best(lambda: ya @ yb)}


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8")


def cpu_facts() -> dict:
    """The CPU's model name, the ISA features that matter to matmul kernels, and whether
    TensorFlow runs its oneDNN kernels."""
    from vitcli.train.precision import cpu_flags, native_bf16_feature

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
    return {"model": model, "isa": [flag for flag in ISA_FLAGS if flag in flags],
            "native_bf16": native_bf16_feature(), "onednn": onednn}


def run_kernels_worker() -> dict:
    """Which TensorFlow kernels run vitcli's matmuls, from one profiled vit-ti16 step."""
    set_tf_threads()
    from profile_step import vitcli_profile

    profile = vitcli_profile("vit-ti16")
    counts = {name: calls for name, (_, calls) in profile["by_type_ms"].items()}
    matmuls = {name: calls for name, calls in counts.items() if "MatMul" in name}
    library = ("oneDNN" if any(name.startswith("_Mkl") for name in matmuls)
               else "Eigen" if matmuls else "unknown")
    return {"matmul_kernels": matmuls, "library": library,
            "kernel_calls": profile["kernel_calls"]}


def measure_peak(log) -> dict:
    result = {"n": PEAK_N, "repeats": PEAK_REPEATS}
    for library in ("numpy", "tensorflow", "torch"):
        found = spawn({"kind": "peak", "library": library}, "peak", log)
        result.update({key: value for key, value in found.items()
                       if key.endswith(("_fp32", "_bf16"))})
        result[f"{library}_foreign_load_cores"] = found.get("foreign_load_cores")
    result["fp32_peak_gflops"] = max(result[key] for key in result if key.endswith("_fp32"))
    result["bf16_peak_gflops"] = max(result[key] for key in result if key.endswith("_bf16"))
    return result


# ---------------------------------------------------------------------------------------------
# Orchestrator side: subprocesses, aggregation, tables.
# ---------------------------------------------------------------------------------------------


def worker_env(framework: str) -> dict:
    """Equal thread settings for everyone; the torchvision stand-in only for timm."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow",
               TF_NUM_INTRAOP_THREADS=str(THREADS), TF_NUM_INTEROP_THREADS="1")
    if framework == "timm":
        env["PYTHONPATH"] = str(STANDIN_PATH)
    return env


def spawn(payload: dict, framework: str, log) -> dict:
    """Runs one configuration; a run that other processes disturbed (more than QUIET_LOAD
    cores busy on average) is run again (up to RETRIES times) and the quietest run is kept."""
    runs = [spawn_once(payload, framework, log)]
    while ("error" not in runs[-1] and runs[-1]["foreign_load_cores"] > QUIET_LOAD
           and len(runs) <= RETRIES):
        log("    running it again")
        runs.append(spawn_once(payload, framework, log))
    runs = [run for run in runs if "error" not in run] or runs[-1:]
    runs.sort(key=lambda run: run.get("foreign_load_cores", 0.0))
    if len(runs) > 1:
        runs[0]["disturbed_runs_dropped"] = [
            {key: value for key, value in run.items() if key.endswith(("_seconds", "_cores"))}
            for run in runs[1:]]
    return runs[0]


def spawn_once(payload: dict, framework: str, log) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(payload)]
    wait_until_quiet(log)
    with LoadMeter() as meter:
        done = subprocess.run(command, env=worker_env(framework), capture_output=True,
                              text=True)
    wall, load = meter.seconds, meter.load
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        log(f"    FAILED ({done.returncode}) after {wall:.0f}s:\n{done.stderr[-3000:]}")
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1],
                "wall_seconds": wall}
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_seconds"] = round(wall, 1)
    result["foreign_load_cores"] = round(load, 2)
    if load > QUIET_LOAD:
        log(f"    note: other processes kept {load:.2f} cores busy during this run")
    return result


def model_flops(variant: str) -> int:
    from vitcli.models.cost import flops
    from vitcli.models.registry import decode_variant

    return flops(decode_variant(variant, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE))


@dataclass
class Row:
    model: str
    config: Config
    runs: list = field(default_factory=list)

    def pooled(self, key: str) -> list[float]:
        return [value for run in self.runs if "error" not in run for value in run[key]]

    def summary(self, forward_flops: int, peak_gflops: float) -> dict:
        out = {"model": self.model, **asdict(self.config), "label": self.config.label}
        errors = [run["error"] for run in self.runs if "error" in run]
        if errors:
            out["error"] = errors[0]
        out["max_foreign_load_cores"] = max(run.get("foreign_load_cores", 0.0)
                                            for run in self.runs)
        for phase, factor in (("train", 3), ("infer", 1)):
            seconds = self.pooled(f"{phase}_seconds")
            if not seconds:
                continue
            median = statistics.median(seconds)
            rate = BATCH / median
            out[phase] = {
                "images_per_second": round(rate, 2),
                "median_step_seconds": round(median, 4),
                "min_step_seconds": round(min(seconds), 4),
                "max_step_seconds": round(max(seconds), 4),
                "timed_steps": len(seconds),
                "fraction_of_fp32_peak": round(factor * forward_flops * rate / 1e9
                                               / peak_gflops, 4),
                "peak_rss_mib": round(max(run[f"{phase}_peak_rss_mib"] for run in self.runs
                                          if "error" not in run)),
                "first_step_seconds": round(max(run.get(f"first_{phase}_seconds") or 0.0
                                                for run in self.runs if "error" not in run), 2),
            }
        return out


def run_all(models: list[str], steps: dict, rounds: dict, log) -> dict:
    started = time.time()
    log("measuring the fp32 matmul peak ...")
    peak = measure_peak(log)
    log(f"  {json.dumps(peak)}")
    rows = []
    for model in models:
        model_rows = [Row(model, config) for config in CONFIGS]
        for round_index in range(rounds[model]):
            for row in model_rows:
                payload = {"kind": "model", "model": model, "framework": row.config.framework,
                           "precision": row.config.precision, "jit": row.config.jit,
                           "compiled": row.config.compiled, "steps": asdict(steps[model])}
                log(f"[{time.time() - started:6.0f}s] {model} round {round_index + 1}: "
                    f"{row.config.label}")
                result = spawn(payload, row.config.framework, log)
                row.runs.append(result)
                if "error" not in result:
                    log(f"    infer {_rate(result['infer_seconds'])}, "
                        f"train {_rate(result['train_seconds'])}, "
                        f"peak RSS {result['train_peak_rss_mib']:.0f} MiB, "
                        f"{result['wall_seconds']:.0f}s")
        rows.extend(model_rows)
    summaries = [row.summary(model_flops(row.model), peak["fp32_peak_gflops"]) for row in rows]
    return {"peak": peak, "rows": summaries, "raw": [
        {"model": row.model, "label": row.config.label, "runs": row.runs} for row in rows],
        "seconds": round(time.time() - started)}


def _rate(seconds: list[float]) -> str:
    return f"{BATCH / statistics.median(seconds):.1f} img/s" if seconds else "-"


def ratios(rows: list[dict]) -> list[dict]:
    """vitcli / timm images/s for each model, phase and precision (best vitcli config too)."""
    out = []
    by_key = {(row["model"], row["label"]): row for row in rows}
    for model in dict.fromkeys(row["model"] for row in rows):
        for precision in ("fp32", "bf16"):
            for versus in (f"timm {precision}", f"timm {precision} torch.compile"):
                out += _ratios_against(by_key, model, precision, versus)
    return out


def _ratios_against(by_key: dict, model: str, precision: str, versus: str) -> list[dict]:
    """vitcli's configurations of `precision` / the `versus` row, per phase both have."""
    out = []
    timm = by_key.get((model, versus))
    for label in (f"vitcli {precision}", f"vitcli {precision} XLA"):
        mine = by_key.get((model, label))
        if not timm or not mine:
            continue
        entry = {"model": model, "vitcli": label, "timm": versus}
        for phase in ("train", "infer"):
            if phase in mine and phase in timm:
                entry[phase] = round(mine[phase]["images_per_second"]
                                     / timm[phase]["images_per_second"], 3)
        if "train" in mine and "train" in timm:
            entry["train_rss"] = round(mine["train"]["peak_rss_mib"]
                                       / timm["train"]["peak_rss_mib"], 3)
        out.append(entry)
    return out


def markdown(report: dict, command: str) -> str:
    peak = report["peak"]
    lines = [
        "# Throughput benchmark results", "",
        f"Command: `{command}`  ",
        f"Machine: {report['machine']}  ",
        f"Threads: {THREADS} intra-op for every framework (TF inter-op 1, torch inter-op 1, "
        f"OMP/MKL {THREADS}); batch {BATCH}, {IMAGE_SIZE} px, {NUM_CLASSES} classes, "
        "synthetic data held in memory.  ",
        f"fp32 matmul peak ({peak['n']}x{peak['n']}, best of {peak['repeats']}, each "
        "library in its own process): numpy "
        f"{peak['numpy_fp32']}, TF {peak['tensorflow_fp32']}, torch {peak['torch_fp32']} "
        f"GFLOP/s -> **{peak['fp32_peak_gflops']} GFLOP/s** used below "
        f"(bf16 matmul: TF {peak['tensorflow_bf16']}, torch {peak['torch_bf16']} GFLOP/s).  ",
        f"CPU: {report['cpu']['model']}; ISA: {', '.join(report['cpu']['isa']) or 'none listed'}"
        f"; native bf16 matmul: {'yes' if report['cpu']['native_bf16'] else 'no'}; TensorFlow "
        f"oneDNN: {'on' if report['cpu']['onednn'] else 'off'}.  ",
        f"TensorFlow kernels of vitcli's matmuls (one profiled vit-ti16 training step): "
        f"{_kernels(report.get('kernels', {}))}.  ",
        f"Total time: {report['seconds']} s (waits for a quiet machine included: "
        f"BENCH_QUIET_WAIT={QUIET_WAIT_SECONDS:g} s per configuration, "
        f"BENCH_RETRIES={RETRIES}).", "",
        "Images/s are batch / median step time over all timed steps; % of peak = model FLOPs "
        "per image (forward; training 3x) x images/s / fp32 matmul peak; memory = peak RSS "
        "of the configuration's own process after the inference phase and after the training "
        "phase (imports and model included); other load = the most CPU cores that processes "
        "outside the benchmark used during the configuration's runs (above "
        f"{QUIET_LOAD} the figures are disturbed).", "",
        "| model | configuration | train img/s | train % peak | train % TF fp32 ceiling "
        "| infer img/s | infer % peak | peak RSS infer (MiB) | peak RSS train (MiB) "
        "| first train step (s) | first infer step (s) | timed steps (train/infer) "
        "| other load (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tf_share = peak["fp32_peak_gflops"] / peak["tensorflow_fp32"]
    for row in report["rows"]:
        if "error" in row and "train" not in row:
            lines.append(f"| {row['model']} | {row['label']} | failed: {row['error'][:60]} "
                         "| | | | | | | | | | |")
            continue
        train, infer = row.get("train", {}), row.get("infer", {})
        tf_ceiling = (f"{100 * train['fraction_of_fp32_peak'] * tf_share:.1f}%"
                      if train and row["precision"] == "fp32" else "")
        lines.append(
            f"| {row['model']} | {row['label']} | {train.get('images_per_second', '')} "
            f"| {_percent(train)} | {tf_ceiling} | {infer.get('images_per_second', '')} "
            f"| {_percent(infer)} | {infer.get('peak_rss_mib', '')} "
            f"| {train.get('peak_rss_mib', '')} | {train.get('first_step_seconds', '')} "
            f"| {infer.get('first_step_seconds', '')} "
            f"| {train.get('timed_steps', '')}/{infer.get('timed_steps', '')} "
            f"| {row['max_foreign_load_cores']:.2f} |")
    lines += ["", "vitcli / timm (images/s and training peak RSS ratios, same precision):", "",
              "| model | vitcli | vs | train | infer | peak RSS train |",
              "|---|---|---|---:|---:|---:|"]
    for entry in report["ratios"]:
        lines.append(f"| {entry['model']} | {entry['vitcli']} | {entry['timm']} "
                     f"| {entry.get('train', '')} | {entry.get('infer', '')} "
                     f"| {entry.get('train_rss', '')} |")
    return "\n".join(lines) + "\n"


def _kernels(kernels: dict) -> str:
    if "error" in kernels or not kernels:
        return f"not profiled ({kernels.get('error', 'skipped')})"
    names = ", ".join(f"`{name}` x{count}" for name, count in kernels["matmul_kernels"].items())
    return (f"{names} ({kernels['library']}); {kernels['kernel_calls']} TensorFlow kernel calls "
            f"per step")


def _percent(phase: dict) -> str:
    return f"{100 * phase['fraction_of_fp32_peak']:.1f}%" if phase else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="vit-ti16 only, fewer steps")
    parser.add_argument("--models", help="comma-separated subset of vit-ti16,vit-s16,vit-b16")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the interleaved sequence of configurations N times")
    parser.add_argument("--json", default=str(HERE / "results.json"))
    parser.add_argument("--markdown", default=str(HERE / "results.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        workers = {"peak": lambda: run_peak_worker(spec["library"]),
                   "kernels": run_kernels_worker, "model": lambda: run_worker(spec)}
        result = workers[spec["kind"]]()
        print("RESULT " + json.dumps(result), flush=True)
        return
    steps = QUICK_STEPS if args.quick else FULL_STEPS
    models = args.models.split(",") if args.models else list(steps)
    steps = {model: steps.get(model, FULL_STEPS[model]) for model in models}
    rounds = {model: args.rounds for model in models}
    report = run_all(models, steps, rounds, lambda text: print(text, flush=True))
    report["cpu"] = cpu_facts()
    report["kernels"] = spawn({"kind": "kernels"}, "kernels", lambda text: print(text, flush=True))
    report["machine"] = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
                         f"cores, {platform.system()} {platform.release()}, "
                         f"Python {platform.python_version()}")
    report["versions"] = versions()
    report["steps"] = {model: asdict(value) for model, value in steps.items()}
    report["rounds"] = rounds
    report["ratios"] = ratios(report["rows"])
    command = "bash benchmarks/run.sh" + (" --quick" if args.quick else "") + (
        f" --models {args.models}" if args.models else "") + (
        f" --rounds {args.rounds}" if args.rounds != 1 else "")
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    Path(args.markdown).write_text(markdown(report, command))
    print(Path(args.markdown).read_text())


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("vitcli", "tensorflow", "keras", "keras-hub", "torch", "timm", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    main()
