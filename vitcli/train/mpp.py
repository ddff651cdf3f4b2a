"""Training with masked patch prediction (docs/reference.md §6.4): the corruption plan, the
mean-colour targets, the loss, and what the training loop sees of an MPP run.

Random choices are stateless: a training micro-batch draws its plan from (run seed, step,
replica, micro-batch), so a resumed run corrupts exactly the patches an uninterrupted one
would, and validation uses the same plan every time it runs.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vitcli.config import MaskedPatchConfig, RunConfig
from vitcli.data.ops import example_seed
from vitcli.data.pipeline import eval_dataset
from vitcli.data.sources import DataSource
from vitcli.models.mpp import KEPT, MASKED, REPLACED, UNTOUCHED, build_mpp_model
from vitcli.models.vit import config_from_model

# Separate the corruption seeds from the data's (augmentation 0, shuffle 1).
TRAIN_SALT, VALIDATION_SALT = 2, 3


def num_colour_classes(settings: MaskedPatchConfig) -> int:
    return 2 ** (3 * settings.colour_bits)


def colour_classes(images: tf.Tensor, patch_pixels: int, bits: int = 3) -> tf.Tensor:
    """The target of each patch (B, N) int32: its mean colour on [0, 255], each channel cut to
    its top `bits` bits, as r * 4**bits + g * 2**bits + b (row-major patches, like the tokens)."""
    images = tf.cast(images, tf.float32)
    _, height, width, _ = images.shape
    rows, columns = height // patch_pixels, width // patch_pixels
    patches = tf.reshape(images, (-1, rows, patch_pixels, columns, patch_pixels, 3))
    means = tf.reduce_mean(patches, axis=(2, 4))  # an exact sum of pixels, one division
    levels = 2**bits
    quantised = tf.clip_by_value(tf.floor(means * (levels / 256.0)), 0.0, levels - 1.0)
    quantised = tf.cast(quantised, tf.int32)
    classes = (quantised[..., 0] * levels + quantised[..., 1]) * levels + quantised[..., 2]
    return tf.reshape(classes, (-1, rows * columns))


def num_corrupted(num_patches: int, settings: MaskedPatchConfig) -> int:
    """Patches corrupted per image: the same count in every image, so that the mean over
    images of per-image losses is the mean over all corrupted patches."""
    return max(1, round(num_patches * settings.corrupt_fraction))


def sample_corruption(seed: tf.Tensor, batch: int, num_patches: int,
                      settings: MaskedPatchConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """(modes, sources), each (B, N) int32, drawn from the (2,) stateless `seed`.

    Each image gets `num_corrupted` patches chosen uniformly; each of those is MASKED,
    REPLACED or KEPT with probabilities mask_fraction, random_fraction and the rest. A
    REPLACED patch takes the embedding of a uniformly chosen other patch of the same image.
    """
    choose_seed, kind_seed, source_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3))
    shape = (batch, num_patches)
    ranks = tf.argsort(tf.argsort(tf.random.stateless_uniform(shape, choose_seed), axis=1), axis=1)
    corrupted = ranks < num_corrupted(num_patches, settings)
    draw = tf.random.stateless_uniform(shape, kind_seed)
    kinds = tf.where(draw < settings.mask_fraction, MASKED,
                     tf.where(draw < settings.mask_fraction + settings.random_fraction,
                              REPLACED, KEPT))
    modes = tf.where(corrupted, kinds, UNTOUCHED)
    # Uniform over the other N - 1 patches: draw from N - 1 and skip the patch itself.
    others = tf.random.stateless_uniform(shape, source_seed, minval=0,
                                         maxval=max(num_patches - 1, 1), dtype=tf.int32)
    own = tf.range(num_patches, dtype=tf.int32)[None]
    sources = tf.minimum(others + tf.cast(others >= own, tf.int32), num_patches - 1)
    return modes, sources


def masked_patch_loss(logits: tf.Tensor, targets: tf.Tensor, modes: tf.Tensor) -> tf.Tensor:
    """Per image (B,): the mean cross-entropy over its corrupted patches, in float32."""
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.cast(logits, tf.float32))
    corrupted = tf.cast(modes != UNTOUCHED, tf.float32)
    return tf.reduce_sum(cross_entropy * corrupted, axis=1) / tf.reduce_sum(corrupted, axis=1)


class MaskedPatchTraining:
    """An MPP run as the training loop sees its model: the predictor's variables are trained
    and checkpointed (with the ViT's unused head, for a complete resume), while `save`
    writes the plain classification ViT, so a run's model.keras fine-tunes like any other."""

    def __init__(self, vit: keras.Model, settings: MaskedPatchConfig):
        self.vit = vit
        self.settings = settings
        self.predictor = build_mpp_model(vit, num_colour_classes(settings))
        self.patch_pixels = config_from_model(vit).stride
        self.num_patches = self.predictor.output_shape[1]

    @property
    def weights(self) -> list:
        unique = {id(variable): variable for variable in (*self.vit.weights,
                                                          *self.predictor.weights)}
        return list(unique.values())

    @property
    def variables(self) -> list:
        """The weights and the Keras seed generators (dropout's) that the train step reseeds."""
        unique = {id(variable): variable for variable in (*self.vit.variables,
                                                          *self.predictor.variables)}
        return list(unique.values())

    @property
    def trainable_variables(self) -> list:
        return self.predictor.trainable_variables

    def save(self, path) -> None:
        self.vit.save(path)

    def batch_metrics(self, images: tf.Tensor, seed: tf.Tensor, training: bool):
        """(per-image loss (B,), logits (B, N, K), targets (B, N), modes (B, N)) of a batch."""
        modes, sources = sample_corruption(seed, tf.shape(images)[0], self.num_patches,
                                           self.settings)
        logits = self.predictor([images, modes, sources], training=training)
        targets = colour_classes(images, self.patch_pixels, self.settings.colour_bits)
        return masked_patch_loss(logits, targets, modes), logits, targets, modes


def masked_patch_training(vit: keras.Model, config: RunConfig):
    """(MaskedPatchTraining, batch_loss) for `make_train_step`: the loss draws each
    micro-batch's corruption from the run seed and the step's (step, slot) seed."""
    training = MaskedPatchTraining(vit, config.mpp)

    def batch_loss(images, labels, step_seed):
        seed = tf.random.experimental.stateless_fold_in(
            example_seed(config.train.seed, step_seed[0], salt=TRAIN_SALT), step_seed[1])
        return tf.reduce_sum(training.batch_metrics(images, seed, training=True)[0])

    return training, batch_loss


def _validation_sums(training: MaskedPatchTraining, run_seed: int):
    """A compiled (images, batch index) -> (loss sum, top-1 hits, top-5 hits, corrupted count)."""
    @tf.function(reduce_retracing=True)
    def sums(images, index):
        seed = example_seed(run_seed, index, salt=VALIDATION_SALT)
        losses, logits, targets, modes = training.batch_metrics(images, seed, training=False)
        logits = tf.reshape(tf.cast(logits, tf.float32), (-1, logits.shape[-1]))
        targets, corrupted = tf.reshape(targets, (-1,)), tf.reshape(modes != UNTOUCHED, (-1,))

        def hits(k):
            return tf.reduce_sum(tf.cast(tf.math.in_top_k(targets, logits, k) & corrupted,
                                         tf.float32))

        return tf.reduce_sum(losses), hits(1), hits(5), tf.reduce_sum(tf.cast(corrupted,
                                                                             tf.float32))

    return sums


def make_mpp_validator(training: MaskedPatchTraining, source: DataSource, config: RunConfig,
                       image_size: int):
    """A callable returning the MPP metrics on the validation split, or None without one:
    `val_top1`/`val_top5` are the mean-colour accuracies over corrupted patches, `val_loss`
    the MPP loss; the same patches are corrupted at every validation."""
    if "val" not in source.splits:
        return None
    dataset = eval_dataset(source.split("val"), config.data, image_size=image_size,
                           batch_size=min(config.train.batch_size, 256))
    sums = _validation_sums(training, config.train.seed)

    def validate() -> dict:
        totals, images = [0.0, 0.0, 0.0, 0.0], 0
        for index, (batch, _) in enumerate(dataset):
            batch_sums = sums(batch, tf.constant(index, tf.int64))
            totals = [total + float(value) for total, value in zip(totals, batch_sums, strict=True)]
            images += int(batch.shape[0])
        loss, top1, top5, corrupted = totals
        metrics = {"top1": top1 / max(corrupted, 1), "top5": top5 / max(corrupted, 1),
                   "loss": loss / max(images, 1)}
        return {f"val_{key}": round(value, 6) for key, value in metrics.items()}

    return validate
