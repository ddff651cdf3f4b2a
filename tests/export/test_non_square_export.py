"""A non-square (height x width) model's SavedModel: its serving signature decodes JPEGs and
PNGs of any shape and resizes (or centre-crops) them to height x width, in a fresh process,
with the Keras model's probabilities on the same preprocessed input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support.export import LABELS, TINY, TOP_K, keras_probabilities, run_python
from tests.support.models import randomise_weights
from vitcli.data import ops
from vitcli.export import export_model
from vitcli.models.vit import build_vit

SIZE = (24, 40)  # height x width: a 3 x 5 grid of 8-pixel patches
TOLERANCE = 1e-5

SERVE = """
import sys
import numpy as np
import tensorflow as tf
folder, images_path, pixels_path, outputs_path = sys.argv[1:]
with np.load(images_path) as archive:
    images = [archive[key].tobytes() for key in sorted(archive.files)]
loaded = tf.saved_model.load(folder)
by_images = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
by_pixels = loaded.signatures["predict_pixels"](pixels=tf.constant(np.load(pixels_path)))
np.savez(outputs_path, images=by_images["probabilities"].numpy(),
         pixels=by_pixels["probabilities"].numpy())
"""


@pytest.fixture(scope="module")
def wide_model():
    model = build_vit(TINY.replace(image_size=SIZE, name="wide_export"))
    randomise_weights(model, seed=3)
    return model


def _jpegs() -> list[bytes]:
    """Non-square JPEGs (and a PNG), none of the model's shape: one tall, one wide."""
    rng = np.random.default_rng(5)
    shapes = ((61, 29, 3), (30, 90, 3), (24, 40, 3))
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    return [tf.io.encode_jpeg(images[0], quality=90).numpy(),
            tf.io.encode_jpeg(images[1], quality=90).numpy(), tf.io.encode_png(images[2]).numpy()]


@pytest.mark.parametrize("eval_crop", ["resize", "center"])
def test_non_square_savedmodel_serves_non_square_images(wide_model, eval_crop, tmp_path):
    result = export_model(wide_model, "savedmodel", tmp_path / "served", labels=LABELS,
                          top_k=TOP_K, eval_crop=eval_crop)
    assert result.max_abs_diff <= 1e-4  # vitcli's own fresh-process verification
    images = _jpegs()
    np.savez(tmp_path / "images.npz", **{f"image_{index}": np.frombuffer(image, np.uint8)
                                         for index, image in enumerate(images)})
    pixels = np.random.default_rng(9).uniform(0, 255, (2, *SIZE, 3)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    run_python(SERVE, str(result.path), str(tmp_path / "images.npz"),
               str(tmp_path / "pixels.npy"), str(tmp_path / "outputs.npz"))
    outputs = dict(np.load(tmp_path / "outputs.npz"))
    transform = ops.eval_transform(eval_crop, SIZE)
    prepared = np.stack([transform(ops.decode_image(image)).numpy() for image in images])
    assert prepared.shape == (3, *SIZE, 3)
    np.testing.assert_allclose(outputs["images"], keras_probabilities(wide_model, prepared),
                               atol=TOLERANCE)
    np.testing.assert_allclose(outputs["pixels"], keras_probabilities(wide_model, pixels),
                               atol=TOLERANCE)


def test_center_crop_keeps_the_middle_at_height_x_width():
    # a 40 x 40 image with a bright central 8 x 8 square: the 24 x 40 crop keeps it centred
    image = np.zeros((40, 40, 3), np.uint8)
    image[16:24, 16:24] = 255
    cropped = ops.resize_small_center_crop(tf.constant(image), SIZE).numpy()
    assert cropped.shape == (*SIZE, 3)
    rows, columns = np.nonzero(cropped[..., 0] > 128)
    assert abs(rows.mean() - (SIZE[0] - 1) / 2) < 1 and abs(columns.mean() - (SIZE[1] - 1) / 2) < 1
