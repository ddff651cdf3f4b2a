"""Multi-label data: CSV manifests (multi-hot labels, splits, hold-out, the content check, bad
manifests refused in one line) and tensorflow-datasets label sequences (a tiny real builder
with a Sequence(ClassLabel) feature, prepared offline); both through the pipelines, whose
position -> example property (exact resume) holds for multi-hot labels too."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.support.checks import vitcli_error
from tests.support.images import batches, encode, image_array, labels_and_ids
from vitcli.config import DataConfig
from vitcli.data import pipeline
from vitcli.data.sources import MANIFEST, open_source, parse_source

CLASSES = ["cat", "dog", "indoor", "outdoor"]
# id -> labels; the image of id i has green = i (`image_array`), so batches can be traced.
LABELS = {0: "cat;indoor", 1: "dog;outdoor", 2: "cat;dog;outdoor", 3: "cat", 4: "dog;indoor",
          5: "cat;outdoor", 6: "dog", 7: "cat;indoor", 8: "dog;outdoor", 9: "outdoor;cat",
          10: "indoor", 11: "dog;cat"}
BATCH = 4


def multi_hot(text: str) -> list[int]:
    names = {name.strip() for name in text.split(";")}
    return [int(name in names) for name in CLASSES]


def write_images(folder, ids) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for example_id in ids:
        (folder / f"{example_id:02d}.png").write_bytes(encode(image_array(0, example_id)))


def write_manifest(root, lines: list[str], name: str = "labels.csv"):
    (root / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(root / name)


@pytest.fixture
def manifest(tmp_path):
    """12 images in photos/, listed with a split column: 0-7 train, 8-9 val, 10-11 test."""
    write_images(tmp_path / "photos", LABELS)
    split = {**{i: "train" for i in range(8)}, 8: "val", 9: "validation", 10: "test", 11: "test"}
    lines = ["file,labels,split", *(f"photos/{i:02d}.png,{LABELS[i]},{split[i]}" for i in LABELS)]
    return write_manifest(tmp_path, lines)


@pytest.fixture
def plain_manifest(tmp_path):
    """The same 12 images without a split column (and with `./` and a BOM, as editors write)."""
    write_images(tmp_path / "photos", LABELS)
    lines = ["\ufefflabels,file", *(f'"{LABELS[i]}",./photos/{i:02d}.png' for i in LABELS)]
    return write_manifest(tmp_path, lines)


def ids_of(split) -> list[int]:
    return [int(path.rsplit("/", 1)[1][:2]) for path in split.files]


def test_a_manifest_gives_multi_hot_labels_and_its_splits(manifest):
    assert parse_source(manifest).kind == MANIFEST
    source = open_source(DataConfig(source=manifest))
    assert source.multi_label and source.class_names == CLASSES
    assert source.layout == "a CSV manifest" and source.skipped == []
    assert {name: ids_of(split) for name, split in source.splits.items()} == {
        "train": list(range(8)), "val": [8, 9], "test": [10, 11]}
    for split in source.splits.values():
        expected = [multi_hot(LABELS[example_id]) for example_id in ids_of(split)]
        np.testing.assert_array_equal(split.labels, expected)
    encoded, label = next(iter(source.split("train").examples()))
    assert encoded.dtype == tf.string and label.dtype == tf.int32 and label.shape == (4,)


def test_without_a_split_column_val_is_held_out_by_the_rarest_label(plain_manifest):
    source = open_source(DataConfig(source=plain_manifest, val_split="0.25"))
    train, val = ids_of(source.split("train")), ids_of(source.split("val"))
    assert sorted(train + val) == sorted(LABELS) and not set(train) & set(val)
    # rarest labels: indoor (4 images) -> 1 held out, cat-only / dog-only groups too
    assert 2 <= len(val) <= 4
    again = open_source(DataConfig(source=plain_manifest, val_split="0.25"))
    assert ids_of(again.split("val")) == val  # a fixed choice
    evaluated = open_source(DataConfig(source=plain_manifest), purpose="evaluate")
    assert ids_of(evaluated.split("all")) == sorted(LABELS)
    assert "val" not in open_source(DataConfig(source=plain_manifest, val_split="0")).splits


def test_pipelines_carry_the_multi_hot_labels(manifest):
    source = open_source(DataConfig(source=manifest))
    evaluated = pipeline.eval_dataset(source.split("train"), DataConfig(), image_size=8,
                                      batch_size=3)
    seen = []
    for images, labels in evaluated:
        for example_id, label in zip(labels_and_ids(np.asarray(images))[1], labels.numpy(),
                                     strict=True):
            assert label.tolist() == multi_hot(LABELS[example_id])
            seen.append(example_id)
    assert seen == list(range(8))
    train = pipeline.train_dataset(source.split("train"), DataConfig(train_crop="resize"),
                                   image_size=8, batch_size=BATCH, num_classes=4, seed=0)
    for images, targets in batches(train, 5):
        assert targets.dtype == np.float32 and targets.shape == (BATCH, 4)
        for example_id, target in zip(labels_and_ids(images)[1], targets, strict=True):
            assert target.tolist() == multi_hot(LABELS[example_id])


@pytest.mark.parametrize("cache", [False, True])
def test_resume_yields_exactly_the_uninterrupted_batches(manifest, cache):
    split = open_source(DataConfig(source=manifest)).split("train")
    config = DataConfig(train_crop="inception", cache=cache)

    def train(**options):
        return pipeline.train_dataset(split, config, image_size=8, batch_size=BATCH,
                                      num_classes=4, seed=3, **options)

    uninterrupted = batches(train(), 9)
    for resumed_at in (1, 5):  # mid-epoch, and a later epoch (8 examples per epoch)
        resumed = batches(train(start_example=resumed_at * BATCH), 4)
        for (images, targets), (expected_images, expected_targets) in zip(
                resumed, uninterrupted[resumed_at:], strict=False):
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(targets, expected_targets)


def test_unusable_images_are_skipped_or_refused_with_strict(manifest, tmp_path):
    (tmp_path / "photos" / "03.png").write_text("not an image")
    source = open_source(DataConfig(source=manifest))
    assert 3 not in ids_of(source.split("train"))
    assert [path for path, _ in source.skipped] == [str(tmp_path / "photos" / "03.png")]
    assert "not an image" in source.skipped[0][1]
    message = vitcli_error(open_source, DataConfig(source=manifest, strict=True))
    assert "1 unusable file(s)" in message and "03.png" in message


BAD_MANIFESTS = {
    "missing file": (["file,labels", "photos/00.png,cat", "photos/99.png,dog"],
                     ["line 3", "99.png does not exist"]),
    "unknown header": (["file,labels,weight", "photos/00.png,cat,1"],
                       ["unknown column 'weight'"]),
    "no labels column": (["file,split", "photos/00.png,train"], ["no 'labels' column"]),
    "empty labels": (["file,labels", "photos/00.png,cat", "photos/01.png, "],
                     ["line 3", "01.png", "has no labels"]),
    "empty label": (["file,labels", "photos/00.png,cat;;dog"], ["an empty label"]),
    "outside": (["file,labels", "photos/00.png,cat", "../secret.png,dog"],
                ["line 3", "../secret.png is outside the manifest's folder"]),
    "outside, normalised": (["file,labels", "photos/../../x.png,dog"], ["outside"]),
    "absolute": (["file,labels", "/etc/passwd,dog"], ["outside"]),
    "listed twice": (["file,labels", "photos/00.png,cat", "./photos/00.png,dog"],
                     ["line 3", "listed twice"]),
    "unknown split": (["file,labels,split", "photos/00.png,cat,holdout"],
                      ["unknown split 'holdout'"]),
    "wrong field count": (["file,labels", "photos/00.png,cat,dog"], ["has 3 fields"]),
    "no rows": (["file,labels"], ["lists no files"]),
    "empty": ([], ["is empty"]),
    "a folder listed": (["file,labels", "photos,cat"], ["is not a file"]),
}


@pytest.mark.parametrize("case", BAD_MANIFESTS)
def test_bad_manifests_are_refused_in_one_line(case, tmp_path):
    write_images(tmp_path / "photos", [0, 1])
    lines, expected = BAD_MANIFESTS[case]
    path = write_manifest(tmp_path, lines)
    message = vitcli_error(open_source, DataConfig(source=path))
    for part in expected:
        assert part.lower() in message, message


def test_a_missing_or_undecodable_manifest_is_one_line(tmp_path):
    assert "no such manifest" in vitcli_error(
        open_source, DataConfig(source=str(tmp_path / "nothing.csv")))
    (tmp_path / "latin.csv").write_bytes("file,labels\nphotos/00.png,caf\xe9\n".encode("latin-1"))
    assert "not utf-8" in vitcli_error(open_source, DataConfig(source=str(tmp_path / "latin.csv")))


def test_training_refuses_a_manifest_with_one_class(tmp_path):
    write_images(tmp_path / "photos", [0, 1])
    path = write_manifest(tmp_path, ["file,labels", "photos/00.png,cat", "photos/01.png,cat"])
    assert "at least two" in vitcli_error(open_source, DataConfig(source=path),
                                          purpose="classify")


# -- tensorflow-datasets: a label sequence -----------------------------------------------------

TFDS_NAME = "vitcli_test_multi_label"
TFDS_CLASSES = ["red", "green", "blue"]


def tfds_labels(example_id: int) -> list[int]:
    """Class indices of an example: some empty, some listed twice."""
    return [[], [0], [1, 2], [2, 2, 0], [0, 1, 2]][example_id % 5]


class VitcliTestMultiLabel(tfds.core.GeneratorBasedBuilder):
    """A tiny real builder whose label is a Sequence(ClassLabel) (as voc's `labels`)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(16, 16, 3)),
            "labels": tfds.features.Sequence(tfds.features.ClassLabel(names=TFDS_CLASSES)),
        }))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(range(20)),
                "test": self._generate_examples(range(100, 105))}

    def _generate_examples(self, ids):
        for example_id in ids:
            yield example_id, {"image": image_array(0, example_id),
                               "labels": tfds_labels(example_id)}


