"""Loading and saving checkpoints: exact round trips (.npz and .keras), replacing the head, and
bad files refused with one VitcliError line that names the problem, leaving the disk as it was."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

import vitcli
from tests.support.checkpoints import (
    CHECKPOINT_SHAPES,
    PARITY_KINDS,
    POSEMB_KEY,
    official_checkpoint,
)
from tests.support.checks import disk_snapshot, vitcli_error
from tests.support.models import logits, random_images, weights_by_path

HEAD_KEYS = {"head/kernel", "head/bias"}
PRE_LOGITS_KEYS = {"pre_logits/kernel", "pre_logits/bias"}
MLP_KERNEL = "Transformer/encoderblock_{}/MlpBlock_3/Dense_0/kernel"


def read_all(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PARITY_KINDS)
def test_npz_round_trip_is_bit_exact(kind, checkpoint_file, tmp_path):
    model = vitcli.load_checkpoint(checkpoint_file(kind))
    saved = vitcli.save_npz(model, tmp_path / "saved.npz")
    original, written = read_all(checkpoint_file(kind)), read_all(saved)
    assert sorted(written) == sorted(original)
    for key, value in original.items():
        assert written[key].dtype == np.float32, key
        assert np.array_equal(written[key], value), key
    assert [path.name for path in tmp_path.iterdir()] == ["saved.npz"]  # no temporary left


def test_save_npz_of_a_mixed_precision_model_is_still_exact_float32(checkpoint_file, tmp_path):
    model = vitcli.load_checkpoint(checkpoint_file("hybrid"), dtype="mixed_bfloat16")
    written = read_all(vitcli.save_npz(model, tmp_path / "saved.npz"))
    for key, value in read_all(checkpoint_file("hybrid")).items():
        assert written[key].dtype == np.float32 and np.array_equal(written[key], value), key


def test_save_npz_replaces_an_existing_file(checkpoint_file, tmp_path):
    target = tmp_path / "model.npz"
    target.write_bytes(b"old contents")
    vitcli.save_npz(vitcli.load_checkpoint(checkpoint_file("token")), target)
    assert read_all(target).keys() == read_all(checkpoint_file("token")).keys()


@pytest.mark.parametrize("kind", ["token", "hybrid"])
def test_keras_file_round_trip_keeps_weights_and_outputs(kind, checkpoint_file, tmp_path):
    model = vitcli.load_checkpoint(checkpoint_file(kind))
    model.save(tmp_path / "m.keras")
    reloaded, report = vitcli.load_checkpoint_with_report(tmp_path / "m.keras")
    expected = weights_by_path(model)
    actual = weights_by_path(reloaded)
    assert actual.keys() == expected.keys()
    for path, value in expected.items():
        assert np.array_equal(actual[path], value), path
    images = random_images(CHECKPOINT_SHAPES[kind]["image_size"])
    np.testing.assert_array_equal(logits(reloaded, images), logits(model, images))
    assert report.lines() == []


def test_keras_file_loads_at_new_resolution_with_new_head(checkpoint_file, tmp_path):
    vitcli.load_checkpoint(checkpoint_file("grid4")).save(tmp_path / "m.keras")
    model, report = vitcli.load_checkpoint_with_report(tmp_path / "m.keras", image_size=96,
                                                       num_classes=3)
    original = official_checkpoint("grid4")
    np.testing.assert_array_equal(model.get_layer("posembed_input").pos_embedding.numpy(),
                                  vitcli.resize_posemb(original[POSEMB_KEY], 6))
    np.testing.assert_array_equal(model.get_layer("head").kernel.numpy(), np.zeros((32, 3)))
    np.testing.assert_array_equal(model.get_layer("embedding").kernel.numpy(),
                                  original["embedding/kernel"])
    assert logits(model, random_images(96)).shape == (2, 3)
    assert any("4x4 -> 6x6" in line for line in report.lines())
    assert any("head" in line and "3" in line for line in report.lines())


def test_keras_file_loads_under_mixed_precision(checkpoint_file, tmp_path):
    vitcli.load_checkpoint(checkpoint_file("token")).save(tmp_path / "m.keras")
    model = vitcli.load_checkpoint(tmp_path / "m.keras", dtype="mixed_bfloat16")
    assert model.get_layer("encoderblock_0").compute_dtype == "bfloat16"
    assert np.isfinite(logits(model, random_images(32))).all()


# -- num_classes replaces the head ------------------------------------------------------------


def test_num_classes_replaces_head_and_drops_pre_logits(checkpoint_file, tmp_path):
    model, report = vitcli.load_checkpoint_with_report(checkpoint_file("pre_logits"),
                                                       num_classes=7)
    hidden = CHECKPOINT_SHAPES["pre_logits"]["hidden_size"]
    head = model.get_layer("head")
    np.testing.assert_array_equal(head.kernel.numpy(), np.zeros((hidden, 7)))
    np.testing.assert_array_equal(head.bias.numpy(), np.zeros(7))
    assert "pre_logits" not in [layer.name for layer in model.layers]

    original = official_checkpoint("pre_logits")
    kept = read_all(vitcli.save_npz(model, tmp_path / "new.npz"))
    assert set(kept) == set(original) - PRE_LOGITS_KEYS
    for key in set(kept) - HEAD_KEYS:
        assert np.array_equal(kept[key], original[key]), key

    lines = report.lines()
    assert any("head" in line and "5" in line and "7" in line for line in lines)
    assert any("pre-logits" in line and "dropped" in line for line in lines)


def test_num_classes_without_pre_logits_reports_only_the_head(checkpoint_file):
    model, report = vitcli.load_checkpoint_with_report(checkpoint_file("token"), num_classes=3)
    assert len(report.lines()) == 1 and "head" in report.lines()[0]
    np.testing.assert_array_equal(logits(model, random_images(32)), np.zeros((2, 3)))


# -- bad checkpoints ---------------------------------------------------------------------------


def write_npz(arrays):
    def write(path):
        np.savez(path, **arrays)
    return write


def without(key):
    arrays = official_checkpoint("token")
    del arrays[key]
    return write_npz(arrays)


def replaced(key, value):
    return write_npz({**official_checkpoint("token"), key: value})


def truncated(path):
    np.savez(path, **official_checkpoint("token"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])


def crc_corrupted(path):
    np.savez(path, **official_checkpoint("token"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def garbled_member_header(path):
    # A zip whose member is an .npy with a syntactically broken header dict.
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': ((3,), }"
    header = header.ljust(118) + b"\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cls.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                         + header + np.zeros(3, "<f4").tobytes())


def single_npy(path):
    with open(path, "wb") as handle:  # np.save(path) would append '.npy' to the name
        np.save(handle, np.zeros(3, np.float32))


def corrupt_keras(path):
    path.write_bytes(b"PK\x03\x04 this is not a keras archive" * 20)


def keras_model_that_is_not_a_vit(path):
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)


def keras_zip_with_broken_config(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("metadata.json", "{}")


# name: (file name, writer(path) or None for no file, fragments the message must contain,
#        fragments it must not contain)
BAD_FILES = {
    "missing_file": ("absent.npz", None, ["absent.npz", "exist"], []),
    "directory": ("folder.npz", lambda path: path.mkdir(), ["folder.npz"], []),
    "text_file": ("notes.npz", lambda path: path.write_text("just some text\n"),
                  ["notes.npz", "npz"], ["pickle"]),
    "empty_file": ("empty.npz", lambda path: path.write_bytes(b""), ["empty.npz"], []),
    "truncated_zip": ("cut.npz", truncated, ["cut.npz", "npz"], []),
    "corrupted_member": ("crc.npz", crc_corrupted, ["crc.npz"], []),
    "garbled_member_header": ("header.npz", garbled_member_header, ["header.npz"], []),
    "single_npy": ("single.npz", single_npy, ["single.npz", "npy"], []),
    "object_array": ("objects.npz", write_npz(
        {**official_checkpoint("token"), "meta": np.array([{"a": 1}, None], dtype=object)}),
        ["pickle"], []),
    "missing_block_array": ("short.npz", without(MLP_KERNEL.format(1)),
                            [MLP_KERNEL.format(1)], []),
    "missing_head_bias": ("nobias.npz", without("head/bias"), ["head/bias"], []),
    "extra_array": ("extra.npz", replaced("extra/array", np.zeros(3, np.float32)),
                    ["extra/array"], []),
    "wrong_shape_later_block": ("shape1.npz", replaced(MLP_KERNEL.format(1),
                                                       np.zeros((32, 48), np.float32)),
                                ["shape", MLP_KERNEL.format(1), "48"], []),
    "wrong_out_kernel_shape": ("shape2.npz", replaced(
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel",
        np.zeros((4, 8, 31), np.float32)), ["shape", "out/kernel"], []),
    "wrong_rank_first_block": ("rank.npz", replaced(MLP_KERNEL.format(0),
                                                    np.zeros(32, np.float32)),
                               [MLP_KERNEL.format(0)], []),
    "not_a_vit": ("foo.npz", write_npz({"foo": np.zeros(3, np.float32)}), ["vit"], []),
    "empty_archive": ("nothing.npz", write_npz({}), ["nothing.npz"], []),
    "corrupt_keras": ("broken.keras", corrupt_keras, ["broken.keras", ".keras"], []),
    "keras_with_broken_config": ("config.keras", keras_zip_with_broken_config,
                                 ["config.keras", ".keras"], []),
    "missing_keras": ("absent.keras", None, ["absent.keras"], []),
    "keras_not_a_vit": ("dense.keras", keras_model_that_is_not_a_vit, ["vit"], []),
}


@pytest.mark.parametrize(("file_name", "writer", "wanted", "unwanted"),
                         BAD_FILES.values(), ids=list(BAD_FILES))
def test_bad_checkpoint_is_refused_with_one_line(file_name, writer, wanted, unwanted, tmp_path):
    path = tmp_path / file_name
    if writer is not None:
        writer(path)
    np.savez(tmp_path / "neighbour.npz", **official_checkpoint("token"))
    before = disk_snapshot(tmp_path)
    message = vitcli_error(vitcli.load_checkpoint, path)
    for fragment in wanted:
        assert fragment.lower() in message, f"{fragment!r} not in {message!r}"
    for fragment in unwanted:
        assert fragment.lower() not in message, f"{fragment!r} in {message!r}"
    assert disk_snapshot(tmp_path) == before


def test_refused_load_with_options_leaves_disk_unchanged(tmp_path):
    path = tmp_path / "model.npz"
    np.savez(path, **official_checkpoint("grid4"))
    before = disk_snapshot(tmp_path)
    vitcli_error(vitcli.load_checkpoint, path, image_size=100, num_classes=3)
    assert disk_snapshot(tmp_path) == before


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from vitcli.weights.npz import write_atomically

    mask = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "file.txt",
                                lambda temporary: open(temporary, "w").close())
    finally:
        os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o644
