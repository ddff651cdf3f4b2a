"""Frozen dataclasses for every setting: the only place where defaults live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

CLASSIFIERS = ("token", "gap")
OBJECTIVES = ("classification", "mpp")
# Storage of the optimizer's momentum (SGD) or first moment (Adam): float32 is exact,
# bfloat16 is what the reference code keeps to save memory.
MOMENTUM_DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("sgd", "adamw", "adam")  # adam = adamw (decoupled decay, 0 unless given)
SCHEDULES = ("cosine", "linear")
LR_SCALINGS = ("linear", "sqrt", "none")
TRAIN_CROPS = ("auto", "inception", "resize", "center")


@dataclass(frozen=True)
class ResNetConfig:
    """The BiT ResNet stem of a hybrid: units per stage (empty = root block only)."""

    layers: tuple[int, ...] = ()
    width_factor: int = 1

    @property
    def stride(self) -> int:
        """Total down-sampling: root conv and max-pool (4), then 2 per stage after the first."""
        return 4 * 2 ** max(len(self.layers) - 1, 0)

    @property
    def out_channels(self) -> int:
        width = 64 * self.width_factor
        return width * 2 ** (len(self.layers) - 1) * 4 if self.layers else width


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a ViT's architecture (REFERENCE sections 1-3)."""

    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    image_size: int = 224
    num_classes: int = 1000
    classifier: str = "token"
    representation_size: int | None = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    resnet: ResNetConfig | None = None
    name: str = "vit"

    @property
    def stride(self) -> int:
        """Pixels per token side: patch size times the ResNet stem's down-sampling."""
        return self.patch_size * (self.resnet.stride if self.resnet else 1)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.stride

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.classifier == "token" else 0

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2 + self.num_prefix_tokens

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        values = dict(values)
        if values.get("resnet") is not None:
            resnet = dict(values["resnet"])
            resnet["layers"] = tuple(resnet.get("layers", ()))
            values["resnet"] = ResNetConfig(**resnet)
        return cls(**values)


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared (REFERENCE section 6)."""

    source: str = ""  # an image folder, or "tfds:NAME"
    data_dir: str | None = None  # tensorflow-datasets data directory
    train_split: str = "train"
    # Image folders without a val/ folder hold out this stratified fraction of train;
    # for tfds it is a split string such as "train[98%:]".
    val_split: str = "0.1"
    test_split: str = "test"
    download: bool = False  # allow tensorflow-datasets to download and prepare
    strict: bool = False  # unreadable images are an error instead of a warning
    # auto: inception (crop + flip, the reference's) for images at least as large as the
    # training resolution, resize for smaller ones (vitcli.train.defaults) | inception |
    # resize | center
    train_crop: str = "auto"
    eval_crop: str = "resize"  # resize (the reference's) | center (resize-small + crop)
    randaugment: bool = False
    mixup: float = 0.0  # Beta(alpha, alpha) mixing; 0 turns it off
    cache: bool = False
    shuffle_buffer: int = 10_000


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe. Defaults are the reference's fine-tuning ones.

    Settings left at None are derived for the run when it starts (vitcli.train.defaults):
    the length from the training set's size, the learning rate from `base_learning_rate`
    scaled from `reference_batch` to the run's batch, the warm-up from `default_warmup`
    capped at a tenth of the run. The run's config.yaml records the derived values.
    """

    steps: int | None = None  # total optimizer steps; None: from epochs or the data size
    epochs: float | None = None
    batch_size: int = 512  # the global batch
    # Micro-batches per step (batch_size / accum_steps each); "auto": the fewest that fit
    # the device's memory (vitcli.train.memory), decided when the run starts.
    accum_steps: int | str = "auto"
    optimizer: str = "sgd"  # sgd | adamw
    learning_rate: float | None = None  # None: base_learning_rate scaled to batch_size
    base_learning_rate: float = 0.003  # the recipe's rate at reference_batch
    reference_batch: int = 512
    lr_scaling: str = "linear"  # linear | sqrt | none: how the base rate follows the batch
    momentum: float = 0.9
    momentum_dtype: str = "float32"  # float32 | bfloat16 (the reference's memory saving)
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8  # Adam's, added to sqrt(v_hat) as optax does
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | linear (decay to zero after warm-up)
    warmup_steps: int | None = None  # None: default_warmup, at most a tenth of the run
    default_warmup: int = 100
    grad_clip_norm: float | None = 1.0
    label_smoothing: float = 0.0
    ema_decay: float | None = None  # Polyak averaging, e.g. 0.9999
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int = 100