@pytest.fixture(scope="module")
def multi_label_tfds_dir(tmp_path_factory) -> str:
    data_dir = tmp_path_factory.mktemp("tfds-multi-label")
    VitcliTestMultiLabel(data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


def expected_tfds_hot(example_id: int) -> list[int]:
    return [int(index in tfds_labels(example_id)) for index in range(3)]


def test_tfds_label_sequences_become_multi_hot(multi_label_tfds_dir):
    config = DataConfig(source=f"tfds:{TFDS_NAME}", data_dir=multi_label_tfds_dir,
                        shuffle_buffer=6, train_crop="inception")
    source = open_source(config)
    assert source.multi_label and source.class_names == TFDS_CLASSES
    assert {name: split.num_examples for name, split in source.splits.items()} == {
        "train": 18, "val": 2, "test": 5}
    seen = []
    for images, labels in pipeline.eval_dataset(source.split("test"), config, image_size=8,
                                                batch_size=2):
        for example_id, label in zip(labels_and_ids(np.asarray(images))[1], labels.numpy(),
                                     strict=True):
            assert label.tolist() == expected_tfds_hot(example_id)
            seen.append(example_id)
    assert sorted(seen) == list(range(100, 105))
    split = source.split("train")

    def train(**options):
        return pipeline.train_dataset(split, config, image_size=8, batch_size=BATCH,
                                      num_classes=3, seed=2, **options)

    uninterrupted = batches(train(), 8)
    for images, targets in uninterrupted:
        assert targets.shape == (BATCH, 3) and targets.dtype == np.float32
        for example_id, target in zip(labels_and_ids(images)[1], targets, strict=True):
            assert target.tolist() == expected_tfds_hot(example_id)
    resumed = batches(train(start_example=5 * BATCH), 3)  # a sequential source: epoch 2
    for (images, targets), (expected_images, expected_targets) in zip(
            resumed, uninterrupted[5:], strict=True):
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(targets, expected_targets)
