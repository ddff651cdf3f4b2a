"""TensorFlow's own `gs://` file system against the local emulator (tests/support/gcs_emulator.py):
the objects really land in the emulator, and every gfile operation vitcli uses works there, in
this process and in a subprocess. Skipped when gcp-storage-emulator is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
import tensorflow as tf

from tests.support.gcs_emulator import gcs_environ

gfile = tf.io.gfile


def emulator_object_names(emulator, prefix: str) -> list[str]:
    """The object names under `prefix` as the emulator's JSON API lists them (no TF, no proxy)."""
    query = urllib.parse.urlencode({"prefix": prefix})
    url = f"{emulator.emulator_url}/storage/v1/b/{emulator.bucket}/o?{query}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return sorted(item["name"] for item in json.load(response).get("items", []))


def test_written_objects_live_in_the_emulator(gcs_emulator, gcs_root):
    with gfile.GFile(f"{gcs_root}/note.txt", "w") as handle:
        handle.write("hello")
    prefix = gcs_root.removeprefix(gcs_emulator.root + "/")
    assert emulator_object_names(gcs_emulator, prefix) == [f"{prefix}/note.txt"]


def test_write_read_exists_stat(gcs_root):
    payload = os.urandom(2 * 1024 * 1024 + 17)  # over 1 MiB: curl's chunked upload path
    path = f"{gcs_root}/blob.bin"
    with gfile.GFile(path, "wb") as handle:
        handle.write(payload)
    with gfile.GFile(path, "rb") as handle:
        assert handle.read() == payload
    assert gfile.exists(path) and not gfile.isdir(path)
    assert gfile.stat(path).length == len(payload) and not gfile.stat(path).is_directory
    assert not gfile.exists(f"{gcs_root}/missing.bin")
    with pytest.raises(tf.errors.NotFoundError):
        gfile.stat(f"{gcs_root}/missing.bin")


def test_makedirs_listdir_glob_walk(gcs_root):
    gfile.makedirs(f"{gcs_root}/a/b")
    assert gfile.isdir(f"{gcs_root}/a") and gfile.isdir(f"{gcs_root}/a/b")
    for name in ("a/one.txt", "a/two.txt", "a/b/three.txt"):
        with gfile.GFile(f"{gcs_root}/{name}", "w") as handle:
            handle.write(name)
    assert sorted(name.rstrip("/") for name in gfile.listdir(f"{gcs_root}/a")) == [
        "b", "one.txt", "two.txt"]
    assert sorted(gfile.glob(f"{gcs_root}/a/*.txt")) == [
        f"{gcs_root}/a/one.txt", f"{gcs_root}/a/two.txt"]
    assert gfile.glob(f"{gcs_root}/*/b/*.txt") == [f"{gcs_root}/a/b/three.txt"]
    files = sorted(name for _, _, names in gfile.walk(gcs_root) for name in names)
    assert files == ["one.txt", "three.txt", "two.txt"]


def test_copy_rename_remove_rmtree(gcs_root):
    gfile.makedirs(f"{gcs_root}/src/inner")
    for name in ("src/x.txt", "src/inner/y.txt"):
        with gfile.GFile(f"{gcs_root}/{name}", "w") as handle:
            handle.write(name)
    gfile.copy(f"{gcs_root}/src/x.txt", f"{gcs_root}/copy.txt")
    gfile.rename(f"{gcs_root}/copy.txt", f"{gcs_root}/moved.txt")
    assert not gfile.exists(f"{gcs_root}/copy.txt")
    assert gfile.GFile(f"{gcs_root}/moved.txt").read() == "src/x.txt"

    gfile.rename(f"{gcs_root}/src", f"{gcs_root}/dst")
    assert not gfile.exists(f"{gcs_root}/src")
    assert gfile.GFile(f"{gcs_root}/dst/inner/y.txt").read() == "src/inner/y.txt"

    gfile.remove(f"{gcs_root}/moved.txt")
    assert not gfile.exists(f"{gcs_root}/moved.txt")
    gfile.rmtree(f"{gcs_root}/dst")
    assert not gfile.exists(f"{gcs_root}/dst")
    assert gfile.glob(f"{gcs_root}/**") == []


def test_tfrecords_and_read_file(gcs_root):
    path = f"{gcs_root}/data.tfrecord"
    records = [f"record {index}".encode() for index in range(50)]
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    assert [item.numpy() for item in tf.data.TFRecordDataset(path)] == records
    with gfile.GFile(path, "rb") as handle:
        assert tf.io.read_file(path).numpy() == handle.read()


def test_a_subprocess_uses_the_same_bucket(gcs_emulator, gcs_root):
    code = ("import sys, tensorflow as tf\n"
            "with tf.io.gfile.GFile(sys.argv[1], 'w') as f: f.write('from a subprocess')\n")
    path = f"{gcs_root}/child.txt"
    subprocess.run([sys.executable, "-c", code, path], env=gcs_environ(gcs_emulator),
                   check=True, capture_output=True, timeout=300)
    assert gfile.GFile(path).read() == "from a subprocess"