# The paper's pre-training recipe (Adam, beta2 0.999, decoupled weight decay 0.1,
# linear warm-up then linear decay, tanh pre-logits head), rate 1e-3 at batch 4,096; Adam's
# rate follows the batch by its square root (as timm scales Adam-type optimizers).
PRETRAIN_DEFAULTS = TrainConfig(
    optimizer="adamw", base_learning_rate=1e-3, reference_batch=4096, lr_scaling="sqrt",
    weight_decay=0.1, schedule="linear", default_warmup=10_000, batch_size=4096,
    grad_clip_norm=1.0,
)
# The paper's masked patch prediction recipe (appendix B.1.2): Adam, base lr 2e-4, 10k
# warm-up, cosine decay; batch and weight decay as in its supervised pre-training.
MPP_PRETRAIN_DEFAULTS = dataclasses.replace(PRETRAIN_DEFAULTS, base_learning_rate=2e-4,
                                            schedule="cosine")
FINETUNE_DEFAULTS = TrainConfig()


@dataclass(frozen=True)
class MaskedPatchConfig:
    """Self-supervised masked patch prediction (REFERENCE section 6, the paper's section 4.6)."""

    corrupt_fraction: float = 0.5  # of each image's patches (rounded, at least one)
    mask_fraction: float = 0.8  # of the corrupted: replaced by the learned [mask] embedding
    random_fraction: float = 0.1  # ... by another patch of the same image; the rest kept as is
    colour_bits: int = 3  # per channel: the target is one of 2**(3 * bits) = 512 mean colours


@dataclass(frozen=True)
class RunConfig:
    """A whole training run; written resolved to `config.yaml`, enough to rerun it."""

    command: str = "finetune"  # finetune | pretrain
    objective: str = "classification"  # classification | mpp (masked patches; pretrain only)
    model: str | None = None  # registry variant; with --weights, read from the file
    weights: str | None = None  # .npz, named checkpoint, .keras or run directory
    # Fine-tuning without --weights starts from the variant's recommended published
    # checkpoint; from_scratch asks for random initialisation instead (never silently).
    from_scratch: bool = False
    remat: bool = False  # recompute activations in the backward pass: less memory, more time
    image_size: int | None = None  # None: the checkpoint's resolution, else 224
    dropout: float | None = None  # None: 0 for fine-tuning, the variant's for pre-training
    representation_size: int | None = None  # pre-training: None = the hidden size
    classifier: str | None = None  # token | gap; None = the variant's (token)
    out: str | None = None  # run directory; None = runs/<data name>
    resume: bool = False
    strategy: str = "auto"  # auto | default | mirrored | multi-worker | tpu
    tpu: str | None = None  # TPU address ("local" on a TPU VM)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    jit: bool = False  # XLA-compile the training step
    data: DataConfig = DataConfig()
    train: TrainConfig = FINETUNE_DEFAULTS
    mpp: MaskedPatchConfig = MaskedPatchConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _checked_fields(cls, values: dict, where: str) -> dict:
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        from vitcli.errors import VitcliError

        raise VitcliError(f"unknown setting{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} in {where}",
                          hint=f"known: {', '.join(sorted(known))}")
    return values


# The nested sections of a RunConfig (a recipe's `data:`, `train:` and `mpp:` mappings).
SECTIONS = {"data": DataConfig, "train": TrainConfig, "mpp": MaskedPatchConfig}


def merge_run_config(base: RunConfig, values: dict, where: str = "config") -> RunConfig:
    """`base` with the (nested) settings of `values` applied; unknown keys are an error."""
    values = dict(_checked_fields(RunConfig, values, where))
    sections = {
        name: dataclasses.replace(getattr(base, name), **_checked_fields(
            cls, values.pop(name, None) or {}, f"{where} ({name})"))
        for name, cls in SECTIONS.items()
    }
    return dataclasses.replace(base, **sections, **values)


def read_recipe(path: str) -> dict:
    """A YAML recipe file as a nested dict (top level, `data:` and `train:` sections)."""
    from pathlib import Path

    import yaml

    from vitcli.errors import VitcliError

    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise VitcliError(f"cannot read recipe '{path}': {error.strerror}") from error
    except yaml.YAMLError as error:
        message = f"recipe '{path}' is not valid YAML: {error}".replace("\n", " ")
        raise VitcliError(message) from error
    if not isinstance(values, dict):
        raise VitcliError(f"recipe '{path}' must be a mapping of settings")
    return values


