"""Where the images come from: the source abstraction (`DataSource`, its named `Split`s of
(encoded image bytes, label) examples in a fixed order) and the one place a `--data` value is
told apart (`parse_source`) and opened (`open_source`).

Each kind of source has its own module: an image folder (`vitcli.data.folder_source`), a CSV
manifest of multi-label images (`PATH.csv`, `vitcli.data.manifest_source`), a folder of packed
data (TFRecord shards with a `vitcli-packed.json` index, `vitcli.data.packed_source`) or
`tfds:NAME`, a tensorflow-datasets dataset (`vitcli.data.tfds_source`), whose images stay
encoded (`SkipDecoding`), so every kind feeds the same decoding pipeline.

A label is a class index (int32 scalar), or for multi-label data (`DataSource.multi_label`: a
manifest, or tfds labels that are a Sequence(ClassLabel)) a multi-hot int32 vector over the
classes; the pipelines turn either into the float32 target vector the loss takes.

What the data is opened for (`purpose`) decides two things: training a classifier needs at
least two classes, and evaluation also gets the split `all` of a plain class folder (every
image in it: a folder of test images needs no hold-out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import tensorflow as tf

from vitcli.config import DataConfig
from vitcli.data.index import Progress
from vitcli.errors import VitcliError

TFDS_PREFIX = "tfds:"
MANIFEST_SUFFIX = ".csv"
FOLDER, TFDS, MANIFEST, PACKED = "folder", "tfds", "manifest", "packed"  # the kinds of source
# "any": the splits there are (pre-training, figures); "classify": also at least two classes
# (training a classifier); "evaluate": also `all`, every image of a plain class folder.
PURPOSES = ("any", "classify", "evaluate")


@dataclass
class Split:
    """One split: a list of files (image folders) or a sequential reader (tensorflow-datasets)."""

    name: str
    num_examples: int
    files: list[str] = field(default_factory=list, repr=False)  # absolute paths, in order
    # class indices, or multi-hot rows (a (num_examples, classes) uint8 array) when multi-label
    labels: list[int] = field(default_factory=list, repr=False)
    reader: Callable[[], tf.data.Dataset] | None = field(default=None, repr=False)
    # packed data: its TFRecord shards (path, examples), which the training stream reads
    shards: list[tuple[str, int]] = field(default_factory=list, repr=False)
    median_side: int | None = None  # known without reading images (packed data), else None

    @property
    def random_access(self) -> bool:
        """Whether example i can be fetched directly (a file list) rather than by reading on."""
        return self.reader is None

    def examples(self) -> tf.data.Dataset:
        """(encoded image tf.string, label tf.int32: a class index or a multi-hot vector) in a
        fixed order, not decoded."""
        if self.reader is not None:
            return self.reader()
        files = tf.constant(self.files, tf.string)
        labels = tf.constant(self.labels, tf.int32)
        return tf.data.Dataset.from_tensor_slices((files, labels)).map(
            read_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def read_example(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(path, label) -> (the file's bytes, label)."""
    return tf.io.read_file(path), label


@dataclass
class DataSource:
    """The opened data: class names, the splits that exist, and the files that were left out."""

    description: str
    class_names: list[str]
    splits: dict[str, Split]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing: dict[str, str] = field(default_factory=dict, repr=False)  # split -> why it is absent
    layout: str = ""  # how an image folder is laid out, e.g. "a plain class folder"
    multi_label: bool = False  # labels are multi-hot vectors (any number of classes per image)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        """The named split, or a VitcliError that names the ones there are."""
        if name in self.splits:
            return self.splits[name]
        reason = self.missing.get(name)
        detail = f": {reason}" if reason else ""
        available = ", ".join(self.splits) or "none"
        raise VitcliError(f"{self.description} has no {name} split{detail}",
                          hint=f"its splits: {available}")


@dataclass(frozen=True)
class SourceSpec:
    """A `--data` value told apart: its kind (FOLDER or TFDS) and the folder or dataset name."""

    kind: str
    name: str


def parse_source(spec: str) -> SourceSpec:
    """`spec` as a source: `tfds:NAME` is a tensorflow-datasets dataset, a path ending in
    `.csv` a manifest, a folder holding a packed index packed data, anything else an image
    folder; an empty one is an error."""
    spec = spec.strip()
    if not spec:
        raise VitcliError("no data given", hint="give an image folder or tfds:NAME")
    if spec.startswith(TFDS_PREFIX):
        return SourceSpec(TFDS, spec[len(TFDS_PREFIX):].strip())
    if spec.lower().endswith(MANIFEST_SUFFIX):
        return SourceSpec(MANIFEST, spec)
    from vitcli.data.packed_source import is_packed  # it builds on this module

    return SourceSpec(PACKED if is_packed(spec) else FOLDER, spec)


def open_source(config: DataConfig, *, progress: Progress | None = None,
                purpose: str = "any") -> DataSource:
    """Opens `config.source`: an image folder, a `.csv` manifest, packed data, or `tfds:NAME`
    for tensorflow-datasets.

    `progress(done, total)` is called while an image folder's (or a manifest's) new or changed
    files are checked (a first index of a large folder takes a while; later opens reuse the
    cached index). `purpose` is one of `PURPOSES`: "classify" refuses data with fewer than two
    classes, "evaluate" adds the split `all` to a plain class folder (and to a manifest
    without a split column).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, not {purpose!r}")
    source = parse_source(config.source)
    if source.kind == TFDS:
        from vitcli.data.tfds_source import open_tfds  # tfds is slow to import

        opened = open_tfds(source.name, config)
    elif source.kind == MANIFEST:
        from vitcli.data.manifest_source import open_manifest  # it builds on this module

        opened = open_manifest(source.name, config, progress, with_all=purpose == "evaluate")
    elif source.kind == PACKED:
        from vitcli.data.packed_source import open_packed

        opened = open_packed(source.name, config, with_all=purpose == "evaluate")
    else:
        from vitcli.data.folder_source import open_folder  # it builds on this module

        opened = open_folder(source.name, config, progress, with_all=purpose == "evaluate")
    if purpose == "classify":
        _require_two_classes(opened)
    return opened


def _require_two_classes(source: DataSource) -> None:
    """A classifier of one class learns nothing (every prediction is right): refuse it."""
    if source.num_classes < 2:
        found = f" ({source.class_names[0]!r})" if source.class_names else ""
        raise VitcliError(f"{source.description} has {source.num_classes} class{found}: "
                          "training a classifier needs at least two",
                          hint="add a folder per class, or pretrain --objective mpp, which "
                               "needs no labels")


def parse_fraction(text: str) -> float | None:
    """`text` as a float (a held-out fraction such as "0.1"), or None when it is no number."""
    try:
        return float(text)
    except ValueError:
        return None

