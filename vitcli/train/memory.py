"""How much memory a training step takes, how much the device has, and the micro-batch that fits.

`--accum auto` reaches the global batch with the largest per-replica micro-batch whose
estimated peak fits the device, accumulating gradients over the rest. On a CPU an
out-of-memory kills the process instead of raising, so the decision must come from an
estimate made before the first step:

    peak = fixed_training_bytes(...) + micro_batch * training_bytes_per_image(...)

(`plan_peak_bytes`, which also counts what accumulating micro-batches costs in the step as
it is written today: see `accumulation_costs`). Both terms are formulas in the model config whose
constants were fitted to the peak RSS measured on a 2-core CPU machine
(benchmarks/memory_calibration.py and its .json); they are set so that the estimate is at
or somewhat above every measurement, never below.

Rematerialisation (`--remat`) keeps only each encoder block's (and ResNet stage's) input for
the backward pass and recomputes the rest there: `remat_scope(True)` around the model's
construction turns it on (see its docstring for why Keras' own RematScope cannot be used).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import re
import subprocess
from pathlib import Path

from vitcli.config import ModelConfig
from vitcli.errors import VitcliError
from vitcli.models.cost import area, scaled

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
BUDGET_ENV = "VITCLI_MEMORY_BUDGET"
DEFAULT_SAFETY = 0.8  # fraction of the budget a plan may use: the estimate is not exact

# --- Per-image activation memory. ---------------------------------------------------------
# Bytes per image for each element of an encoder block's (T*D, T*M, H*T^2) activations, kept
# for the backward pass; T tokens, D width, M MLP width, H heads. Least-squares fits to the
# measured peak RSS (benchmarks/memory_calibration.json). "16" is bf16/fp16: matmuls and the
# MLP keep 16-bit tensors, but LayerNorm and the softmax run in float32 and the casts around
# them keep extra copies, so the attention term costs more than in fp32 (measured: 7.9 vs 4.1).
# (The 16-bit T*M terms are the fp32 ones halved, not measured on their own.)
BLOCK_BYTES = {"fp32": (37.2, 21.1, 4.2), "16": (22.9, 10.6, 7.9)}
# The backward pass of one block at a time: its gradients (mostly T*M sized) besides the above.
BACKWARD_BYTES = {"fp32": (0.0, 40.3, 0.0), "16": (0.0, 20.2, 0.0)}
PIXEL_BYTES = 24.0  # per H*W*3 input value: the float32 batch, its copies and prefetched ones
# Per value of each ResNet conv output (conv, GroupNorm in float32, ReLU): the root block's
# (r-vit-ti16: 12-19 bytes measured) and the bottleneck stages' (r26-vit-s32: 3.2, r50-vit-b16:
# 8.0; their convolutions' outputs are not all kept). A pure ResNet is the same stem with
# all four stages and no tokens: bit-r26's per-image cost is estimated at 1.5x the measured
# one at 32 and at 224 px, and its fixed part 3% above (benchmarks/memory_calibration.json).
STEM_ROOT_BYTES = 20.0
STEM_STAGE_BYTES = 8.0
# The same configuration's per-image cost varies between runs by up to 25% (vit-b16 remat:
# 46 and 58 MiB; the order in which TensorFlow's executor runs independent ops decides what
# is alive at once, and it changes with the machine's load), and the fits' worst
# under-estimate was 9% (vit-s16): every estimate is raised by this factor to stay above
# all the measurements. Over 60 steps the peak grew 2% more (vit-ti16, micro-batch 8).
ESTIMATE_MARGIN = 1.3

# --- Fixed memory: parameters, gradients, optimizer state, the framework itself. -----------
# Gradient-sized float32 buffers alive at the end of a step besides the weights: the
# micro-batch's gradients and the clipped copy handed to the optimizer (measured: 16.2 bytes
# per parameter for weights + SGD momentum + these); accumulating micro-batches adds a sum.
GRADIENT_COPIES = 2
COMPUTE_COPY_BYTES = 2  # bf16/fp16: the 16-bit copy of each weight the forward pass keeps
REMAT_BYTES_PER_PARAMETER = 3  # measured: vit-b16 +189 MiB fixed with remat (2.2 / param)
# The process without a model: TensorFlow, Keras and vitcli (peak RSS on the CPU, fitted with
# the per-block term below); on accelerators the runtime's own workspace on the device (a
# documented allowance for cuBLAS/cuDNN or XLA buffers, not measured: no accelerator here).
FRAMEWORK_BYTES = {"cpu": 800 * MIB, "gpu": 1 * GIB, "tpu": 512 * MIB}
# Host memory per encoder block of the traced training step (graph, gradient graph, kernels):
# 10.3 MiB measured, +4.7 MiB with remat's recomputation. On accelerators it stays on the host.
GRAPH_BYTES_PER_BLOCK = {"cpu": 12 * MIB, "gpu": 0, "tpu": 0}
REMAT_GRAPH_BYTES_PER_BLOCK = {"cpu": 6 * MIB, "gpu": 0, "tpu": 0}
# The same per ResNet bottleneck unit (r26-vit-s32: 25 MiB measured, r50-vit-b16: 9 MiB).
GRAPH_BYTES_PER_STEM_UNIT = {"cpu": 25 * MIB, "gpu": 0, "tpu": 0}

# --- Accumulation as vitcli.train.step does it (at the time of this calibration). ----------
# The step accumulates micro-batches in a tf.while_loop (one at a time, one copy of the
# graph), so a micro-batch image costs what it costs without accumulation; what grows with
# the number of micro-batches is only the stacked input of the whole per-replica batch
# (`stacked_input_bytes`). Measured on vit-s16 at 224 px, batch 16: 3.23 GiB in one
# micro-batch, 1.51 GiB as 8 x 2. (An earlier unrolled step ran the micro-batches side by
# side, 1.95x to 2.66x per image, and added a graph copy per micro-batch.)
ACCUM_OVERLAP = 1.0

# --- Device memory where it cannot be read. ------------------------------------------------
# A TPU core's HBM (v3: 16 GiB per core, v4: 32 GiB per chip); v2 cores have 8 GiB and need
# VITCLI_MEMORY_BUDGET=8GiB.
TPU_CORE_BYTES = 16 * GIB
# A GPU whose size neither nvidia-smi nor TensorFlow reports: a common small data-centre card
# (T4, V100-16GB); a larger one is used fully by setting VITCLI_MEMORY_BUDGET.
GPU_FALLBACK_BYTES = 16 * GIB
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a huge number
PRECISIONS = ("fp32", "bf16", "fp16")


def _family(precision: str) -> str:
    """"fp32", or "16" for bf16 and fp16 (same tensor sizes, same float32 islands)."""
    if precision not in PRECISIONS:
        raise VitcliError(f"unknown precision '{precision}'", hint="use fp32, bf16 or fp16")
    return "fp32" if precision == "fp32" else "16"


def _dot(coefficients, sizes) -> float:
    return sum(coefficient * size for coefficient, size in zip(coefficients, sizes, strict=True))


def _block_sizes(config: ModelConfig) -> tuple[int, int, int]:
    """(T*D, T*M, H*T^2): the sizes of an encoder block's activations per image (all 0 for
    a pure ResNet, which has no tokens: its activations are the stem's)."""
    tokens = config.num_tokens
    return (tokens * config.hidden_size, tokens * config.mlp_dim,
            config.num_heads * tokens * tokens)


