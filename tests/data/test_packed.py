"""Packed data: `pack_folder` writes an image folder's examples as TFRecord shards, and the
packed directory gives back the same examples in the same order, the folder's own training
stream when cached, and an exactly resumable, shardable stream of its own when not."""

from __future__ import annotations

import json
import os
import shutil
import uuid

import numpy as np
import pytest
import tensorflow as tf

from tests.support.images import batches, make_folder
from vitcli.config import MAX_SHARDS, DataConfig
from vitcli.data import packed_source, pipeline
from vitcli.data.pack import pack_folder
from vitcli.data.sources import PACKED, open_source, parse_source
from vitcli.errors import VitcliError

COUNTS = {"a": 9, "b": 7, "c": 8}  # 24 images: 21 train, 3 held out
SHARDS = 5  # -> train in 5 shards of 5, 4, 4, 4, 4; val in one


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """(folder, packed directory) of a plain class folder packed into SHARDS shards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITCLI_HOME", str(tmp_path_factory.mktemp("home")))
        root = tmp_path_factory.mktemp("packed")
        make_folder(root / "data", COUNTS)
        pack_folder(str(root / "data"), str(root / "out"), DataConfig(source=str(root / "data")),
                    shards=SHARDS)
        yield str(root / "data"), str(root / "out")


def examples(split) -> list[tuple[bytes, int]]:
    return [(encoded.numpy(), int(label)) for encoded, label in split.examples()]


def stream(split, count, config, *, start=0, shard=0, num_shards=1, seed=3):
    """The first `count` (position, encoded bytes, label) of a training example stream."""
    dataset = pipeline.example_stream(split, config, seed=seed, start_example=start,
                                      shard=shard, num_shards=num_shards)
    return [(int(position), encoded.numpy(), int(label))
            for position, encoded, label in dataset.take(count)]


def test_index_holds_classes_splits_and_shards(packed):
    folder, out = packed
    index = json.loads(tf.io.gfile.GFile(f"{out}/vitcli-packed.json").read())
    assert index["format"] == "vitcli-packed" and index["version"] == 1
    assert index["class_names"] == ["a", "b", "c"]
    assert index["layout"] == "a plain class folder" and index["median_side"] == 16
    assert {name: entry["examples"] for name, entry in index["splits"].items()} == {
        "train": 21, "val": 3}
    train = index["splits"]["train"]["shards"]
    assert [shard["examples"] for shard in train] == [5, 4, 4, 4, 4]
    assert [shard["file"] for shard in train] == [f"train-0000{k}-of-00005.tfrecord"
                                                  for k in range(5)]
    assert sorted(tf.io.gfile.listdir(out)) == sorted(
        [".pack-plan.json", "vitcli-packed.json", "val-00000-of-00001.tfrecord",
         *(shard["file"] for shard in train)])
    record = tf.train.Example.FromString(next(iter(
        tf.data.TFRecordDataset(f"{out}/{train[1]['file']}"))).numpy())
    # Shard 1 starts with the split's example 1: a's second training file, by path.
    assert record.features.feature["path"].bytes_list.value[0].decode().startswith("a/")
    assert record.features.feature["label"].int64_list.value[0] == 0


def test_packed_folder_is_told_apart_and_described(packed):
    folder, out = packed
    assert parse_source(out).kind == PACKED and parse_source(folder).kind != PACKED
    source = open_source(DataConfig(source=out))
    assert source.description == f"packed data {out}" and source.class_names == ["a", "b", "c"]
    assert {name: split.num_examples for name, split in source.splits.items()} == {
        "train": 21, "val": 3}


@pytest.mark.parametrize("name", ["train", "val"])
def test_examples_are_the_folders_in_its_order(packed, name):
    folder, out = packed
    expected = examples(open_source(DataConfig(source=folder)).split(name))
    got = examples(open_source(DataConfig(source=out)).split(name))
    assert got == expected and len({data for data, _ in got}) == len(got)


def test_evaluation_gets_all_of_a_plain_folder(packed):
    folder, out = packed
    expected = examples(open_source(DataConfig(source=folder), purpose="evaluate").split("all"))
    got = examples(open_source(DataConfig(source=out), purpose="evaluate").split("all"))
    assert sorted(got) == sorted(expected) and len(got) == 24


def test_split_folders_keep_their_splits(tmp_path):
    make_folder(tmp_path / "data" / "train", {"x": 4, "y": 3})
    make_folder(tmp_path / "data" / "test", {"x": 2, "y": 2}, first_id=50)
    config = DataConfig(source=str(tmp_path / "data"))
    pack_folder(config.source, str(tmp_path / "out"), config, shards=3)
    folder, packed_data = open_source(config), open_source(DataConfig(source=str(tmp_path / "out")))
    assert set(packed_data.splits) == set(folder.splits) == {"train", "val", "test"}
    for name in folder.splits:
        assert examples(packed_data.split(name)) == examples(folder.split(name))


def test_cached_packed_stream_is_the_folders_stream(packed):
    folder, out = packed
    config = DataConfig(cache=True, train_crop="inception", val_split="0.1")

    def train_batches(source):
        split = open_source(DataConfig(source=source)).split("train")
        dataset = pipeline.train_dataset(split, config, image_size=8, batch_size=3,
                                         num_classes=3, seed=7)
        return batches(dataset, 14)  # two epochs of 21

    for (images, labels), (want_images, want_labels) in zip(
            train_batches(out), train_batches(folder), strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


@pytest.fixture
def small_groups(monkeypatch):
    """Shards read two at a time, so the 5 train shards make 3 groups."""
    monkeypatch.setattr(packed_source, "CYCLE", 2)


@pytest.mark.parametrize("buffer", [4, 10_000])
def test_every_epoch_covers_each_example_once(packed, small_groups, buffer):
    split = open_source(DataConfig(source=packed[1])).split("train")
    config = DataConfig(shuffle_buffer=buffer)
    seen = stream(split, 3 * 21, config)
    assert [position for position, _, _ in seen] == list(range(63))
    everything = sorted(examples(split))
    epochs = [[(data, label) for _, data, label in seen[start:start + 21]]
              for start in (0, 21, 42)]
    for epoch in epochs:
        assert sorted(epoch) == everything
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert epochs[0] != examples(split)  # not the folder's order


def test_stream_resumes_exactly_anywhere(packed, small_groups):
    split = open_source(DataConfig(source=packed[1])).split("train")
    config = DataConfig(shuffle_buffer=4)
    whole = stream(split, 80, config)
    # in the first block, mid-block, a block's start, in the second group, the last block
    # of an epoch (3 long), an epoch's start, across epochs
    for start in (1, 6, 8, 11, 19, 20, 21, 30, 47, 60):
        assert stream(split, 80 - start, config, start=start) == whole[start:], start


@pytest.mark.parametrize("num_shards", [2, 3])
def test_pipelines_read_their_own_shards_and_resume(packed, small_groups, num_shards):
    split = open_source(DataConfig(source=packed[1])).split("train")
    config = DataConfig(shuffle_buffer=4)
    shard_files = [path for path, _ in split.shards]
    per_pipeline = []
    for shard in range(num_shards):
        own = shard_files[shard::num_shards]
        count = sum(examples_in for path, examples_in in split.shards if path in own)
        seen = stream(split, 3 * count, config, shard=shard, num_shards=num_shards)
        assert [position for position, _, _ in seen] == list(
            range(shard, 3 * count * num_shards, num_shards))
        mine = sorted(examples(packed_source._split(
            "train", packed[1], {"examples": count, "shards": [
                {"file": path.rsplit("/", 1)[1], "examples": n}
                for path, n in split.shards if path in own]}, None)))
        for epoch in (seen[:count], seen[count:2 * count], seen[2 * count:]):
            assert sorted((data, label) for _, data, label in epoch) == mine
        per_pipeline.append(seen[:count])
        # mid-block, a block's start, the next epoch of this pipeline (local epochs differ)
        for start in (1, 5, 4 * num_shards, count * num_shards + 1, 2 * count * num_shards - 7):
            first = start + (shard - start) % num_shards
            resumed = stream(split, 5, config, start=start, shard=shard, num_shards=num_shards)
            assert resumed == [item for item in seen if item[0] >= first][:5], (shard, start)
    # The pipelines' first epochs together are the split, each example once.
    firsts = [item[1:] for first_epoch in per_pipeline for item in first_epoch]
    assert sorted(firsts) == sorted(examples(split))


def test_more_pipelines_than_shards_split_the_one_stream(packed):
    split = open_source(DataConfig(source=packed[1])).split("val")  # one shard
    config = DataConfig(shuffle_buffer=2)
    whole = stream(split, 12, config)
    for shard in (0, 1):
        assert stream(split, 6, config, shard=shard, num_shards=2) == whole[shard::2]
        assert stream(split, 3, config, start=5, shard=shard, num_shards=2) == [
            item for item in whole if item[0] >= 5 and item[0] % 2 == shard][:3]


def test_training_batches_resume_exactly_with_mixing(packed):
    split = open_source(DataConfig(source=packed[1])).split("train")
    config = DataConfig(shuffle_buffer=8, train_crop="inception", mixup=0.4)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)

    def train(start):
        return batches(pipeline.train_dataset(split, config, image_size=8, batch_size=3,
                                              num_classes=3, seed=2, start_example=start,
                                              input_context=context), 4)

    whole = train(0)
    for step in (1, 3):  # a global batch of 2 pipelines x 3
        for (images, labels), (want_images, want_labels) in zip(
                train(step * 6), whole[step:], strict=False):
            np.testing.assert_array_equal(images, want_images)
            np.testing.assert_array_equal(labels, want_labels)


def shard_bytes(out) -> dict[str, bytes]:
    return {name: tf.io.gfile.GFile(f"{out}/{name}", "rb").read()
            for name in tf.io.gfile.listdir(out) if name.endswith(".tfrecord")}


def test_an_interrupted_pack_resumes_writing_only_what_is_missing(packed, tmp_path):
    folder, out = packed
    before = shard_bytes(out)
    copy = shutil.copytree(out, tmp_path / "out")
    (copy / "vitcli-packed.json").unlink()  # stopped before the index was written:
    (copy / "train-00002-of-00005.tfrecord").unlink()  # one shard not yet written,
    truncated = copy / "train-00004-of-00005.tfrecord"  # one cut short (a damaged copy),
    truncated.write_bytes(truncated.read_bytes()[:-30])
    (copy / ".train-00003-of-00005.tfrecord.tmp-0123abcd").write_bytes(b"half")  # a temporary
    result = pack_folder(folder, str(copy), DataConfig(source=folder), shards=SHARDS)
    assert (result.written, result.kept) == (2, 4)
    assert shard_bytes(copy) == before
    assert sorted(tf.io.gfile.listdir(copy)) == sorted(tf.io.gfile.listdir(out))
    assert (copy / "vitcli-packed.json").read_text() == (
        tf.io.gfile.GFile(f"{out}/vitcli-packed.json").read())
    again = pack_folder(folder, str(copy), DataConfig(source=folder), shards=SHARDS)
    assert (again.written, again.kept) == (0, 6)


def test_a_finished_pack_missing_a_shard_writes_it_again(packed, tmp_path):
    folder, out = packed
    copy = shutil.copytree(out, tmp_path / "out")
    (copy / "val-00000-of-00001.tfrecord").unlink()
    with pytest.raises(VitcliError, match="lacks its shard val-00000-of-00001.tfrecord"):
        open_source(DataConfig(source=str(copy)))
    result = pack_folder(folder, str(copy), DataConfig(source=folder), shards=SHARDS)
    assert (result.written, result.kept) == (1, 5) and shard_bytes(copy) == shard_bytes(out)


@pytest.mark.parametrize("shards", [0, -1, MAX_SHARDS + 1])
def test_shards_out_of_range_are_refused(packed, tmp_path, shards):
    with pytest.raises(VitcliError, match="--shards"):
        pack_folder(packed[0], str(tmp_path / "out"), DataConfig(source=packed[0]), shards=shards)
    assert not (tmp_path / "out").exists()


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(VitcliError, match="no such folder"):
        pack_folder(str(tmp_path / "nope"), str(tmp_path / "out"), DataConfig())


def test_a_folder_of_other_files_is_refused_unless_overwrite(packed, tmp_path):
    folder = packed[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(VitcliError, match="is not empty"):
        pack_folder(folder, str(out), DataConfig(source=folder), shards=2)
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]
    pack_folder(folder, str(out), DataConfig(source=folder), shards=2, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert examples(open_source(DataConfig(source=str(out))).split("train")) == examples(
        open_source(DataConfig(source=folder)).split("train"))


def test_another_pack_is_replaced_only_with_overwrite(packed, tmp_path):
    folder, out = packed
    copy = shutil.copytree(out, tmp_path / "out")
    with pytest.raises(VitcliError, match="holds a pack of another folder, other settings"):
        pack_folder(folder, str(copy), DataConfig(source=folder), shards=2)
    assert shard_bytes(copy) == shard_bytes(out)
    result = pack_folder(folder, str(copy), DataConfig(source=folder), shards=2, overwrite=True)
    assert result.kept == 0
    assert sorted(shard_bytes(copy)) == ["train-00000-of-00002.tfrecord",
                                         "train-00001-of-00002.tfrecord",
                                         "val-00000-of-00001.tfrecord"]


def test_damaged_index_and_resized_shard_are_one_line_errors(packed, tmp_path):
    copy = shutil.copytree(packed[1], tmp_path / "out")
    shard = copy / "train-00001-of-00005.tfrecord"
    shard.write_bytes(shard.read_bytes() + b"x")
    with pytest.raises(VitcliError, match=r"is [\d,]+ bytes, its index says"):
        open_source(DataConfig(source=str(copy)))
    index = copy / "vitcli-packed.json"
    index.write_text(index.read_text()[:-20])
    with pytest.raises(VitcliError, match="damaged packed index") as error:
        open_source(DataConfig(source=str(copy)))
    assert "\n" not in error.value.message
    record = json.loads(tf.io.gfile.GFile(f"{packed[1]}/vitcli-packed.json").read())
    record["splits"]["train"]["examples"] += 1
    index.write_text(json.dumps(record))
    with pytest.raises(VitcliError, match="split train: its example count"):
        open_source(DataConfig(source=str(copy)))


def test_a_corrupt_record_is_an_error_not_lost_examples(packed, tmp_path):
    copy = shutil.copytree(packed[1], tmp_path / "out")
    shard = copy / "train-00001-of-00005.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the record's checksum can tell
    shard.write_bytes(bytes(data))
    split = open_source(DataConfig(source=str(copy))).split("train")
    config = DataConfig(train_crop="resize")
    with pytest.raises(tf.errors.DataLossError):
        for _ in pipeline.eval_dataset(split, config, image_size=8, batch_size=4):
            pass
    with pytest.raises(tf.errors.DataLossError):
        for _ in pipeline.train_dataset(split, config, image_size=8, batch_size=4,
                                        num_classes=3, seed=0).take(12):
            pass


def test_pack_to_and_read_from_ram(packed):
    folder = packed[0]
    out = f"ram://packed-{uuid.uuid4().hex}/out"
    pack_folder(folder, out, DataConfig(source=folder), shards=3)
    assert parse_source(out).kind == PACKED
    source = open_source(DataConfig(source=out))
    reference = open_source(DataConfig(source=folder))
    for name in ("train", "val"):
        assert examples(source.split(name)) == examples(reference.split(name))
    config = DataConfig(shuffle_buffer=4)
    assert stream(source.split("train"), 30, config, start=10) == stream(
        source.split("train"), 40, config)[10:]
    again = pack_folder(folder, out, DataConfig(source=folder), shards=3)
    assert (again.written, again.kept) == (0, 4)


def test_a_pack_stopped_by_an_error_resumes_where_it_stopped(packed, tmp_path):
    folder, out = packed
    split_files = open_source(DataConfig(source=folder)).split("train").files
    victim = split_files[2]  # the first example of train shard 2 (of 5, dealt in turn)
    shutil.copy2(victim, tmp_path / "kept")  # its bytes and mtime, to put it back unchanged

    def vanish(stage, done, total):
        if stage == "pack" and done == 0:  # checked, planned: now the file goes away
            os.remove(victim)

    with pytest.raises(VitcliError, match=r"cannot read .*/a/003\.png: No such file"):
        pack_folder(folder, str(tmp_path / "out"), DataConfig(source=folder), shards=SHARDS,
                    workers=1, progress=vanish)
    left = sorted(tf.io.gfile.listdir(tmp_path / "out"))
    assert left == [".pack-plan.json", "train-00000-of-00005.tfrecord",
                    "train-00001-of-00005.tfrecord"]  # no index, no temporary
    shutil.copy2(tmp_path / "kept", victim)
    result = pack_folder(folder, str(tmp_path / "out"), DataConfig(source=folder),
                         shards=SHARDS)
    assert (result.written, result.kept) == (4, 2)
    assert shard_bytes(tmp_path / "out") == shard_bytes(out)


def test_unusable_files_are_left_out_and_listed(tmp_path):
    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    (tmp_path / "data" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    config = DataConfig(source=str(tmp_path / "data"), val_split="0")
    result = pack_folder(config.source, str(tmp_path / "out"), config)
    assert result.examples == {"train": 6} and len(result.skipped) == 1
    index = json.loads((tmp_path / "out" / "vitcli-packed.json").read_text())
    assert [path for path, _ in index["skipped"]] == ["a/broken.png"]
    assert index["settings"] == {"val_split": "0", "strict": False, "shards": None}
    with pytest.raises(VitcliError, match="unusable file"):
        pack_folder(config.source, str(tmp_path / "strict"),
                    DataConfig(source=config.source, strict=True))


def test_out_inside_the_folder_is_refused(packed):
    folder = packed[0]
    with pytest.raises(VitcliError, match="inside the folder being packed"):
        pack_folder(folder, f"{folder}/packed", DataConfig(source=folder))
    assert not os.path.exists(f"{folder}/packed")
