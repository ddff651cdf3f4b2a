"""Top-k predictions for image files, batched through tf.data with the evaluation ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from vitcli.data import ops
from vitcli.errors import VitcliError
from vitcli.evaluate.inference import forward_function

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


def image_files(paths: list[Path]) -> list[Path]:
    """The image files named, and those found (recursively) in the folders named."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(file for file in path.rglob("*")
                            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()
                            and not file.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise VitcliError(f"'{path}' does not exist")
    if not files:
        raise VitcliError("no image files found in " + ", ".join(map(str, paths)))
    return files


def _readable(path: Path) -> str | None:
    """None when TensorFlow decodes the file, else the reason it does not."""
    try:
        ops.decode_image(tf.io.read_file(str(path)))
        return None
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, ValueError) as error:
        return str(getattr(error, "message", error)).splitlines()[0]


def predict_files(model, files: list[Path], labels: list[str], *, top_k: int = 5,
                  batch_size: int = 32, eval_crop: str = "resize"):
    """([{file, predictions: [(label, probability), ...]}], [(file, reason) skipped])."""
    skipped = [(str(file), reason) for file in files if (reason := _readable(file))]
    good = [str(file) for file in files if str(file) not in dict(skipped)]
    transform = ops.eval_transform(eval_crop, model.input_shape[1])
    dataset = (tf.data.Dataset.from_tensor_slices(good)
               .map(lambda path: transform(ops.decode_image(tf.io.read_file(path))),
                    num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch_size).prefetch(tf.data.AUTOTUNE)) if good else []
    forward = forward_function(model)
    probabilities = [tf.nn.softmax(tf.cast(forward(images), tf.float32)).numpy()
                     for images in dataset]
    probabilities = np.concatenate(probabilities) if probabilities else np.zeros((0, 1))
    k = min(top_k, probabilities.shape[-1])
    rows = []
    for path, row in zip(good, probabilities, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        rows.append({"file": path,
                     "predictions": [(labels[index], float(row[index])) for index in order]})
    return rows, skipped