def _stem_activations(config: ModelConfig) -> tuple[int, list[int], list[int]]:
    """Conv output values of the ResNet stem for one image: (root conv and max-pool, each
    stage's, each stage's input). All zero without a stem."""
    if config.resnet is None:
        return 0, [], []
    width = 64 * config.resnet.width_factor
    size = scaled(config.image_size, 2)  # (height, width) apart for a non-square model
    root = area(size) * width + area(scaled(size, 2)) * width  # the root conv, the max-pool
    size, channels = scaled(size, 2), width
    stages, inputs = [], []
    for stage, num_units in enumerate(config.resnet.layers):
        features, values = width * 2**stage, 0
        inputs.append(area(size) * channels)
        for unit in range(num_units):
            out_size = scaled(size, 2) if stage > 0 and unit == 0 else size
            values += area(size) * features + area(out_size) * 5 * features
            if unit == 0:
                values += area(out_size) * 4 * features  # the projected shortcut
            size, channels = out_size, 4 * features
        stages.append(values)
    return root, stages, inputs


def _stem_bytes(config: ModelConfig, remat: bool) -> float:
    """The stem's activations; with remat its stages keep only their inputs (float32 here:
    the stem's GroupNorms) and recompute one stage at a time."""
    root, stages, inputs = _stem_activations(config)
    if remat:
        return (STEM_ROOT_BYTES * root + STEM_STAGE_BYTES * max(stages, default=0)
                + 4 * sum(inputs))
    return STEM_ROOT_BYTES * root + STEM_STAGE_BYTES * sum(stages)


