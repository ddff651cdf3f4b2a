"""Paths on TensorFlow's file systems (vitcli.storage) and the atomic writes on them
(vitcli.files), on the in-process `ram://` file system."""

from __future__ import annotations

import itertools
from pathlib import Path, PurePosixPath

import pytest
import tensorflow as tf

from vitcli.files import local_temporary, move_into_place, upload_order, write_atomically
from vitcli.storage import (
    RemotePath,
    copy_file,
    files_below,
    is_url,
    local_copy,
    location,
    os_errors,
    remove_tree,
)

_counter = itertools.count()


@pytest.fixture
def ram():
    """A fresh folder on ram://, removed afterwards."""
    root = location(f"ram://storage-test-{next(_counter)}")
    root.mkdir(parents=True, exist_ok=True)
    yield root
    remove_tree(root)


def test_location_tells_local_paths_from_urls(tmp_path):
    assert location(str(tmp_path)) == tmp_path and isinstance(location(str(tmp_path)), Path)
    assert location("~/x") == Path.home() / "x"
    assert isinstance(location("gs://bucket/a"), RemotePath)
    # Web addresses are downloads (vitcli.weights.hub), not file systems.
    assert not is_url("https://example.com/a.npz") and not is_url("http://x/y")
    assert is_url("gs://b/x") and is_url("ram://x") and not is_url("runs/x")


def test_remote_path_arithmetic():
    path = location("gs://bucket//runs/flowers/")
    assert str(path) == "gs://bucket/runs/flowers"
    assert str(path / "checkpoints" / "state.npz") == "gs://bucket/runs/flowers/checkpoints/state.npz"
    model = path / "model.keras"
    assert (model.name, model.stem, model.suffix) == ("model.keras", "model", ".keras")
    assert model.parent == path and path.parent.parent == location("gs://bucket")
    # The bucket is the root: no parent above it (Cloud Storage has no "gs://" to ask about).
    assert location("gs://bucket").parent == location("gs://bucket")
    assert model.parents == [path, path.parent, location("gs://bucket")]
    assert model.with_suffix(".npz") == path / "model.npz"
    assert model.relative_to("gs://bucket") == PurePosixPath("runs/flowers/model.keras")
    assert path in model.parents and location("gs://bucket") in model.parents
    with pytest.raises(ValueError):
        model.relative_to("gs://other")
    assert location("gs://a/b") != location("gs://a/c") and {path, path} == {path}


def test_remote_files_and_folders(ram):
    folder = ram / "a" / "b"
    with pytest.raises(FileNotFoundError):
        folder.mkdir()  # no parents without parents=True
    folder.mkdir(parents=True)
    (folder / "x.txt").write_text("héllo")
    (folder / "y.bin").write_bytes(b"\0\1\2")
    assert (folder / "x.txt").read_text() == "héllo"
    assert (folder / "y.bin").read_bytes() == b"\0\1\2"
    assert (folder / "x.txt").stat().st_size == len("héllo".encode())
    assert folder.is_dir() and not folder.is_file() and (folder / "x.txt").is_file()
    assert [entry.name for entry in folder.iterdir()] == ["x.txt", "y.bin"]
    assert [entry.name for entry in folder.glob("*.txt")] == ["x.txt"]
    assert files_below(ram) == ["a/b/x.txt", "a/b/y.bin"]
    (folder / "x.txt").replace(folder / "z.txt")
    assert files_below(ram) == ["a/b/y.bin", "a/b/z.txt"]
    (folder / "z.txt").unlink()
    with pytest.raises(FileNotFoundError):
        (folder / "z.txt").unlink()
    (folder / "z.txt").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        (folder / "missing.txt").read_text()


def test_tensorflow_errors_become_os_errors(ram):
    with pytest.raises(FileNotFoundError), os_errors(ram / "nothing"):
        tf.io.gfile.GFile(str(ram / "nothing"), "rb").read()


def test_files_below_a_local_folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_text("c")
    (tmp_path / "d.txt").write_text("d")
    assert files_below(tmp_path) == ["a/b/c.txt", "d.txt"]


def test_local_copy_downloads_files_and_folders(ram, tmp_path):
    (ram / "m" / "variables").mkdir(parents=True)
    (ram / "m" / "variables" / "v").write_bytes(b"weights")
    (ram / "m" / "saved_model.pb").write_bytes(b"graph")
    with local_copy(ram / "m") as local:
        assert isinstance(local, Path) and files_below(local) == ["saved_model.pb", "variables/v"]
        assert (local / "variables" / "v").read_bytes() == b"weights"
    assert not local.exists()  # removed after the block
    with local_copy(tmp_path) as same:
        assert same == tmp_path  # a local path is used as it is


def test_write_atomically_publishes_a_whole_file(ram):
    target = ram / "runs" / "config.yaml"
    write_atomically(target, lambda temporary: Path(temporary).write_text("one"))
    assert target.read_text() == "one"
    rotated = []
    write_atomically(target, lambda temporary: Path(temporary).write_text("two"),
                     before_replace=lambda: rotated.append(target.read_text()))
    assert target.read_text() == "two" and rotated == ["one"]
    assert files_below(ram) == ["runs/config.yaml"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(ram):
    target = ram / "state.npz"
    target.write_bytes(b"old")

    def fail(temporary):
        Path(temporary).write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomically(target, fail)
    assert target.read_bytes() == b"old" and files_below(ram) == ["state.npz"]


def test_a_folder_is_published_with_its_finishing_file_last(ram):
    names = ["saved_model.pb", "variables/variables.index", "assets/labels.txt",
             "fingerprint.pb"]
    assert upload_order(names)[-1] == "saved_model.pb"
    assert upload_order(names)[:-1] == [name for name in names if name != "saved_model.pb"]
    with local_temporary("export") as temporary:
        (temporary / "variables").mkdir(parents=True)
        (temporary / "variables" / "variables.index").write_bytes(b"index")
        (temporary / "saved_model.pb").write_bytes(b"graph")
        (ram / "serving" / "1").mkdir(parents=True)
        (ram / "serving" / "1" / "stale.txt").write_text("from before")
        move_into_place(temporary, ram / "serving" / "1")
    assert files_below(ram / "serving") == ["1/saved_model.pb", "1/variables/variables.index"]


def test_copy_file_between_file_systems(ram, tmp_path):
    (tmp_path / "a.txt").write_text("local")
    copy_file(tmp_path / "a.txt", ram / "a.txt")
    copy_file(ram / "a.txt", tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_text() == "local"
