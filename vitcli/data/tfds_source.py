"""tensorflow-datasets sources (`tfds:NAME`): prepared datasets opened as named splits whose
images stay encoded (`SkipDecoding`), so they feed the same decoding pipeline as folders.
An unprepared dataset is refused at once unless downloading is allowed: tfds' own offline
retries would take minutes.

The label is the dataset's ClassLabel feature ("label" when there are several), or, when it
has none, a Sequence(ClassLabel) feature ("labels" when there are several): multi-label data,
each example's classes read as a multi-hot int32 vector."""

from __future__ import annotations

import contextlib
import logging

import tensorflow as tf

from vitcli.config import DataConfig
from vitcli.data.sources import DataSource, Split, parse_fraction
from vitcli.errors import VitcliError


def open_tfds(name: str, config: DataConfig) -> DataSource:
    """A prepared tensorflow-datasets dataset (prepared now if `config.download`)."""
    import tensorflow_datasets as tfds  # slow to import; only tfds sources need it

    builder = _tfds_builder(tfds, name, config)
    image_key, label_key, multi_label = _feature_keys(builder, name)  # before any download
    _ensure_prepared(builder, name, config)
    label_feature = builder.info.features[label_key]
    class_names = list((label_feature.feature if multi_label else label_feature).names)
    splits, missing = {}, {}
    for split, spec in _tfds_split_specs(builder, name, config).items():
        count, reason = _tfds_count(builder, spec)
        if reason:
            missing[split] = reason
            continue
        reader = _tfds_reader(builder, spec, image_key, label_key,
                              len(class_names) if multi_label else None)
        splits[split] = Split(split, count, reader=reader)
    return DataSource(f"tfds:{name}", class_names, splits, [], missing,
                      multi_label=multi_label)


@contextlib.contextmanager
def _quiet_absl():
    """tensorflow-datasets logs warnings (e.g. a missing dataset_info.json) that vitcli turns into
    its own errors; the library prints nothing itself."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _tfds_builder(tfds, name: str, config: DataConfig):
    """The dataset's builder (its features are known from code before it is prepared)."""
    with _quiet_absl():
        try:
            return tfds.builder(name, data_dir=config.data_dir)
        except (ValueError, AssertionError) as error:  # DatasetNotFoundError is a ValueError
            raise VitcliError(f"cannot open tfds:{name}: {_first_line(error)}",
                              hint="check the name against the tensorflow-datasets catalogue"
                              ) from None


def _ensure_prepared(builder, name: str, config: DataConfig) -> None:
    """Fails at once when the dataset is not prepared (never tfds' minutes of download retries),
    unless `config.download` allows preparing it now."""
    with _quiet_absl():
        if builder.is_prepared():
            return
    where = f" in {config.data_dir}" if config.data_dir else ""
    if not config.download:
        raise VitcliError(f"tfds:{name} is not prepared{where} (looked in {builder.data_dir})",
                          hint="pass --download to download and prepare it, or --data-dir to "
                               "the folder that holds it")
    try:
        builder.download_and_prepare()
    except Exception as error:  # downloads fail in many ways; each is a user-facing error
        raise VitcliError(f"could not download and prepare tfds:{name}: {_first_line(error)}",
                          hint="check the network, or prepare it elsewhere and pass --data-dir"
                          ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _feature_keys(builder, name: str) -> tuple[str, str, bool]:
    """The names of the image and class-label features ("image" and "label" when present),
    and whether the label is a Sequence(ClassLabel) ("labels" when present): multi-label."""
    import tensorflow_datasets as tfds

    features = builder.info.features

    def find(matches, preferred: str) -> str | None:
        if preferred in features and matches(features[preferred]):
            return preferred
        found = [key for key in features if matches(features[key])]
        return found[0] if len(found) == 1 else None

    def is_label_sequence(feature) -> bool:
        return (isinstance(feature, tfds.features.Sequence)
                and isinstance(feature.feature, tfds.features.ClassLabel))

    image_key = find(lambda feature: isinstance(feature, tfds.features.Image), "image")
    label_key = find(lambda feature: isinstance(feature, tfds.features.ClassLabel), "label")
    multi_label = label_key is None
    if multi_label:
        label_key = find(is_label_sequence, "labels")
    if image_key is None or label_key is None:
        raise VitcliError(f"tfds:{name} is not an image classification dataset",
                          hint="vitcli needs one Image feature and one ClassLabel (or "
                               "Sequence(ClassLabel)) feature")
    return image_key, label_key, multi_label


def _tfds_split_specs(builder, name: str, config: DataConfig) -> dict[str, str]:
    """Split name -> tfds split string; a numeric val_split carves that fraction off the end of
    the train split (`train[:45000]` / `train[45000:]`)."""
    specs = {"train": config.train_split.strip()}
    fraction = parse_fraction(config.val_split.strip() or "0")
    if fraction is None:
        specs["val"] = config.val_split.strip()
    elif fraction > 0:
        specs["train"], specs["val"] = _carve(builder, name, specs["train"], fraction)
    specs["test"] = config.test_split.strip()
    return {split: spec for split, spec in specs.items() if spec}


def _carve(builder, name: str, train: str, fraction: float) -> tuple[str, str]:
    """(train part, held-out part) of a plain split by example counts."""
    if not 0.0 < fraction < 1.0 or train not in builder.info.splits:
        raise VitcliError(
            f"cannot hold out {fraction:g} of tfds:{name} split '{train}'",
            hint="a fractional --val-split needs a fraction in (0, 1) and a plain --train-split "
                 f"among {', '.join(builder.info.splits)}; or give a split string like train[98%:]")
    total = builder.info.splits[train].num_examples
    held_out = min(total - 1, max(1, round(total * fraction)))
    return f"{train}[:{total - held_out}]", f"{train}[{total - held_out}:]"


def _tfds_count(builder, spec: str) -> tuple[int, str | None]:
    """(number of examples, None) of a split string, or (0, why it cannot be read)."""
    available = ", ".join(builder.info.splits) or "none"
    try:
        count = builder.info.splits[spec].num_examples
    except (KeyError, ValueError, AssertionError, TypeError) as error:
        return 0, f"'{spec}' is not a split of it ({_first_line(error)[:120]}; splits: {available})"
    if count == 0:
        return 0, f"'{spec}' holds no examples"
    return count, None


def _tfds_reader(builder, spec: str, image_key: str, label_key: str,
                 num_classes: int | None = None):
    """A function returning the split as (encoded image, int32 label), files read in order;
    with `num_classes` (a Sequence(ClassLabel) label) the label is a multi-hot vector."""
    def label_of(example):
        label = tf.cast(example[label_key], tf.int32)
        if num_classes is None:
            return label
        # A class listed twice counts once; an empty list is all zeros.
        hot = tf.one_hot(label, num_classes, dtype=tf.int32)
        return tf.minimum(tf.reduce_sum(hot, axis=0), 1)

    def examples() -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        dataset = builder.as_dataset(split=spec, shuffle_files=False,
                                     decoders={image_key: tfds.decode.SkipDecoding()})
        return dataset.map(lambda example: (example[image_key], label_of(example)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return examples