def training_bytes_per_image(config: ModelConfig, precision: str = "fp32",
                             remat: bool = False) -> int:
    """The memory one more image in the micro-batch costs during a training step.

    Every encoder block's activations kept for the backward pass (with `remat`: only each
    block's input, plus one block recomputed at a time), one block's backward transients,
    the ResNet stem's feature maps and the input pixels; raised by ESTIMATE_MARGIN.
    """
    family = _family(precision)
    sizes = _block_sizes(config)
    block = _dot(BLOCK_BYTES[family], sizes)
    if remat:
        kept = sizes[0] * (4 if family == "fp32" else 2)  # the block's input, the residual
        blocks = config.depth * kept + block
    else:
        blocks = config.depth * block
    backward = _dot(BACKWARD_BYTES[family], sizes)
    pixels = PIXEL_BYTES * math.prod(config.image_shape) * 3
    total = blocks + backward + pixels + _stem_bytes(config, remat)
    return math.ceil(ESTIMATE_MARGIN * total)


def parameter_count(config: ModelConfig) -> int:
    from vitcli.models.cost import parameter_count as count

    return count(config)


def fixed_training_bytes(config: ModelConfig, optimizer: str = "sgd",
                         momentum_dtype: str = "float32", accum: bool = True, *,
                         precision: str = "fp32", remat: bool = False, ema: bool = False,
                         device: str = "cpu") -> int:
    """Memory a training step needs whatever the micro-batch: float32 weights, gradient
    buffers (GRADIENT_COPIES, one more when micro-batches are accumulated), optimizer slots
    (SGD: one momentum; Adam: two moments, the first in `momentum_dtype`), an EMA copy,
    16-bit weight copies under bf16/fp16, and the framework and traced graph on `device`."""
    if optimizer not in ("sgd", "adam", "adamw"):
        raise VitcliError(f"unknown optimizer '{optimizer}'", hint="use sgd or adamw")
    if device not in FRAMEWORK_BYTES:
        raise VitcliError(f"unknown device '{device}'", hint="use cpu, gpu or tpu")
    first_moment = 2 if momentum_dtype == "bfloat16" else 4
    slots = first_moment + (4 if optimizer in ("adam", "adamw") else 0)
    per_parameter = (4 + 4 * (GRADIENT_COPIES + accum) + slots + 4 * ema
                     + COMPUTE_COPY_BYTES * (_family(precision) == "16")
                     + REMAT_BYTES_PER_PARAMETER * remat)
    graph = (config.depth * (GRAPH_BYTES_PER_BLOCK[device]
                             + REMAT_GRAPH_BYTES_PER_BLOCK[device] * remat)
             + _stem_units(config) * GRAPH_BYTES_PER_STEM_UNIT[device])
    return math.ceil(parameter_count(config) * per_parameter + FRAMEWORK_BYTES[device] + graph)


def _stem_units(config: ModelConfig) -> int:
    return sum(config.resnet.layers) if config.resnet is not None else 0


