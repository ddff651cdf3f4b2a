"""`vitcli weights ...` driven as a user would, through the real CLI."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
import zipfile

import numpy as np
import pytest

from tests.reference.numpy_vit import random_checkpoint
from tests.support.checkpoints import CHECKPOINT_SHAPES
from tests.support.cli import invoke

TINY = CHECKPOINT_SHAPES["token"]  # width 32, depth 2, 4 heads, a 4x4 grid at 32 px, 5 classes


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    np.savez(path, **random_checkpoint(0, representation_size=32, **TINY))
    return path


def test_weights_info_reads_architecture_from_file(tiny_npz):
    result = invoke("weights", "info", str(tiny_npz), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    shape = (info["hidden_size"], info["depth"], info["num_heads"], info["mlp_dim"])
    assert shape == (32, 2, 4, 64)
    assert (info["patch_size"], info["image_size"], info["grid"]) == (8, 32, 4)
    assert (info["num_classes"], info["representation_size"]) == (5, 32)
    assert info["classifier"] == "token" and info["resnet"] is None


def test_weights_convert_resizes_and_replaces_head(tiny_npz, tmp_path):
    out = tmp_path / "tiny-48.keras"
    result = invoke("weights", "convert", str(tiny_npz), "--out", str(out), "--res", "48",
                    "--num-classes", "3")
    assert result.exit_code == 0, result.output
    assert "position embeddings 4x4 -> 6x6" in result.stdout
    assert "pre-logits" in result.stdout
    import vitcli

    model = vitcli.load_checkpoint(out)
    assert model.input_shape[1:] == (48, 48, 3)
    head = model.get_layer("head")
    assert head.units == 3 and not np.any(head.kernel.numpy())
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_weights_convert_to_npz_round_trips(tiny_npz, tmp_path):
    out = tmp_path / "again.npz"
    assert invoke("weights", "convert", str(tiny_npz), "--out", str(out)).exit_code == 0
    with np.load(tiny_npz) as original, np.load(out) as written:
        assert sorted(original.files) == sorted(written.files)
        for key in original.files:
            assert np.array_equal(original[key], written[key]), key


def _bad_files(tmp_path) -> dict:
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, **random_checkpoint(0, **TINY))
    truncated.write_bytes(truncated.read_bytes()[:500])
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, cls=np.array([{"a": 1}], dtype=object))
    partial = tmp_path / "partial.npz"
    arrays = random_checkpoint(0, **TINY)
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
    np.savez(partial, **arrays)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, foo=np.zeros(3))
    return {"notes.npz": text, "truncated.npz": truncated, "pickled": pickled,
            "lacks 1 arrays": partial, "not a ViT checkpoint": foreign,
            "does not exist": tmp_path / "missing.npz"}


@pytest.mark.parametrize("command", ["info", "convert"])
def test_bad_checkpoints_give_one_line_errors(tmp_path, command):
    for expected, path in _bad_files(tmp_path).items():
        args = ["weights", command, str(path)]
        if command == "convert":
            args += ["--out", str(tmp_path / "out.keras")]
        result = invoke(*args)
        assert result.exit_code == 1, (expected, result.output)
        assert "Traceback" not in result.output
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and expected in error_lines[0], result.stderr
        assert not (tmp_path / "out.keras").exists()


def test_zip_that_is_not_numpy_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    result = invoke("weights", "info", str(path))
    assert result.exit_code == 1 and "error:" in result.stderr


@pytest.fixture
def file_server(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_weights_download_from_url_into_cache(file_server, monkeypatch, tmp_path_factory):
    served, base = file_server
    (served / "tiny.npz").write_bytes(b"0123456789" * 1000)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("VITCLI_HOME", str(home))
    result = invoke("weights", "download", f"{base}/tiny.npz")
    assert result.exit_code == 0, result.output
    cached = list(home.rglob("tiny.npz"))
    assert len(cached) == 1 and cached[0].read_bytes() == b"0123456789" * 1000


def test_weights_download_offline_fails_fast_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("VITCLI_HOME", str(tmp_path))
    start = time.monotonic()
    result = invoke("weights", "download", "http://127.0.0.1:9/vit.npz")
    assert time.monotonic() - start < 10
    assert result.exit_code == 1
    line = " ".join(result.stderr.split())
    assert "http://127.0.0.1:9/vit.npz" in line and f"put the file at {tmp_path}" in line
    assert "--weights FILE" in line


def test_unknown_named_checkpoint_suggests_names(monkeypatch, tmp_path):
    monkeypatch.setenv("VITCLI_HOME", str(tmp_path))
    result = invoke("weights", "download", "vit-b16-i21")
    assert result.exit_code == 1 and "vit-b16-i21k" in result.stderr


def test_single_npy_array_is_refused(tmp_path):
    path = tmp_path / "array.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3))
    result = invoke("weights", "info", str(path))
    assert result.exit_code == 1 and "single .npy array" in result.stderr
