"""Top-k predictions for image files, batched through tf.data with the evaluation ops.

Files are judged by their content with the check training uses (`vitcli.data.index`): a
folder is indexed (cached, every visible regular file, recursively, its own top level
included), a file named on its own is checked directly. Whatever is not a usable image (not
an image, corrupt, or over the pixel limit) is skipped and reported, never decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from vitcli.data import ops
from vitcli.data.index import check_paths, index_folder
from vitcli.errors import VitcliError
from vitcli.evaluate.inference import batch_outputs

Skipped = list[tuple[str, str]]  # (file, why it is not used)


def find_images(paths: list[Path]) -> tuple[list[Path], Skipped]:
    """(the usable images named or found in the folders named, in order; the files skipped)."""
    found: list[tuple[Path, str | None]] = []
    named: list[int] = []  # positions in `found` of files named directly, checked together
    for path in paths:
        if path.is_dir():
            index = index_folder(path, top_level=True)
            found += [(path / entry.path, entry.error) for entry in index.entries]
        elif path.is_file():
            named.append(len(found))
            found.append((path, None))
        else:
            raise VitcliError(f"'{path}' does not exist")
    errors = check_paths([found[position][0] for position in named])
    for position, error in zip(named, errors, strict=True):
        found[position] = (found[position][0], error)
    usable = [file for file, error in found if error is None]
    skipped = [(str(file), error) for file, error in found if error is not None]
    if not usable:
        detail = f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped \
            else ""
        raise VitcliError("no usable images in " + ", ".join(map(str, paths)) + detail)
    return usable, skipped


def image_files(paths: list[Path]) -> list[Path]:
    """The usable images named and found (recursively) in the folders named; a file named
    directly that is not a usable image is an error, one a folder holds is left out."""
    usable, skipped = find_images(paths)
    named = {str(path) for path in paths if not path.is_dir()}
    for file, reason in skipped:
        if file in named:
            raise VitcliError(f"cannot read image '{file}': {reason}")
    return usable


def predict_files(model, paths: list[Path], labels: list[str], *, top_k: int = 5,
                  batch_size: int = 32, eval_crop: str = "resize", scores: str = "softmax",
                  threshold: float = 0.5, strategy=None) -> tuple[list[dict], Skipped]:
    """([{file, predictions: [(label, probability), ...]}], [(file, reason) skipped]) for the
    image files and folders in `paths`; `top_k` is clamped to the number of classes. With
    `scores="sigmoid"` (a multi-label model) the scores are per-class sigmoids and each row
    also has `labels`: the classes scoring at least `threshold`, highest first. `strategy`:
    a tf.distribute strategy whose replicas share each batch (None: one device)."""
    if top_k < 1:
        raise VitcliError(f"top-k must be at least 1, not {top_k}")
    files, skipped = find_images(paths)
    transform = ops.eval_transform(eval_crop, tuple(model.input_shape[1:3]))
    dataset = (tf.data.Dataset.from_tensor_slices([str(file) for file in files])
               .map(lambda path: transform(ops.decode_image(tf.io.read_file(path))),
                    num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    activation = tf.nn.sigmoid if scores == "sigmoid" else tf.nn.softmax
    probabilities = np.concatenate([
        activation(tf.cast(logits, tf.float32)).numpy()
        for logits, _ in batch_outputs(model, dataset, strategy=strategy, batch_size=batch_size)])
    k = min(top_k, probabilities.shape[-1])
    rows = []
    for file, row in zip(files, probabilities, strict=True):
        order = np.argsort(-row, kind="stable")
        rows.append({"file": str(file),
                     "predictions": [(labels[index], float(row[index])) for index in order[:k]]})
        if scores == "sigmoid":
            rows[-1]["labels"] = [labels[index] for index in order if row[index] >= threshold]
    return rows, skipped