def accumulation_costs(config: ModelConfig, device: str = "cpu") -> tuple[int, float]:
    """(bytes per extra micro-batch, activation overlap factor) of accumulating micro-batches
    in vitcli.train.step's loop: nothing per micro-batch beyond `stacked_input_bytes`."""
    if device not in FRAMEWORK_BYTES:
        raise VitcliError(f"unknown device '{device}'", hint="use cpu, gpu or tpu")
    return 0, ACCUM_OVERLAP


def stacked_input_bytes(config: ModelConfig, per_replica_batch: int) -> int:
    """The float32 pixels of a replica's whole batch, stacked for the accumulation loop."""
    return per_replica_batch * math.prod(config.image_shape) * 3 * 4


# --- The budget. ----------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?)b?|b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes of a size such as "3GiB", "512MiB", "2G", "1.5GB" or "1000000".

    Units with an i are binary (GiB = 2^30), without one decimal (G = GB = 10^9): "2G" is
    read as the smaller number, because an over-estimated budget kills a CPU run.
    """
    match = _SIZE.match(str(text))
    if not match:
        raise VitcliError(f"{BUDGET_ENV}={text!r} is not a memory size",
                          hint="give bytes or a size such as 512MiB, 3GiB or 2G")
    number, unit, binary = match.groups()
    power = " kmgt".index(unit.lower()) if unit else 0
    size = int(float(number) * (1024 if binary else 1000) ** power)
    if size <= 0:
        raise VitcliError(f"{BUDGET_ENV}={text!r} must be more than zero bytes")
    return size


def budget_override() -> int | None:
    """The budget set by VITCLI_MEMORY_BUDGET, or None when it is unset or empty."""
    value = os.environ.get(BUDGET_ENV, "").strip()
    return parse_size(value) if value else None


def available_bytes(device: str) -> int:
    """Memory a training process may occupy on `device` ("cpu", "gpu" or "tpu"), per replica.

    VITCLI_MEMORY_BUDGET wins everywhere. CPU: what the kernel could still give (MemAvailable,
    capped by a cgroup limit) plus what this process already holds, since the estimate
    counts the whole process. GPU: the device's total memory (TensorFlow's allocator takes
    it all); TPU: TPU_CORE_BYTES.
    """
    override = budget_override()
    if override is not None:
        return override
    if device == "cpu":
        return cpu_available_bytes()
    if device == "gpu":
        return gpu_total_bytes()
    if device == "tpu":
        return TPU_CORE_BYTES
    raise VitcliError(f"unknown device '{device}'", hint="use cpu, gpu or tpu")


def _read_fields(path: str | Path, unit: int = 1) -> dict[str, int]:
    """`name value` (or `name: value kB`) lines of a /proc or cgroup file, as integers."""
    fields = {}
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            parts = line.replace(":", " ").split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0]] = int(parts[1]) * unit
    return fields


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _cgroup_dirs() -> list[Path]:
    """This process's memory cgroup directories (v2 and v1), own group and mount root."""
    root = Path("/sys/fs/cgroup")
    dirs = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                dirs.append(root / path.lstrip("/"))
            elif "memory" in controllers.split(","):
                dirs.append(root / "memory" / path.lstrip("/"))
    return [*dirs, root, root / "memory"]


