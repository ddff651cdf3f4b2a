"""Classify images through an exported SavedModel, exactly as TF Serving would run it.

Loads `SERVING_DIR/<latest version>` with plain TensorFlow (no vitcli), sends the encoded
image bytes of every image under IMAGE_DIR/<class>/ to the `serving_default` signature,
and prints the accuracy against the folder names.

    python examples/classify_savedmodel.py demo/serving examples/data/fashion-mnist/test
"""

from __future__ import annotations

import sys
from pathlib import Path

import tensorflow as tf

BATCH = 64


def latest_version(serving_dir: Path) -> Path:
    versions = [path for path in serving_dir.iterdir() if path.name.isdigit()]
    return max(versions, key=lambda path: int(path.name))


def labelled_images(image_dir: Path) -> list[tuple[Path, str]]:
    return [
        (path, class_dir.name)
        for class_dir in sorted(image_dir.iterdir())
        if class_dir.is_dir()
        for path in sorted(class_dir.rglob("*.png"))
    ]


def main(serving_dir: str, image_dir: str) -> None:
    version = latest_version(Path(serving_dir))
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    input_name = next(iter(serve.structured_input_signature[1]))
    examples = labelled_images(Path(image_dir))
    correct = 0
    for start in range(0, len(examples), BATCH):
        chunk = examples[start : start + BATCH]
        encoded = tf.constant([path.read_bytes() for path, _ in chunk])
        outputs = serve(**{input_name: encoded})
        predicted = [label.decode() for label in outputs["top_k_labels"][:, 0].numpy()]
        correct += sum(guess == truth for guess, (_, truth) in zip(predicted, chunk, strict=True))
    print(
        f"SavedModel {version}: {correct}/{len(examples)} = {correct / len(examples):.2%} "
        "test top-1 through serving_default (encoded PNG bytes in)"
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
