"""tensorflow-datasets without the network: a tiny real builder whose images are
`images.image_array`s, and mnist's metadata alone (for `tfds.testing.mock_data`)."""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from tests.support.images import image_array

TINY_TFDS = "vitcli_test_digits"
TINY_TFDS_CLASSES = ["zero", "one", "two"]
TINY_TFDS_COUNTS = {"train": 30, "test": 9}


class VitcliTestDigits(tfds.core.GeneratorBasedBuilder):
    """A tiny, real tensorflow-datasets builder whose images are `image_array`s (ids from 0 in
    train, from 100 in test)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(16, 16, 3)),
            "label": tfds.features.ClassLabel(names=TINY_TFDS_CLASSES),
        }))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(TINY_TFDS_COUNTS["train"], 0),
                "test": self._generate_examples(TINY_TFDS_COUNTS["test"], 100)}

    def _generate_examples(self, count: int, first_id: int):
        for offset in range(count):
            example_id = first_id + offset
            label = example_id % len(TINY_TFDS_CLASSES)
            yield example_id, {"image": image_array(label, example_id), "label": label}


def prepare_tiny_tfds(data_dir: Path) -> str:
    """Really prepares the tiny builder in `data_dir` (no network involved)."""
    VitcliTestDigits(data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


def write_mnist_metadata(data_dir: Path) -> str:
    """Writes only mnist's metadata (12 train and 12 test examples) into `data_dir`, so that
    under `tfds.testing.mock_data` mnist counts as prepared and its splits are known."""
    builder = tfds.builder("mnist", data_dir=str(data_dir))
    splits = [tfds.core.SplitInfo(
        name=name, shard_lengths=[12], num_bytes=0,
        filename_template=tfds.core.ShardedFileTemplate(
            data_dir=builder.data_dir, dataset_name="mnist", split=name,
            filetype_suffix="tfrecord"))
        for name in ("train", "test")]
    builder.info.set_splits(tfds.core.SplitDict(splits))
    Path(builder.data_dir).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)
    return str(data_dir)