def cgroup_headroom() -> int | None:
    """Bytes this cgroup may still allocate (limit - usage + reclaimable page cache), or None
    without a memory limit. cgroup v2: memory.max / memory.current; v1: memory.limit_in_bytes
    / memory.usage_in_bytes."""
    headrooms = []
    for directory in _cgroup_dirs():
        for limit_name, usage_name, cache_name in (
                ("memory.max", "memory.current", "inactive_file"),
                ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")):
            limit = _read_int(directory / limit_name)
            usage = _read_int(directory / usage_name)
            if limit is None or usage is None or limit >= _NO_LIMIT:
                continue
            cache = _read_fields(directory / "memory.stat").get(cache_name, 0)
            headrooms.append(max(limit - usage + cache, 0))
    return min(headrooms) if headrooms else None


def cpu_available_bytes() -> int:
    """MemAvailable (capped by the cgroup's headroom) plus this process's own anonymous RSS."""
    meminfo = _read_fields("/proc/meminfo", KIB)
    if "MemAvailable" not in meminfo:
        raise VitcliError("cannot read MemAvailable from /proc/meminfo",
                          hint=f"set {BUDGET_ENV}, e.g. {BUDGET_ENV}=8GiB")
    free = meminfo["MemAvailable"]
    headroom = cgroup_headroom()
    if headroom is not None:
        free = min(free, headroom)
    return free + _read_fields("/proc/self/status", KIB).get("RssAnon", 0)


def gpu_total_bytes() -> int:
    """The smallest visible GPU's memory: TensorFlow's configured limit if one is set, else
    nvidia-smi's total, else GPU_FALLBACK_BYTES."""
    limit = _tf_gpu_memory_limit()
    if limit is not None:
        return limit
    totals = _nvidia_smi_totals()
    return min(totals) if totals else GPU_FALLBACK_BYTES


def _tf_gpu_memory_limit() -> int | None:
    """A `memory_limit` set with tf.config.set_logical_device_configuration, in bytes."""
    import tensorflow as tf  # only here: the CPU paths must not wait for TensorFlow

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    logical = tf.config.get_logical_device_configuration(gpus[0]) or []
    limits = [config.memory_limit for config in logical if config.memory_limit]
    return min(limits) * MIB if limits else None


def _nvidia_smi_totals() -> list[int]:
    """Total memory of each GPU nvidia-smi lists (of CUDA_VISIBLE_DEVICES when set)."""
    command = ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=20,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    wanted = set(visible.split(",")) if visible else None
    totals = []
    for line in output.splitlines():
        index, _, total = (part.strip() for part in line.partition(","))
        if total.isdigit() and (wanted is None or index in wanted):
            totals.append(int(total) * MIB)
    return totals


# --- The plan. ------------------------------------------------------------------------------
def _gib(size: float) -> str:
    return f"{size / GIB:.2f} GiB"


def plan_peak_bytes(micro_batch: int, accum_steps: int, per_image: int, fixed: int, *,
                    per_micro_batch: int = 0, accum_overlap: float = 1.0) -> int:
    """The estimated peak of a plan: fixed + micro_batch * per_image, plus, when micro-batches
    are accumulated, what the step costs per extra micro-batch and the overlap factor of
    their activations (see `accumulation_costs`)."""
    if accum_steps == 1:
        return fixed + micro_batch * per_image
    return math.ceil(fixed + (accum_steps - 1) * per_micro_batch
                     + accum_overlap * micro_batch * per_image)


def plan_micro_batch(global_batch: int, replicas: int, per_image: int, fixed: int,
                     budget: int, safety: float = DEFAULT_SAFETY, *, per_micro_batch: int = 0,
                     accum_overlap: float = 1.0) -> tuple[int, int]:
    """(micro_batch, accum_steps): the largest divisor of global_batch / replicas whose
    estimated peak (`plan_peak_bytes`) fits safety * budget, and the number of micro-batches
    that make up the global batch. A refusal names the numbers and what to change."""
    per_replica, remainder = divmod(global_batch, replicas)
    if remainder or per_replica < 1:
        raise VitcliError(f"global batch {global_batch} is not divisible by {replicas} "
                          f"replicas", hint=f"use a multiple of {replicas}")
    for micro_batch in sorted(_divisors(per_replica), reverse=True):
        accum_steps = per_replica // micro_batch
        peak = plan_peak_bytes(micro_batch, accum_steps, per_image, fixed,
                               per_micro_batch=per_micro_batch, accum_overlap=accum_overlap)
        if peak <= safety * budget:
            return micro_batch, accum_steps
    accumulating = (per_replica > 1 and (per_micro_batch or accum_overlap > 1)
                    and fixed + per_image <= safety * budget)
    extra = (f" + {_gib(per_micro_batch)} per accumulated micro-batch"
             if per_micro_batch and per_replica > 1 else "")
    raise VitcliError(
        f"no micro-batch of the batch of {global_batch} fits in memory: estimated "
        f"{_gib(fixed)} fixed + {_gib(per_image)} per image{extra}, against "
        f"{safety:.0%} of {_gib(budget)} available",
        hint=("use a smaller --batch (accumulating micro-batches costs memory too), "
              if accumulating else "use ")
        + f"a smaller --res, --remat, --precision bf16 or a smaller --model; if the "
        f"estimate is too pessimistic, set {BUDGET_ENV} (e.g. {BUDGET_ENV}=16GiB)")


def _divisors(number: int) -> list[int]:
    return [size for size in range(1, number + 1) if number % size == 0]


# --- Rematerialisation. ---------------------------------------------------------------------
def remat_scope(enabled: bool):
    """A context manager: encoder blocks and ResNet stages constructed inside it recompute
    their activations in the backward pass instead of keeping them (a nullcontext when not
    `enabled`). Wrap the model's construction (or loading) in it.

    Keras' own `keras.RematScope` cannot be used: on the TensorFlow backend it wraps each
    layer's call in tf.recompute_grad (tf.custom_gradient), which inside a tf.function
    refuses keyword arguments, and Keras passes `training=` to every block ("The
    custom_gradient decorator currently supports keywords arguments only when eager
    execution is enabled"). Here the keyword arguments are bound first and only the tensors
    go through tf.recompute_grad; see `checkpoint_layer`. While open, the scope hooks the
    two classes' constructors (restored on exit; not for use from several threads).
    """
    if not enabled:
        return contextlib.nullcontext()
    return _checkpointing_constructors()


@contextlib.contextmanager
def _checkpointing_constructors():
    classes = _checkpointed_classes()
    originals = {cls: cls.__init__ for cls in classes}
    for cls, original in originals.items():
        cls.__init__ = _checkpointing_init(cls, original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.__init__ = original


def _checkpointed_classes() -> tuple[type, ...]:
    from vitcli.models.layers import EncoderBlock
    from vitcli.models.resnet import ResNetStage

    return EncoderBlock, ResNetStage


def _checkpointing_init(cls, original):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if type(self) is cls:  # a subclass's own constructor decides for itself
            checkpoint_layer(self)

    # Keras reads the constructor's arguments with inspect.getfullargspec, which ignores
    # __wrapped__ but honours __signature__.
    __init__.__signature__ = inspect.signature(original)
    __init__.__name__, __init__.__qualname__ = original.__name__, original.__qualname__
    return __init__


def rematerialize(model):
    """Turns on rematerialisation in an already built model's encoder blocks and ResNet
    stages (for models not built inside `remat_scope`); returns the model."""
    classes = _checkpointed_classes()
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, classes):
            checkpoint_layer(layer)
    return model


def checkpoint_layer(layer) -> None:
    """Makes `layer`'s calls keep only their input for the backward pass (tf.recompute_grad).

    The dropout masks must be the same when the backward pass recomputes the layer, but
    Keras' Dropout draws each mask from a seed variable that every call advances: the
    wrapper reads the seeds before the call and resets them to those values in the
    recomputation. Calls asking for attention weights (inspection) run unchanged.
    """
    if getattr(layer, "_vitcli_checkpointed", False):
        return
    original = layer.call
    # Keras passes `training` only to calls that declare it (ResNet stages do not).
    takes_training = "training" in inspect.signature(original).parameters

    def call(inputs, training=None, **kwargs):
        if takes_training:
            kwargs["training"] = training
        if kwargs.get("return_attention"):
            return original(inputs, **kwargs)
        import tensorflow as tf

        seeds = [variable for variable in layer.variables
                 if variable.name == "seed_generator_state"]
        # Captured, not passed: tf.recompute_grad watches its arguments, and integer ones
        # make it log a warning per block.
        states = [tf.identity(variable.value) for variable in seeds]

        def forward(tensor):
            for variable, state in zip(seeds, states, strict=True):
                variable.assign(state)
            return original(tensor, **kwargs)

        return tf.recompute_grad(forward)(inputs)

    layer.call = call
    layer._vitcli_checkpointed = True