def train_defaults(command: str, objective: str) -> TrainConfig:
    """The recipe a command starts from: fine-tuning, supervised or masked-patch pre-training."""
    if command != "pretrain":
        return FINETUNE_DEFAULTS
    return MPP_PRETRAIN_DEFAULTS if objective == "mpp" else PRETRAIN_DEFAULTS


def _in_range(name: str, value, low, high, *, low_open=False, high_open=False) -> None:
    from vitcli.errors import VitcliError

    below = value <= low if low_open else value < low
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        interval = f"{left}{low}, {'inf' if high is None else high}{right}"
        raise VitcliError(f"{name} must be in {interval}, got {value}")


def _one_of(name: str, value, choices) -> None:
    from vitcli.errors import VitcliError

    if value not in choices:
        raise VitcliError(f"unknown {name} '{value}'", hint=f"use {', '.join(choices)}")


def check_train_config(train: TrainConfig) -> None:
    """Every optimisation setting's choices and range, checked before any work."""
    _one_of("optimizer", train.optimizer, OPTIMIZERS)
    _one_of("schedule", train.schedule, SCHEDULES)
    _one_of("momentum dtype", train.momentum_dtype, MOMENTUM_DTYPES)
    _one_of("learning-rate scaling", train.lr_scaling, LR_SCALINGS)
    if train.learning_rate is not None:
        _in_range("learning rate", train.learning_rate, 0, None)
    _in_range("base learning rate", train.base_learning_rate, 0, None)
    _in_range("reference batch", train.reference_batch, 1, None)
    _in_range("batch size", train.batch_size, 1, None)
    if train.steps is not None:
        _in_range("steps", train.steps, 1, None)
    if train.epochs is not None:
        _in_range("epochs", train.epochs, 0, None, low_open=True)
    _in_range("momentum", train.momentum, 0, 1, high_open=True)
    _in_range("beta1", train.beta1, 0, 1, high_open=True)
    _in_range("beta2", train.beta2, 0, 1, high_open=True)
    _in_range("epsilon", train.epsilon, 0, None, low_open=True)
    _in_range("weight decay", train.weight_decay, 0, None)
    if train.warmup_steps is not None:
        _in_range("warm-up steps", train.warmup_steps, 0, None)
    _in_range("default warm-up steps", train.default_warmup, 0, None)
    if train.accum_steps != "auto":
        if not isinstance(train.accum_steps, int):
            from vitcli.errors import VitcliError

            raise VitcliError(f"accumulation steps must be 'auto' or a whole number, "
                              f"got {train.accum_steps!r}")
        _in_range("accumulation steps", train.accum_steps, 1, None)
    _in_range("label smoothing", train.label_smoothing, 0, 1, high_open=True)
    if train.grad_clip_norm is not None:
        _in_range("gradient clipping norm", train.grad_clip_norm, 0, None)


def check_objective(config: RunConfig) -> None:
    """Refuses an unknown objective, and masked patch prediction outside pre-training."""
    from vitcli.errors import VitcliError

    if config.objective not in OBJECTIVES:
        raise VitcliError(f"unknown objective '{config.objective}'",
                          hint=f"use {' or '.join(OBJECTIVES)}")
    if config.objective == "mpp" and config.command != "pretrain":
        raise VitcliError("--objective mpp is a pre-training objective",
                          hint="use `vitcli pretrain --objective mpp`, then "
                          "`vitcli finetune --weights RUN_DIR`")


def resolve_run_config(command: str, recipe: str | None, flags: dict) -> RunConfig:
    """Defaults -> recipe file -> explicit flags (None means 'not given')."""
    recipe_values = read_recipe(recipe) if recipe else {}
    # The objective picks the defaults, so it is read before anything is layered on them.
    objective = flags.get("objective") or recipe_values.get("objective") or RunConfig.objective
    base = RunConfig(command=command, train=train_defaults(command, objective))
    if recipe:
        base = merge_run_config(base, recipe_values, where=recipe)

    def given(section: dict) -> dict:
        return {key: value for key, value in section.items() if value is not None}

    values = given({key: value for key, value in flags.items() if key not in SECTIONS})
    for name in SECTIONS:
        values[name] = given(flags.get(name, {}))
    config = merge_run_config(base, values, where="command-line flags")
    check_objective(config)
    check_train_config(config.train)
    _one_of("training crop", config.data.train_crop, TRAIN_CROPS)
    return config
