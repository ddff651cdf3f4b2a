"""`vitcli inspect` end to end on a tiny saved model and a few generated images."""

from __future__ import annotations

import csv
from functools import partial

import numpy as np
import pytest
from PIL import Image

from tests.support import cli

invoke = partial(cli.invoke, "inspect")  # `vitcli inspect ARGS`


def assert_png(path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200
        assert np.asarray(image.convert("L")).std() > 5  # not a blank canvas


def test_attention_writes_one_rollout_per_image_and_layer_maps(tiny_model_file, image_folder,
                                                               tmp_path):
    images = [image_folder / "left" / "0.png", image_folder / "right" / "0.png"]
    result = invoke("attention", tiny_model_file, *images, "--out", tmp_path, "--layers",
                    "--batch", 1)
    assert result.exit_code == 0, result.output
    # Two files share the stem "0": the second is numbered rather than overwriting the first.
    for stem in ("0", "0-2"):
        assert_png(tmp_path / f"{stem}_attention.png")
        assert_png(tmp_path / f"{stem}_layers.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "0-2_attention.png", "0-2_layers.png", "0_attention.png", "0_layers.png"]


def test_posemb_and_filters(tiny_model_file, tmp_path):
    assert invoke("posemb", tiny_model_file, "--out", tmp_path).exit_code == 0
    assert_png(tmp_path / "posemb.png")
    result = invoke("filters", tiny_model_file, "--out", tmp_path, "--components", 14)
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "filters.png")


def test_distance_writes_a_csv_per_head_and_layer(tiny_model_file, image_folder, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv("VITCLI_HOME", str(tmp_path / "home"))  # the folder index cache
    result = invoke("distance", tiny_model_file, "--data", image_folder, "--out",
                    tmp_path / "out", "--images", 3, "--split", "train", "--batch", 2)
    assert result.exit_code == 0, result.output
    assert "over 3 images" in result.output
    assert f"wrote {tmp_path / 'out' / 'distance.csv'}" in result.output
    assert_png(tmp_path / "out" / "distance.png")
    with open(tmp_path / "out" / "distance.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(row["layer"]), int(row["head"])) for row in rows] == [
        (layer, head) for layer in range(6) for head in range(3)]
    # A 4 x 4 grid of 8-pixel patches: distances lie between 0 and the diagonal.
    assert all(0 <= float(row["distance_px"]) <= 8 * 3 * 2**0.5 for row in rows)


@pytest.mark.parametrize("arguments, message", [
    (("distance", "{model}", "--out", "{out}"), "give --data"),
    (("filters", "{hybrid}", "--out", "{out}"), "do not apply to hybrid"),
    (("attention", "{model}", "{out}/missing.png", "--out", "{out}"), "does not exist"),
])
def test_errors_are_one_line(arguments, message, tiny_model_file, hybrid_model, tmp_path):
    hybrid_file = tmp_path / "hybrid.keras"
    hybrid_model.save(hybrid_file)
    values = {"model": tiny_model_file, "hybrid": hybrid_file, "out": tmp_path}
    result = invoke(*(argument.format(**values) for argument in arguments))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not list(tmp_path.glob("*.png"))
