"""Image folders: layouts, formats, skipped files, strict mode, the held-out split and errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.checks import vitcli_error
from tests.support.images import encode, image_array, labels_and_ids, make_folder
from vitcli.config import DataConfig
from vitcli.data import pipeline
from vitcli.data.sources import FOLDER, TFDS, SourceSpec, open_source, parse_source


def open_folder(path, **settings):
    return open_source(DataConfig(source=str(path), **settings))


def all_examples(split, image_size: int = 8) -> np.ndarray:
    """Every image of a split, through the real eval pipeline."""
    dataset = pipeline.eval_dataset(split, DataConfig(), image_size=image_size, batch_size=64)
    return np.concatenate([np.asarray(images) for images, _ in dataset])


def test_split_folders_layout(tmp_path):
    make_folder(tmp_path / "train", {"cat": 3, "dog": 2, "owl": 2})
    make_folder(tmp_path / "validation", {"cat": 1, "dog": 1}, first_id=50)  # owl missing: fine
    make_folder(tmp_path / "test", {"cat": 1, "owl": 1}, first_id=60)
    source = open_folder(tmp_path)
    assert source.class_names == ["cat", "dog", "owl"]
    assert {name: split.num_examples for name, split in source.splits.items()} == {
        "train": 7, "val": 2, "test": 2}
    assert source.split("test").labels == [0, 2]
    assert source.skipped == [] and source.description == f"image folder {tmp_path}"


def test_class_folders_hold_out_a_stratified_validation_split(tmp_path):
    counts = {"a": 20, "b": 10, "c": 3, "d": 2, "e": 1}
    labels = make_folder(tmp_path, counts)
    source = open_folder(tmp_path, val_split="0.2")
    assert set(source.splits) == {"train", "val"}
    train, val = source.split("train"), source.split("val")
    held_out = [val.labels.count(label) for label in range(5)]
    assert held_out == [4, 2, 1, 1, 0]  # round(n * 0.2), at least one when n >= 2, never all
    assert train.num_examples + val.num_examples == sum(counts.values())
    assert not set(train.files) & set(val.files)
    _, train_ids = labels_and_ids(all_examples(train))
    val_labels, val_ids = labels_and_ids(all_examples(val))
    assert sorted(train_ids + val_ids) == sorted(labels)
    assert val_labels == [labels[example_id] for example_id in val_ids]
    assert open_folder(tmp_path, val_split="0.2").split("val").files == val.files  # fixed choice


def test_default_fraction_and_no_validation(tmp_path):
    make_folder(tmp_path, {"a": 30, "b": 10})
    assert open_folder(tmp_path).split("val").num_examples == 4  # the default 0.1
    source = open_folder(tmp_path, val_split="0")
    assert set(source.splits) == {"train"}
    message = vitcli_error(source.split, "val")
    assert "no val split" in message


def test_every_decodable_format_and_extension_case(tmp_path):
    pixels = image_array(0, 7)
    cases = {"a.JPG": ("JPEG", "RGB"), "b.jpeg": ("JPEG", "L"), "c.Png": ("PNG", "RGBA"),
             "d.png": ("PNG", "L"), "e.BMP": ("BMP", "RGB"), "f.gif": ("GIF", "P"),
             "nested/deeper/g.png": ("PNG", "RGB"), "h.jpg": ("PNG", "RGB")}  # a PNG named .jpg
    for name, (fmt, mode) in cases.items():
        path = tmp_path / "cls" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(pixels, fmt, mode))
    source = open_folder(tmp_path, val_split="0")
    assert source.skipped == [] and source.split("train").num_examples == len(cases)
    images = all_examples(source.split("train"), image_size=16)
    assert images.shape == (len(cases), 16, 16, 3)
    gray = images[[source.split("train").files.index(str((tmp_path / "cls" / "d.png")
                                                           .resolve()))]]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # grayscale repeated to RGB


def test_unusable_files_are_skipped_with_reasons(tmp_path):
    make_folder(tmp_path, {"cat": 3, "dog": 3})
    good = encode(image_array(0, 1), "JPEG")
    (tmp_path / "cat" / "empty.jpg").write_bytes(b"")
    (tmp_path / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "dog" / "fake.png").write_bytes(b"<html>not found</html>")
    (tmp_path / "dog" / "readme.txt").write_text("notes")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\0")
    source = open_folder(tmp_path, val_split="0")
    reasons = {path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1]: reason
               for path, reason in source.skipped}
    assert set(reasons) == {"cat/empty.jpg", "cat/truncated.jpg", "dog/fake.png",
                            "dog/readme.txt"}
    assert reasons["cat/empty.jpg"] == "empty file"
    assert reasons["cat/truncated.jpg"].startswith("corrupt or truncated")
    assert source.split("train").num_examples == 6
    message = vitcli_error(open_folder, tmp_path, strict=True)
    assert "4 unusable file(s)" in message


@pytest.mark.parametrize("build, expected", [
    (lambda root: None, "no such folder"),
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: (root.mkdir(), (root / "x.png").write_bytes(encode(image_array(0, 0)))),
     "no class folders"),
    (lambda root: (make_folder(root, {"cat": 2}), (root / "dog").mkdir()),
     "dog has no images"),
    (lambda root: (make_folder(root, {"cat": 2}), (root / "dog").mkdir(),
                   (root / "dog" / "bad.png").write_bytes(b"x")), "1 unusable file(s) skipped"),
    (lambda root: (make_folder(root / "train", {"cat": 2}), (root / "test").mkdir()),
     "no class folders in"),
    (lambda root: (make_folder(root / "train", {"cat": 2}),
                   make_folder(root / "val", {"cat": 1, "cow": 1})), "lacks: cow"),
    (lambda root: (make_folder(root / "train", {"cat": 2}), make_folder(root / "cat", {"x": 1})),
     "mixes split folders"),
    (lambda root: (make_folder(root / "train", {"cat": 2}), make_folder(root / "val", {"cat": 1}),
                   make_folder(root / "validation", {"cat": 1})), "both val/ and validation/"),
])
def test_one_line_errors(tmp_path, build, expected):
    build(tmp_path / "data")
    assert expected in vitcli_error(open_folder, tmp_path / "data")


def test_a_file_instead_of_a_folder_and_bad_fractions(tmp_path):
    (tmp_path / "image.png").write_bytes(encode(image_array(0, 0)))
    assert "is a file, not a folder" in vitcli_error(open_folder, tmp_path / "image.png")
    make_folder(tmp_path / "data", {"cat": 2})
    for bad in ("train[:10%]", "1.5"):
        assert "not a fraction" in vitcli_error(open_folder, tmp_path / "data", val_split=bad)
    assert "no data given" in vitcli_error(open_folder, "")


def test_one_dispatch_tells_folders_and_tfds_apart():
    assert parse_source(" tfds: mnist ") == SourceSpec(TFDS, "mnist")
    assert parse_source("./tfds-like/images") == SourceSpec(FOLDER, "./tfds-like/images")
    assert "no data given" in vitcli_error(parse_source, "  ")


def test_missing_split_names_the_available_ones(tmp_path):
    make_folder(tmp_path / "train", {"cat": 2})
    make_folder(tmp_path / "val", {"cat": 1}, first_id=10)
    source = open_folder(tmp_path)
    with pytest.raises(Exception) as caught:
        source.split("test")
    assert "no test split" in str(caught.value) and caught.value.hint == "its splits: train, val"
