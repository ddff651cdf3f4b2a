"""Frozen dataclasses for every setting: the only place where defaults live, and where each
setting's constraint (type, range or choices, and its flag) is declared, next to its default.

Every value a recipe or a flag gives is checked against that declaration before any work
starts (`resolve_run_config`), so the command line and recipe files cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass

from vitcli.errors import VitcliError

CLASSIFIERS = ("token", "gap")
# learned: the paper's 1-D table; sincos2d: big_vision's fixed 2-D sine-cosine table;
# none: no position information (paper appendix D.4; docs/reference.md §1.6)
POSEMBS = ("learned", "sincos2d", "none")
# What --freeze keeps fixed: nothing, the embeddings (and a hybrid's stem), the embeddings and
# the first N encoder blocks, or everything but the head (docs/reference.md, "Training").
FREEZES = ("none", "embeddings", "blocks:N", "backbone")
FREEZE_BLOCKS = r"blocks:\d+"  # what blocks:N stands for
COMMANDS = ("finetune", "pretrain")
OBJECTIVES = ("classification", "mpp")
# Storage of the optimizer's momentum (SGD) or first moment (Adam): float32 is exact,
# bfloat16 is what the reference code keeps to save memory.
MOMENTUM_DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("sgd", "adamw", "adam")  # adam = adamw (decoupled decay, 0 unless given)
SCHEDULES = ("cosine", "linear")
LR_SCALINGS = ("linear", "sqrt", "none")
# How logits become class scores: softmax (one label per image, softmax cross-entropy) or
# sigmoid (multi-label: an independent sigmoid per class, sigmoid cross-entropy).
LOSSES = ("softmax", "sigmoid")
TRAIN_CROPS = ("auto", "inception", "resize", "center")
EVAL_CROPS = ("resize", "center")
SPLIT_NAMES = ("train", "val", "test")  # a data source's splits, as commands name them
STRATEGIES = ("auto", "default", "mirrored", "multi-worker", "tpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# The largest image side vitcli accepts: a ViT-B/16 at 2048 px already has 16,385 tokens
# (attention memory grows with their square); larger sizes only exhaust memory.
MAX_IMAGE_SIZE = 2048
MAX_COUNT = 2**31 - 1  # steps, batches, intervals: TensorFlow counts in int32 in places
MAX_SEED = 2**32 - 1  # numpy's seed range
FLAGS = "command-line flags"  # the origin of values typed on the command line


@dataclass(frozen=True)
class Rule:
    """What one setting accepts. `kind` is its type (int, float, str or bool); numbers may be
    bounded (`low`/`high`, open or closed), text may be limited to `choices`.

    YAML and flags give ints, floats, strings and booleans: an int is accepted where a float
    is expected (and a whole float where an int is), never a string where a number is, nor a
    number or string where a boolean is. `numbers_as_text` lets a number stand for text
    (a held-out fraction written `val_split: 0.1`).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    pattern: str = ""  # text also accepted when it matches this regular expression (blocks:N)
    optional: bool = False  # None allowed: "not given", derived when the run starts
    words: tuple[str, ...] = ()  # words accepted instead of a number ("auto")
    numbers_as_text: bool = False
    flag: str | None = ""  # the command-line flag; "" = --<name with dashes>, None = none
    what: str = ""  # the setting in words, for messages
    # A whole number or a (height, width) pair of them, each side in range: written HxW
    # ("384x512") on the command line, [384, 512] or "384x512" in YAML. Equal sides are the
    # plain number, so a square size is stored as it always was.
    pair: bool = False

    def coerce(self, value):
        """`value` in the setting's type; raises ValueError with the requirement if it is
        not one."""
        if value is None and self.optional or value in self.words:
            return value
        if self.pair:
            return self._pair(value)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(self.requirement())
            return value
        if self.kind is str:
            return self._text(value)
        return self._number(value)

    def _text(self, value) -> str:
        if self.numbers_as_text and _is_number(value):
            value = f"{value:g}"
        if not isinstance(value, str):
            raise ValueError(self.requirement())
        if self.choices and value not in self.choices and not (
                self.pattern and re.fullmatch(self.pattern, value)):
            raise UnknownChoice(self.requirement())
        return value

    def _pair(self, value):
        """A number, or a pair 'HxW' / [H, W] of them (equal sides: the number)."""
        if isinstance(value, str) and (match := _PAIR.fullmatch(value.strip())):
            value = [int(side) for side in match.groups() if side is not None]
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if isinstance(value, (list, tuple)) and len(value) == 2:
            height, width = (self._number(side) for side in value)
            return height if height == width else (height, width)
        if isinstance(value, (list, tuple, str)):
            raise ValueError(self.requirement())
        return self._number(value)

    def _number(self, value):
        if not _is_number(value):
            raise ValueError(self.requirement())
        if self.kind is int:
            whole = isinstance(value, numbers.Integral) or math.isfinite(value) and \
                float(value).is_integer()
            if not whole:
                raise ValueError(self.requirement())
            value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError:  # an int too large for a float
                raise ValueError(self.requirement()) from None
            if not math.isfinite(value):
                raise ValueError(self.requirement())
        if not self._in_range(value):
            raise ValueError(self._range(value))
        return value

    def _in_range(self, value) -> bool:
        return self._above_low(value) and self._below_high(value)

    def _above_low(self, value) -> bool:
        return self.low is None or (value > self.low if self.open_low else value >= self.low)

    def _below_high(self, value) -> bool:
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def _range(self, value=None) -> str:
        """The range in words: an interval for fractions, else the bound that `value` misses
        (the lower one when there is no value)."""
        low, high = _shown(self.low), _shown(self.high)
        if self.low is not None and self.high is not None and self.high <= 1:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"in {left}{low}, {high}{right}"
        if self.low is not None and (value is None or not self._above_low(value)):
            return f"greater than {low}" if self.open_low else f"at least {low}"
        return f"less than {high}" if self.open_high else f"at most {high}"

    def requirement(self) -> str:
        """What a valid value is, in words: 'a whole number at least 1', 'one of a, b'."""
        if self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = f"one of {', '.join(self.choices)}" if self.choices else "text"
        else:
            text = "a whole number" if self.kind is int else "a finite number"
            if self.low is not None or self.high is not None:
                text += f" {self._range()}"
            if self.pair:
                text += ", or two as HEIGHTxWIDTH"
        return " or ".join([*self.words, text])


