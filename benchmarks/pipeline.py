"""Does vitcli's input pipeline keep up with training? Images/s of the pipeline alone vs training.

For each setting, in one process with the benchmark's thread settings (TF intra-op 2,
inter-op 1; tf.data's own pool at its default, one thread per core):

1. the pipeline alone: `vitcli.data.pipeline.train_dataset` (read, decode, inception crop and
   resize, flip, one-hot, batch, prefetch; the defaults of `vitcli finetune`) iterated without a
   model, images/s over the timed batches;
2. vitcli's training step (fp32, no XLA, SGD momentum) on one synthetic batch held in memory;
3. the same training step fed by the pipeline, the way `vitcli finetune` feeds it
   (`strategy.distribute_datasets_from_function`): the pipeline and the model now share the
   2 cores, so this shows what the pipeline really costs training.

Settings: the bundled Fashion-MNIST images (28 px PNG) at 28 px with vit-mu7; the same images
upscaled by the pipeline to 224 px with vit-ti16; and a generated folder of 224 px JPEGs
(in /tmp) at 224 px with vit-ti16.

    .venv-bench/bin/python benchmarks/pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from machine import LoadMeter, wait_until_quiet

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUNDLED = REPO / "examples" / "data" / "fashion-mnist"
BATCH = 32
THREADS = 2


@dataclass(frozen=True)
class Setting:
    name: str
    source: str  # "bundled" or "jpeg224"
    image_size: int
    model: str
    pipeline_batches: int  # timed batches per repeat of the pipeline alone
    train_steps: int  # timed training steps (synthetic and fed)


# Enough timed batches for a few seconds of pipeline work per repeat (a shorter window mostly
# measures the prefetch buffer).
FULL = [Setting("bundled 28 px", "bundled", 28, "vit-mu7", 300, 30),
        Setting("bundled upscaled to 224 px", "bundled", 224, "vit-ti16", 150, 4),
        Setting("224 px JPEG folder", "jpeg224", 224, "vit-ti16", 100, 4)]
QUICK = [Setting("bundled 28 px", "bundled", 28, "vit-mu7", 150, 10),
         Setting("224 px JPEG folder", "jpeg224", 224, "vit-ti16", 50, 2)]
REPEATS = 3
SECTION_TITLE = "## Input pipeline vs training"
JPEG_IMAGES_PER_CLASS = 100


def setup_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("VITCLI_HOME", str(Path(tempfile.gettempdir()) / "vitcli-bench-home"))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def make_jpeg_folder(root: Path) -> Path:
    """DIR/train/<class>/*.jpg at 224 px: the bundled images upscaled, with noise so that the
    JPEGs carry real detail to decode (quality 90). Made once, reused."""
    tf = setup_tensorflow()
    done = root / "train" / ".complete"
    if done.exists():
        return root
    classes = sorted(path.name for path in (BUNDLED / "train").iterdir() if path.is_dir())
    rng = tf.random.Generator.from_seed(0)
    for name in classes:
        folder = root / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted((BUNDLED / "train" / name).glob("*.png"))[:JPEG_IMAGES_PER_CLASS]:
            image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3,
                                       expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32), (224, 224))
            image = image + rng.normal(image.shape, stddev=8.0)
            image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
            tf.io.write_file(str(folder / f"{path.stem}.jpg"),
                             tf.io.encode_jpeg(image, quality=90))
    done.touch()
    return root


def open_split(folder: Path):
    from vitcli.config import DataConfig
    from vitcli.data.sources import open_source

    config = DataConfig(source=str(folder))
    source = open_source(config)
    return config, source


def pipeline_rate(split, config, image_size: int, num_classes: int, batches: int) -> dict:
    """Median over REPEATS of images/s delivered by a fresh pipeline (2 warm-up batches)."""
    from vitcli.data.pipeline import train_dataset

    rates = []
    for repeat in range(REPEATS):
        dataset = train_dataset(split, config, image_size=image_size, batch_size=BATCH,
                                num_classes=num_classes, seed=repeat)
        iterator = iter(dataset)
        for _ in range(2):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            images, _labels = next(iterator)
        _ = images.numpy()
        rates.append(batches * BATCH / (time.perf_counter() - start))
    return {"images_per_second": round(statistics.median(rates), 1),
            "repeats": [round(rate, 1) for rate in rates], "timed_batches": batches}


def training_rates(split, config, setting: Setting, num_classes: int) -> dict:
    """vitcli's training step on a synthetic batch, then fed by the pipeline (median step)."""
    import keras
    import tensorflow as tf

    from vitcli.api import build_model
    from vitcli.config import TrainConfig
    from vitcli.data.pipeline import train_dataset
    from vitcli.train.optim import make_optimizer
    from vitcli.train.step import make_train_step

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model(setting.model, num_classes=num_classes,
                            image_size=setting.image_size, dtype="float32")
        optimizer = make_optimizer(TrainConfig(optimizer="sgd", learning_rate=1e-3,
                                               warmup_steps=0, batch_size=BATCH), 10_000)
        optimizer.build(model.trainable_variables)
    images = tf.random.uniform((BATCH, setting.image_size, setting.image_size, 3), 0, 255)
    labels = tf.one_hot(tf.zeros((BATCH,), tf.int32), num_classes)
    synthetic = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((images, labels)).repeat()))
    fed = iter(strategy.distribute_datasets_from_function(
        lambda context: train_dataset(split, config, image_size=setting.image_size,
                                      batch_size=BATCH, num_classes=num_classes, seed=0,
                                      input_context=context)))
    out = {}
    for name, iterator in (("synthetic", synthetic), ("pipeline_fed", fed)):
        step = make_train_step(model, optimizer, strategy, global_batch=BATCH)
        for _ in range(2):
            step(iterator).numpy()
        seconds = []
        for _ in range(setting.train_steps):
            start = time.perf_counter()
            step(iterator).numpy()
            seconds.append(time.perf_counter() - start)
        out[name] = {"images_per_second": round(BATCH / statistics.median(seconds), 1),
                     "timed_steps": len(seconds)}
    return out


def measure(setting: Setting, jpeg_root: Path) -> dict:
    setup_tensorflow()
    folder = BUNDLED if setting.source == "bundled" else make_jpeg_folder(jpeg_root)
    config, source = open_split(folder)
    split = source.split("train")
    result = {"setting": setting.name, "image_size": setting.image_size,
              "model": setting.model, "train_examples": split.num_examples,
              "pipeline": pipeline_rate(split, config, setting.image_size, source.num_classes,
                                        setting.pipeline_batches)}
    result["training"] = training_rates(split, config, setting, source.num_classes)
    train_rate = result["training"]["synthetic"]["images_per_second"]
    result["pipeline_over_training"] = round(
        result["pipeline"]["images_per_second"] / train_rate, 2)
    result["fed_over_synthetic"] = round(
        result["training"]["pipeline_fed"]["images_per_second"] / train_rate, 3)
    return result


def markdown(results: list[dict], command: str) -> str:
    lines = [SECTION_TITLE, "",
             f"Command: `{command}` (batch {BATCH}, vitcli's default training pipeline: "
             "decode, inception crop + resize, flip, one-hot, batch, prefetch; training: "
             "fp32, no XLA).", "",
             "| setting | model | pipeline alone (img/s) | training, synthetic data (img/s) "
             "| pipeline / training | training fed by the pipeline (img/s) | fed / synthetic "
             "| other load (cores) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in results:
        training = row["training"]
        lines.append(
            f"| {row['setting']} | {row['model']} | {row['pipeline']['images_per_second']} "
            f"| {training['synthetic']['images_per_second']} | {row['pipeline_over_training']}x "
            f"| {training['pipeline_fed']['images_per_second']} | {row['fed_over_synthetic']} "
            f"| {row.get('foreign_load_cores', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=str(HERE / "results.json"),
                        help="merged into this file under the key 'pipeline'")
    parser.add_argument("--markdown", default=str(HERE / "results.md"),
                        help="its section is appended to (or replaced in) this file")
    parser.add_argument("--jpeg-folder", default=str(Path(tempfile.gettempdir())
                                                     / "vitcli-bench-jpeg224"))
    args = parser.parse_args(argv)
    results = []
    for setting in QUICK if args.quick else FULL:
        print(f"pipeline: {setting.name} ({setting.model}) ...", flush=True)
        wait_until_quiet()
        with LoadMeter() as meter:
            results.append(measure(setting, Path(args.jpeg_folder)))
        results[-1]["foreign_load_cores"] = meter.load
        print("  " + json.dumps(results[-1]), flush=True)
    command = "bash benchmarks/run.sh" + (" --quick" if args.quick else "")
    merge(Path(args.json), Path(args.markdown), results, markdown(results, command))
    print(markdown(results, command))


def merge(json_file: Path, markdown_file: Path, results: list[dict], section: str) -> None:
    """Adds the results to the benchmark's files, replacing an earlier pipeline section."""
    report = json.loads(json_file.read_text()) if json_file.exists() else {}
    report["pipeline"] = results
    json_file.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown_file.read_text() if markdown_file.exists() else ""
    text = text.split(SECTION_TITLE)[0].rstrip("\n")
    markdown_file.write_text((text + "\n\n" if text else "") + section)


if __name__ == "__main__":
    main()