_PAIR = re.compile(r"(-?\d+)(?:\s*[xX]\s*(-?\d+))?")  # "384", "384x512"


def image_shape(size) -> tuple[int, int]:
    """(height, width) of an image size: a number (square) or a (height, width) pair."""
    if isinstance(size, (list, tuple)):
        height, width = size
        return int(height), int(width)
    return int(size), int(size)


def size_text(size) -> str:
    """An image size as flags and messages write it: 384, or 384x512 (height x width)."""
    height, width = image_shape(size)
    return str(height) if height == width else f"{height}x{width}"


def canonical_size(size):
    """A size as configs store it: the number when square, else the (height, width) tuple."""
    height, width = image_shape(size)
    return height if height == width else (height, width)


class UnknownChoice(ValueError):
    """A word that is not among a setting's choices (reported as 'unknown WHAT')."""


def _is_number(value) -> bool:
    """An int or float, numpy's included; never a bool (YAML's yes/no)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _shown(number) -> str:
    if number is None:
        return ""
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def setting(default, kind: type, **rule):
    """A dataclass field with its default and its `Rule` (see Rule for the keywords)."""
    return dataclasses.field(default=default, metadata={"rule": Rule(kind, **rule)})


def _count(default, what: str, *, low: int = 1, optional: bool = False, flag: str | None = ""):
    """A whole-number setting: steps, a batch, an interval (at most MAX_COUNT)."""
    return setting(default, int, low=low, high=MAX_COUNT, optional=optional, flag=flag,
                   what=what)


def _fraction(default, what: str, *, flag: str | None = None, optional: bool = False):
    """A setting in [0, 1): momentum, a beta, label smoothing, dropout."""
    return setting(default, float, low=0, high=1, open_high=True, optional=optional,
                   flag=flag, what=what)


# What a model is: a ViT (plain, or a hybrid with a ResNet stem in front of its patch
# embedding), or a pure BiT ResNet classifier (the paper's baseline; no transformer).
KINDS = ("vit", "resnet")


@dataclass(frozen=True)
class ResNetConfig:
    """The BiT ResNet of a hybrid's stem or of a pure ResNet classifier: units per stage
    (empty = root block only) and the width factor (64 * w channels at the root)."""

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
    """Everything that fixes a model's architecture (docs/reference.md §1-§3).

    `kind` "resnet" is a pure BiT ResNet classifier (`resnet_classifier`): all of `resnet`'s
    stages, global average pooling and the head. It has no transformer, so its transformer
    fields are 0, its classifier "gap" and its position embeddings "none"; any image size
    works (SAME padding), so its stride is 1.
    """

    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    image_size: int | tuple[int, int] = 224  # square, or (height, width): see image_shape
    num_classes: int = 1000
    classifier: str = "token"
    posemb: str = "learned"  # learned | sincos2d | none (§1.6)
    representation_size: int | None = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth of the last block; 0 before it, linearly
    resnet: ResNetConfig | None = None
    name: str = "vit"
    kind: str = "vit"  # vit | resnet (KINDS)

    def __post_init__(self):
        # a YAML list or an equal pair is stored as canonical_size stores it (square: the int)
        if isinstance(self.image_size, (list, tuple)):
            object.__setattr__(self, "image_size", canonical_size(self.image_size))

    @property
    def is_resnet(self) -> bool:
        """A pure ResNet classifier: no patches, no tokens, no transformer."""
        return self.kind == "resnet"

    @property
    def stride(self) -> int:
        """Pixels per token side: patch size times the ResNet stem's down-sampling (1 for a
        pure ResNet, whose SAME-padded convolutions take any image size)."""
        if self.is_resnet:
            return 1
        return self.patch_size * (self.resnet.stride if self.resnet else 1)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) in pixels; equal for a square model."""
        return image_shape(self.image_size)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Patches (tokens) per column and per row: (height, width) // stride; a pure
        ResNet's last feature map (each side halved, rounded up, per stride-2 step)."""
        height, width = self.image_shape
        if self.is_resnet:
            return -(-height // self.resnet.stride), -(-width // self.resnet.stride)
        return height // self.stride, width // self.stride

    @property
    def grid_size(self) -> int:
        """Patches per side of a square grid (a non-square model's is its height's; code that
        may see one reads grid_shape)."""
        return self.grid_shape[0]

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.classifier == "token" else 0

    @property
    def num_tokens(self) -> int:
        """Tokens the encoder sees (none in a pure ResNet)."""
        if self.is_resnet:
            return 0
        grid_height, grid_width = self.grid_shape
        return grid_height * grid_width + self.num_prefix_tokens

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


def resnet_classifier(resnet: ResNetConfig, **fields) -> ModelConfig:
    """The config of a pure BiT ResNet classifier with `resnet`'s stages (`fields`: image
    size, classes, name): no transformer, global average pooling, no position embeddings."""
    return ModelConfig(kind="resnet", hidden_size=0, depth=0, num_heads=0, mlp_dim=0,
                       patch_size=0, classifier="gap", posemb="none", resnet=resnet, **fields)


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared (docs/reference.md §6.2)."""

    source: str = setting("", str, flag="--data", what="image folder or tfds:NAME")
    data_dir: str | None = setting(None, str, optional=True,
                                   what="tensorflow-datasets data directory")
    train_split: str = setting("train", str, what="tfds training split")
    # Image folders without a val/ folder hold out this stratified fraction of train;
    # for tfds it is a split string such as "train[98%:]" (or a fraction of train).
    val_split: str = setting("0.1", str, numbers_as_text=True, what="validation split")
    test_split: str = setting("test", str, what="tfds test split")
    download: bool = setting(False, bool, what="let tensorflow-datasets download")
    strict: bool = setting(False, bool, what="unreadable images are an error")
    # auto: inception (crop + flip, the reference's) for images at least as large as the
    # training resolution, resize for smaller ones (vitcli.train.defaults) | inception |
    # resize | center
    train_crop: str = setting("auto", str, choices=TRAIN_CROPS, what="training crop")
    # resize (the reference's) | center (resize-small + crop)
    eval_crop: str = setting("resize", str, choices=EVAL_CROPS, what="evaluation crop")
    randaugment: bool = setting(False, bool, what="RandAugment")
    # Beta(alpha, alpha) mixing; 0 turns it off
    mixup: float = setting(0.0, float, low=0, what="mixup alpha")
    # Beta(alpha, alpha) box sizes (Yun et al. 2019); 0 turns it off. With --mixup too, each
    # example gets one of the two, with equal probability.
    cutmix: float = setting(0.0, float, low=0, what="cutmix alpha")
    # probability that an example gets a box of noise (Keras' RandomErasing); 0 turns it off
    random_erasing: float = setting(0.0, float, low=0, high=1, what="random erasing probability")
    cache: bool = setting(False, bool, flag=None, what="cache decoded images")
    shuffle_buffer: int = setting(10_000, int, low=1, high=MAX_COUNT, flag=None,
                                  what="shuffle buffer")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe. Defaults are the reference's fine-tuning ones.

    Settings left at None are derived for the run when it starts (vitcli.train.defaults):
    the length from the training set's size, the learning rate from `base_learning_rate`
    scaled from `reference_batch` to the run's batch, the warm-up from `default_warmup`
    capped at a tenth of the run. The run's config.yaml records the derived values.
    """

    # total optimizer steps; None: from epochs or the data size
    steps: int | None = _count(None, "optimizer steps", optional=True)
    epochs: float | None = setting(None, float, low=0, open_low=True, high=1e6, optional=True,
                                   what="passes over the training set")
    batch_size: int = _count(512, "global batch", flag="--batch")
    # Micro-batches per step (batch_size / accum_steps each); "auto": the fewest that fit
    # the device's memory (vitcli.train.memory), decided when the run starts.
    accum_steps: int | str = setting("auto", int, low=1, high=MAX_COUNT, words=("auto",),
                                     flag="--accum", what="micro-batches per step")
    optimizer: str = setting("sgd", str, choices=OPTIMIZERS, what="optimizer")
    # None: base_learning_rate scaled to batch_size
    learning_rate: float | None = setting(None, float, low=0, optional=True, flag="--lr",
                                          what="learning rate")
    base_learning_rate: float = setting(0.003, float, low=0, flag=None,
                                        what="the recipe's learning rate")  # at reference_batch
    reference_batch: int = _count(512, "the recipe's batch", flag=None)
    # linear | sqrt | none: how the base rate follows the batch
    lr_scaling: str = setting("linear", str, choices=LR_SCALINGS, flag=None,
                              what="learning-rate scaling")
    momentum: float = _fraction(0.9, "SGD momentum")
    # float32 | bfloat16 (the reference's memory saving)
    momentum_dtype: str = setting("float32", str, choices=MOMENTUM_DTYPES,
                                  what="momentum dtype")
    beta1: float = _fraction(0.9, "Adam's beta1")
    beta2: float = _fraction(0.999, "Adam's beta2")
    # Adam's, added to sqrt(v_hat) as optax does
    epsilon: float = setting(1e-8, float, low=0, open_low=True, flag=None, what="Adam's epsilon")
    weight_decay: float = setting(0.0, float, low=0, what="weight decay")
    schedule: str = setting("cosine", str, choices=SCHEDULES, flag=None,
                            what="learning-rate schedule")  # decay to zero after warm-up
    # None: default_warmup, at most a tenth of the run
    warmup_steps: int | None = _count(None, "warm-up steps", low=0, optional=True,
                                      flag="--warmup")
    default_warmup: int = _count(100, "the recipe's warm-up steps", low=0, flag=None)
    # global-norm clipping; None or 0: none
    grad_clip_norm: float | None = setting(1.0, float, low=0, optional=True, flag=None,
                                           what="gradient clipping norm")
    label_smoothing: float = _fraction(0.0, "label smoothing", flag="")
    # Layer-wise learning-rate decay F: encoder block i of L trains at rate x F^(L - i), the
    # embeddings (and a hybrid's stem) at rate x F^(L + 1), the final norm, pre-logits and
    # head at the rate itself; 1 turns it off ("Training" in docs/reference.md)
    layer_decay: float = setting(1.0, float, low=0, high=1, open_low=True,
                                 what="layer-wise learning-rate decay")
    # none | embeddings | blocks:N | backbone: kept as they are, without optimizer state
    freeze: str = setting("none", str, choices=FREEZES, pattern=FREEZE_BLOCKS,
                          what="frozen parameters")
    # softmax | sigmoid (the paper's pre-training loss); None: softmax for single-label
    # data, sigmoid for multi-label data (a CSV manifest, tfds Sequence(ClassLabel))
    loss: str | None = setting(None, str, choices=LOSSES, optional=True, what="loss")
    # Polyak averaging, e.g. 0.9999
    ema_decay: float | None = setting(None, float, low=0, high=1, open_low=True, open_high=True,
                                      optional=True, flag="--ema", what="EMA decay")
    seed: int = setting(0, int, low=0, high=MAX_SEED, what="random seed")
    log_every: int = _count(10, "steps between metric lines")
    eval_every: int = _count(100, "steps between validations")
    checkpoint_every: int = _count(100, "steps between checkpoints")


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
    """Self-supervised masked patch prediction (docs/reference.md §6.4, the paper's section 4.6)."""

    # of each image's patches (rounded, at least one)
    corrupt_fraction: float = setting(0.5, float, low=0, high=1, open_low=True, flag=None,
                                      what="corrupted fraction of patches")
    # of the corrupted: replaced by the learned [mask] embedding
    mask_fraction: float = setting(0.8, float, low=0, high=1, flag=None,
                                   what="masked fraction of corrupted patches")
    # ... by another patch of the same image; the rest kept as is
    random_fraction: float = setting(0.1, float, low=0, high=1, flag=None,
                                     what="swapped fraction of corrupted patches")
    # per channel: the target is one of 2**(3 * bits) = 512 mean colours; at most 4 bits
    # (4,096 classes): more would make the prediction head larger than the model
    colour_bits: int = setting(3, int, low=1, high=4, flag=None, what="colour bits per channel")


@dataclass(frozen=True)
class ScoringConfig:
    """How a trained model's logits become scores and labels (`vitcli evaluate`, `predict`,
    `export`): softmax probabilities, or for a multi-label model a sigmoid score per class and
    the classes whose score is at least the threshold."""

    # softmax | sigmoid; None: the run's train.loss (config.yaml), else softmax
    scores: str | None = setting(None, str, choices=LOSSES, optional=True, what="scores")
    threshold: float = setting(0.5, float, low=0, high=1, what="decision threshold")


TARGET_SHARD_BYTES = 128 * 2**20  # packed data's default shard size (TF advises 100 MB+)
MAX_SHARDS = 100_000


@dataclass(frozen=True)
class PackConfig:
    """How `vitcli data pack` writes (None: derived when it starts)."""

    # about this many shards in all; None: one per TARGET_SHARD_BYTES of images
    shards: int | None = setting(None, int, low=1, high=MAX_SHARDS, optional=True,
                                 what="number of shards")
    # writer threads; None: the CPU count
    workers: int | None = setting(None, int, low=1, high=1024, optional=True,
                                  what="writer threads")


@dataclass(frozen=True)
class RunConfig:
    """A whole training run; written resolved to `config.yaml`, enough to rerun it."""

    command: str = setting("finetune", str, choices=COMMANDS, flag=None, what="command")
    # classification | mpp (masked patches; pretrain only)
    objective: str = setting("classification", str, choices=OBJECTIVES, what="objective")
    # registry variant; with --weights, read from the file
    model: str | None = setting(None, str, optional=True, what="model variant")
    # .npz, named checkpoint, .keras or run directory
    weights: str | None = setting(None, str, optional=True, what="start weights")
    # Fine-tuning without --weights starts from the variant's recommended published
    # checkpoint; from_scratch asks for random initialisation instead (never silently).
    from_scratch: bool = setting(False, bool, what="random initial weights")
    # recompute activations in the backward pass: less memory, more time
    remat: bool = setting(False, bool, what="rematerialisation")
    # None: the checkpoint's resolution, else 224; each side a multiple of the model's
    # stride. A number (square) or height x width: --res 384x512, `image_size: [384, 512]`.
    image_size: int | tuple[int, int] | None = setting(
        None, int, low=1, high=MAX_IMAGE_SIZE, optional=True, pair=True, flag="--res",
        what="image size in pixels")
    # None: 0 for fine-tuning, the variant's for pre-training
    dropout: float | None = _fraction(None, "dropout rate", flag="", optional=True)
    # Stochastic depth (Huang et al. 2016): the residual branches of block i of L are dropped
    # per example with probability drop_path * i / (L - 1); 0 keeps the reference's model.
    drop_path: float = _fraction(0.0, "stochastic depth rate", flag="")
    # pre-training: None = the hidden size
    representation_size: int | None = _count(None, "pre-logits width", optional=True,
                                             flag=None)
    # token | gap; None = the variant's (token)
    classifier: str | None = setting(None, str, choices=CLASSIFIERS, optional=True,
                                     what="classifier")
    # learned | sincos2d | none; None = learned. Both are a new model's: a checkpoint has its own
    posemb: str | None = setting(None, str, choices=POSEMBS, optional=True,
                                 what="position embeddings")
    out: str | None = setting(None, str, optional=True, what="run directory")  # None: runs/<data>
    resume: bool = setting(False, bool, what="resume")
    # Write into an existing --out that is not this run: replaces only vitcli's own files.
    overwrite: bool = setting(False, bool, what="overwrite")
    strategy: str = setting("auto", str, choices=STRATEGIES, what="strategy")
    tpu: str | None = setting(None, str, optional=True, what="TPU address")  # "local" on a TPU VM
    precision: str = setting("auto", str, choices=PRECISIONS, what="precision")
    # XLA for the whole training step: True, False or "auto" (vitcli.train.precision.resolve_jit)
    jit: bool | str = setting("auto", bool, words=("auto",), what="XLA compilation")
    data: DataConfig = DataConfig()
    train: TrainConfig = FINETUNE_DEFAULTS
    mpp: MaskedPatchConfig = MaskedPatchConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The nested sections of a RunConfig (a recipe's `data:`, `train:` and `mpp:` mappings).
SECTIONS = {"data": DataConfig, "train": TrainConfig, "mpp": MaskedPatchConfig}
_SECTION_OF = {cls: name for name, cls in SECTIONS.items()}


def _described(value) -> str:
    """A value as a message shows it: text quoted, numbers as typed, containers by kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def flag_of(field: dataclasses.Field) -> str | None:
    """The command-line flag of a setting: its rule's, else --<name with dashes>; None when it
    has none (a recipe-only setting, or a section)."""
    rule = field.metadata.get("rule")
    if rule is None or rule.flag is None:
        return None
    return rule.flag or f"--{field.name.replace('_', '-')}"


def settings_from_options(options: dict) -> dict:
    """The settings of a run (RunConfig's, its sections' nested) from command-line options
    keyed by parameter name, each flag's name without its dashes (`--res` -> `res`,
    `--log-every` -> `log_every`), as typer names them; None means 'not given'. Every
    setting with a flag must be among `options`, so a new one cannot be left out silently."""
    def given(cls) -> dict:
        return {field.name: options[flag[2:].replace("-", "_")]
                for field in dataclasses.fields(cls) if (flag := flag_of(field))}

    settings = given(RunConfig)
    for name, cls in SECTIONS.items():
        if section := given(cls):
            settings[name] = section
    return settings


def _name(cls, field: dataclasses.Field, origin: str | None, *, described: bool = True) -> str:
    """How a message names a setting: its flag, or its key and the recipe it is from, and
    (`described`) what it is: '--steps (optimizer steps)', 'train.steps in r.yaml'."""
    rule = field.metadata["rule"]
    if origin == FLAGS and rule.flag is not None:
        name, source = flag_of(field), ""
    else:
        name = f"{_SECTION_OF[cls]}.{field.name}" if cls in _SECTION_OF else field.name
        source = f" in {origin}" if origin and origin != FLAGS else ""
    return name + (f" ({rule.what})" if described and rule.what else "") + source


def _checked(cls, field: dataclasses.Field, value, origin: str | None):
    """`value` for `field` of `cls`, coerced to its type; a one-line error naming the
    setting and where it came from when it is not one."""
    rule = field.metadata["rule"]
    if rule.pair and isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)  # a plain --res 0 is reported as the number it is
    try:
        return rule.coerce(value)
    except UnknownChoice:
        raise VitcliError(f"unknown {rule.what} {value!r} "
                          f"({_name(cls, field, origin, described=False)})",
                          hint=f"use {', '.join(rule.choices)}") from None
    except ValueError as requirement:
        raise VitcliError(f"{_name(cls, field, origin)} must be {requirement}, "
                          f"got {_described(value)}") from None


def _checked_values(cls, values: dict, origin: str) -> dict:
    """`values` (settings of `cls` by field name) checked and coerced; unknown keys are an
    error. Fields without a rule (RunConfig's sections) pass as they are."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in values if key not in fields)
    if unknown:
        section = f" ({_SECTION_OF[cls]})" if cls in _SECTION_OF else ""
        raise VitcliError(f"unknown setting{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} in {origin}{section}",
                          hint=f"known: {', '.join(sorted(fields))}")
    return {name: _checked(cls, fields[name], value, origin)
            if "rule" in fields[name].metadata else value for name, value in values.items()}


def check_settings(settings):
    """`settings` (any config dataclass) with every field checked against its rule, nested
    sections too; returns it with values coerced (an int where a float is expected)."""
    changes = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if "rule" in field.metadata:
            changes[field.name] = _checked(type(settings), field, value, None)
        elif dataclasses.is_dataclass(value):
            changes[field.name] = check_settings(value)
    return dataclasses.replace(settings, **changes)


def check_value(cls, name: str, value, origin: str | None = FLAGS):
    """One setting of `cls` (e.g. DataConfig's eval_crop given to `vitcli predict`), checked
    as training checks it; None (not given) is the default."""
    field = next(field for field in dataclasses.fields(cls) if field.name == name)
    return field.default if value is None else _checked(cls, field, value, origin)


def check_train_config(train: TrainConfig) -> None:
    """Every optimisation setting's type, choices and range, checked before any work."""
    check_settings(train)


def data_config(values: dict, origin: str = FLAGS) -> DataConfig:
    """A DataConfig from DataConfig fields (None = not given) such as evaluation's and
    inspection's flags, checked as training checks them."""
    given = {key: value for key, value in values.items() if value is not None}
    config = DataConfig(**_checked_values(DataConfig, given, origin))
    check_splits(config)
    return config


# ---------------------------------------------------------------------------------------------
# Settings that constrain each other
# ---------------------------------------------------------------------------------------------

_SPLIT_PART = re.compile(r"[\w-]+(\[(?P<selector>[^\[\]]*)\])?")
_SPLIT_BOUND = re.compile(r"-?[\d_.]+(%|shard)?")


def is_split_expression(text: str) -> bool:
    """Whether `text` is a tensorflow-datasets split string ('train', 'train[:98%]',
    'train[10:]+test', 'train[2shard]'); whether the split exists is tfds' to say."""
    for part in re.split(r"\s*\+\s*", text.strip()):
        match = _SPLIT_PART.fullmatch(part)
        if not match:
            return False
        if match["selector"] is None:
            continue
        bounds = match["selector"].split(":")
        if len(bounds) > 2 or not any(bounds) or len(bounds) == 1 and \
                not bounds[0].endswith("shard"):
            return False
        if not all(_SPLIT_BOUND.fullmatch(bound) for bound in bounds if bound):
            return False
    return True


def held_out_fraction(text: str) -> float | None:
    """`text` as a held-out fraction (a finite number), or None when it is not a number."""
    try:
        fraction = float(text.strip() or "0")
    except ValueError:
        return None
    return fraction if math.isfinite(fraction) else None


def check_splits(data: DataConfig) -> None:
    """An image folder holds out a fraction in [0, 1); tfds takes a fraction of a plain
    train split, or split strings."""
    fraction = held_out_fraction(data.val_split)
    if data.source.startswith("tfds:"):
        _check_tfds_splits(data)
    elif fraction is None or not 0 <= fraction < 1:
        raise VitcliError(f"--val-split '{data.val_split}' is not a fraction in [0, 1)",
                          hint="an image folder without a val/ folder holds out a fraction "
                          "such as 0.1; split strings such as train[98%:] are for tfds:NAME")


def _check_tfds_splits(data: DataConfig) -> None:
    if not data.source[len("tfds:"):].strip():
        raise VitcliError("--data tfds: needs a dataset name", hint="e.g. tfds:cifar10")
    fraction = held_out_fraction(data.val_split)
    if fraction is not None and not 0 <= fraction < 1:
        raise VitcliError(f"--val-split '{data.val_split}' is not a fraction in [0, 1)",
                          hint="or give a split string such as train[98%:]")
    splits = (("--train-split", data.train_split, False), ("--test-split", data.test_split, True),
              ("--val-split", data.val_split if fraction is None else "", True))
    for flag, text, may_be_empty in splits:
        if text.strip() and not is_split_expression(text) or not (text.strip() or may_be_empty):
            raise VitcliError(f"{flag} '{text}' is not a tensorflow-datasets split string",
                              hint="e.g. train, train[:98%], train[98%:] or test[:1000]+train")
    if fraction and not re.fullmatch(r"[\w-]+", data.train_split.strip()):
        raise VitcliError(f"--val-split {data.val_split} holds out a fraction of a plain split, "
                          f"not of '{data.train_split}'",
                          hint="give --val-split as a split string too, e.g. train[98%:]")


def _check_model(config: RunConfig) -> None:
    """A known --model, and an image size that is a multiple of its stride. (A checkpoint's
    own stride is checked when it is loaded.)"""
    if config.model is None:
        return
    from vitcli.models.registry import decode_variant  # imports this module

    model = decode_variant(config.model)
    check_resnet_run(config, model)
    if config.image_size is None:
        return
    stem = " times its ResNet stem's" if model.resnet else ""
    check_image_size(config.image_size, model.stride,
                     f"{model.stride}, the patch size{stem} of {config.model}", "--res ")


def check_resnet_run(config: RunConfig, model: ModelConfig) -> None:
    """For a pure ResNet `model`, refuses the settings that need a transformer (patch tokens,
    encoder blocks, a class token, position embeddings, pre-logits), in one line naming the
    flag. Those that still mean something are kept: --freeze backbone, --remat."""
    if not model.is_resnet:
        return
    drop = "drop it: it applies to ViTs"
    refusals = (
        (config.objective == "mpp", "--objective mpp", "has no patch tokens to predict",
         "pre-train it with the classification objective"),
        (config.classifier not in (None, "gap"), f"--classifier {config.classifier}",
         "pools its last feature map (gap)", drop),
        (config.posemb not in (None, "none"), f"--posemb {config.posemb}",
         "has no position embeddings", drop),
        (bool(config.dropout), f"--dropout {config.dropout or 0:g}",
         "has no dropout (BiT's has none)", drop),
        (config.drop_path > 0, f"--drop-path {config.drop_path:g}",
         "has no transformer blocks to skip", drop),
        (config.representation_size is not None,
         f"representation_size {config.representation_size}", "has no pre-logits layer",
         "its pooled features are its representation"),
        (config.train.layer_decay != 1, f"--layer-decay {config.train.layer_decay:g}",
         "has no encoder blocks to decay the rate over", drop),
        (config.train.freeze not in ("none", "backbone"), f"--freeze {config.train.freeze}",
         "has no embeddings or encoder blocks to freeze",
         "use --freeze backbone (all but the head)"),
    )
    for refused, setting_text, reason, hint in refusals:
        if refused:
            raise VitcliError(f"{setting_text}: {model.name}, a pure ResNet, {reason}",
                              hint=hint)


def check_image_size(size, stride: int, what: str, flag: str = "") -> None:
    """Each side of `size` (a number or a (height, width) pair) a multiple of `stride`; else a
    one-line error naming the side ('image width 500 is not a multiple of 16, ...') and the
    nearest sizes that are (`what` says what the stride is, `flag` prefixes the hint)."""
    height, width = image_shape(size)
    square = height == width
    for side, value in (("height", height), ("width", width)):
        if value % stride == 0:
            continue
        lower = value // stride * stride
        choices = [value for value in (lower, lower + stride)
                   if 0 < value <= MAX_IMAGE_SIZE] or [stride]
        if square:
            label, hints = f"image size {value}", [str(choice) for choice in choices]
        else:
            label = f"image {side} {value} (of {size_text(size)})"
            hints = [size_text((choice, width) if side == "height" else (height, choice))
                     for choice in choices]
        raise VitcliError(f"{label} is not a multiple of {what}",
                          hint=f"use e.g. {flag}{' or '.join(hints)}")


def _check_masking(mpp: MaskedPatchConfig) -> None:
    if mpp.mask_fraction + mpp.random_fraction > 1:
        raise VitcliError(f"mpp.mask_fraction {mpp.mask_fraction:g} and mpp.random_fraction "
                          f"{mpp.random_fraction:g} add up to more than 1")


def _check_architecture_switches(config: RunConfig) -> None:
    """--classifier and --posemb shape a new model. Fine-tuning a checkpoint reads both from
    the file (a gap or sincos2d checkpoint fine-tunes as one), so there they are refused."""
    given = [f"--{name} {value}" for name, value in (("classifier", config.classifier),
                                                     ("posemb", config.posemb))
             if value is not None]
    if given and config.command == "finetune" and not config.from_scratch:
        raise VitcliError(f"{' and '.join(given)}: fine-tuning reads the classifier and the "
                          "position embeddings from the checkpoint",
                          hint="drop them, or train a new model with `vitcli pretrain` "
                          "(or `vitcli finetune --from-scratch`)")


def check_objective(config: RunConfig) -> None:
    """Refuses an unknown objective, and masked patch prediction outside pre-training."""
    if config.objective not in OBJECTIVES:
        raise VitcliError(f"unknown objective '{config.objective}'",
                          hint=f"use {' or '.join(OBJECTIVES)}")
    if config.objective == "mpp" and config.command != "pretrain":
        raise VitcliError("--objective mpp is a pre-training objective",
                          hint="use `vitcli pretrain --objective mpp`, then "
                          "`vitcli finetune --weights RUN_DIR`")


def check_run_config(config: RunConfig) -> RunConfig:
    """A whole run: every setting against its rule, then the settings that constrain each
    other (objective and command, model and image size, data source and splits). Returns
    it with values coerced."""
    config = check_settings(config)
    check_objective(config)
    _check_architecture_switches(config)
    _check_model(config)
    check_splits(config.data)
    _check_masking(config.mpp)
    return config


# ---------------------------------------------------------------------------------------------
# Layering: defaults -> recipe -> flags
# ---------------------------------------------------------------------------------------------


def _merged_section(current, values, where: str, name: str):
    """`current` (a section's settings) with a recipe's or the flags' `values` applied."""
    if values is None:
        return current
    if not isinstance(values, dict):
        raise VitcliError(f"{name} in {where} must be a mapping of settings, got "
                          f"{_described(values)}", hint=f"write it as `{name}:` followed by "
                          "indented `key: value` lines")
    return dataclasses.replace(current, **_checked_values(type(current), values, where))


def merge_run_config(base: RunConfig, values: dict, where: str = "config") -> RunConfig:
    """`base` with the (nested) settings of `values` applied, each checked against its rule;
    unknown keys are an error. `where` names the recipe file, or is FLAGS."""
    values = dict(values)
    sections = {name: _merged_section(getattr(base, name), values.pop(name, None), where, name)
                for name in SECTIONS}
    return dataclasses.replace(base, **sections, **_checked_values(RunConfig, values, where))


def read_recipe(path: str) -> dict:
    """A YAML recipe file as a nested dict (top level, `data:` and `train:` sections)."""
    import yaml

    from vitcli.storage import location

    try:
        values = yaml.safe_load(location(path).read_text())
    except OSError as error:
        raise VitcliError(f"cannot read recipe '{path}': {error.strerror}") from error
    except (yaml.YAMLError, UnicodeDecodeError) as error:
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


def resolve_run_config(command: str, recipe: str | None, flags: dict) -> RunConfig:
    """Defaults -> recipe file -> explicit flags (None means 'not given'), every value
    checked as it is layered on and the whole run checked at the end, before any work."""
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
    # The command typed wins over a recipe's (a run's config.yaml records its own).
    config = merge_run_config(base, {**values, "command": command}, where=FLAGS)
    return check_run_config(config)
