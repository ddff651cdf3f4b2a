"""Packed data (`vitcli data pack`): an image folder's checked images as TFRecord shards, opened
as a `DataSource` with the same splits, classes and example order as the folder.

A packed directory holds (every file through `tf.io.gfile`, so `gs://` and `ram://` work):

    vitcli-packed.json               the index, written last: no index, no packed data
    train-00000-of-00008.tfrecord    tf.train.Example records: image (the encoded file,
    ...                              unchanged), label (int64 class index), path (relative
    val-00000-of-00001.tfrecord      to the packed folder)

The index: {"format": "vitcli-packed", "version": 1, "source", "layout", "settings",
"class_names", "median_side", "skipped", "splits": {name: {"examples": n, "shards": [{"file",
"index", "examples", "bytes", "digest"}]}}}; the `.pack-plan.json` beside it is the same
without the bytes (vitcli.data.pack). The splits are those the folder had when packed
(its held-out validation split included: a later --val-split changes nothing).

Order. Shard k of K holds examples k, k + K, k + 2K, ... of its split's folder order (round
robin: every shard is a stratified sample of its classes), so reading the K shards
interleaved one record at a time gives back the folder's order exactly (`Split.examples()`).

Training stream (without `config.cache`; with it the stream is the folder's, read into memory
once). A stream of N examples over shards S: epoch e permutes the shard order with a seed of
(seed, e); consecutive groups of `CYCLE` shards are read interleaved (one record from each in
turn), groups one after the other; the epoch's sequence is cut into blocks of
`config.shuffle_buffer` examples (never crossing an epoch) and each block is permuted with a
seed of (seed, block number). Position g is (epoch, offset); its augmentation seed depends on
g only. `start_example=n` skips whole epochs and whole shard groups without reading them; it
reads (without decoding) only n's block up to n, and the records of the shard group that
block starts in before it.

Sharding. With P input pipelines and at least P shards in the split, pipeline p reads only
the shards k with k % P == p, as its own stream whose local position l is global position
l * P + p: step s of P pipelines of batch B still covers global positions [s*P*B, (s+1)*P*B),
so a run resumes exactly with the same P (another P sees other examples, each epoch still
complete per pipeline). With fewer shards than P, every pipeline reads the one stream and
keeps its positions g % P == p.
"""

from __future__ import annotations

import contextlib
import json
import posixpath

import tensorflow as tf

from vitcli.config import DataConfig
from vitcli.data import ops
from vitcli.data.sources import DataSource, Split
from vitcli.errors import VitcliError

INDEX_FILE = "vitcli-packed.json"
FORMAT = "vitcli-packed"
VERSION = 1
SPLIT_NAMES = ("train", "val", "test")
CYCLE = 8  # shards read interleaved at a time in training
PIECE = 256  # records taken at a time from a shuffled block
ORDER_SALT, BLOCK_SALT = 10, 11  # + 2 * pipeline: seeds of the shard order and the blocks
MAX_POSITION = 2**62
REPACK_HINT = "pack it again: vitcli data pack FOLDER --out DIR (it resumes; --overwrite " \
              "starts over)"
FEATURES = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}


def index_path(directory: str) -> str:
    return posixpath.join(directory.rstrip("/"), INDEX_FILE)


def is_packed(directory: str) -> bool:
    """Whether `directory` holds a packed data set's index (nothing is read)."""
    with contextlib.suppress(tf.errors.OpError, ValueError):
        return tf.io.gfile.exists(index_path(directory))
    return False


def open_packed(directory: str, config: DataConfig | None = None, *,
                with_all: bool = False) -> DataSource:
    """The packed data set in `directory`, its index and shard files checked first (a damaged
    index or a missing or resized shard is one line); `with_all`: also `all` (train then val)
    for data packed from a plain class folder. The splits are those it was packed with: the
    held-out fraction (`config.val_split`) was applied by `vitcli data pack`."""
    record = read_index(directory)
    splits = {name: _split(name, directory, entry, record["median_side"])
              for name, entry in record["splits"].items()}
    if with_all and record["layout"] == "a plain class folder" and "train" in splits:
        parts = [splits[name] for name in ("train", "val") if name in splits]
        splits = {"all": _joined("all", parts), **splits}
    return DataSource(f"packed data {directory}", list(record["class_names"]), splits,
                      layout=f"packed: {record['layout']}")


def read_index(directory: str) -> dict:
    """The checked index of a packed directory (its format, counts and shard files)."""
    path = index_path(directory)
    try:
        record = json.loads(tf.io.gfile.GFile(path, "rb").read())
    except tf.errors.NotFoundError:
        raise VitcliError(f"{directory} is not packed data (no {INDEX_FILE})",
                          hint=REPACK_HINT) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise VitcliError(f"damaged packed index {path}: {error}", hint=REPACK_HINT) from None
    problem = index_problem(record)
    if problem:
        raise VitcliError(f"damaged packed index {path}: {problem}", hint=REPACK_HINT)
    for entry in record["splits"].values():
        for shard in entry["shards"]:
            _check_shard(directory, shard)
    return record


def index_problem(record) -> str | None:
    """What makes `record` no packed index of this version, or None."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return "not a vitcli packed index"
    if record.get("version") != VERSION:
        return f"format version {record.get('version')!r}, this vitcli reads {VERSION}"
    names, splits = record.get("class_names"), record.get("splits")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return "class_names is not a list of names"
    if not isinstance(splits, dict) or not splits or not set(splits) <= set(SPLIT_NAMES):
        return "splits is not a mapping of train, val or test"
    if not isinstance(record.get("layout"), str):
        return "layout is missing"
    for name, entry in splits.items():
        problem = _split_problem(entry)
        if problem:
            return f"split {name}: {problem}"
    return None


def _split_problem(entry) -> str | None:
    shards = entry.get("shards") if isinstance(entry, dict) else None
    if not isinstance(shards, list) or not shards:
        return "no shards"
    for shard in shards:
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str)
                and _is_count(shard.get("examples")) and _is_count(shard.get("bytes"))):
            return "a shard without file, examples and bytes"
        if "/" in shard["file"] or shard["file"].startswith("."):
            return f"shard file {shard['file']!r} is not a plain name"
    if entry.get("examples") != sum(shard["examples"] for shard in shards):
        return "its example count is not the sum of its shards'"
    return None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_shard(directory: str, shard: dict) -> None:
    path = posixpath.join(directory.rstrip("/"), shard["file"])
    try:
        size = tf.io.gfile.stat(path).length
    except tf.errors.NotFoundError:
        raise VitcliError(f"packed data {directory} lacks its shard {shard['file']}",
                          hint=REPACK_HINT) from None
    if size != shard["bytes"]:
        raise VitcliError(f"shard {path} is {size:,} bytes, its index says {shard['bytes']:,}: "
                          "damaged or replaced", hint=REPACK_HINT)


def _split(name: str, directory: str, entry: dict, median_side: int | None) -> Split:
    shards = [(posixpath.join(directory.rstrip("/"), shard["file"]), shard["examples"])
              for shard in entry["shards"]]
    return Split(name, entry["examples"], reader=lambda: read_in_order(shards), shards=shards,
                 median_side=median_side if name == "train" else None)


def _joined(name: str, parts: list[Split]) -> Split:
    """One split of several, read one after the other (evaluation's `all`)."""
    def reader():
        dataset = parts[0].examples()
        for part in parts[1:]:
            dataset = dataset.concatenate(part.examples())
        return dataset

    return Split(name, sum(part.num_examples for part in parts), reader=reader,
                 shards=[shard for part in parts for shard in part.shards])


def parse_records(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of serialized records -> (encoded images, int32 labels)."""
    parsed = tf.io.parse_example(serialized, FEATURES)
    return parsed["image"], tf.cast(parsed["label"], tf.int32)


def read_in_order(shards: list[tuple[str, int]], batch: int = 256) -> tf.data.Dataset:
    """(encoded, label) of a split in its folder's order: the round-robin shards interleaved
    one record at a time (the shards after the first ones hold one record fewer)."""
    paths = tf.data.Dataset.from_tensor_slices([path for path, _ in shards])
    records = paths.interleave(tf.data.TFRecordDataset, cycle_length=len(shards),
                               block_length=1, num_parallel_calls=min(len(shards), 16),
                               deterministic=True)
    return records.batch(batch).map(parse_records, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True).unbatch()


def packed_stream(split: Split, config: DataConfig, *, seed: int, start_example: int,
                  shard: int, num_shards: int) -> tf.data.Dataset:
    """Endless (global position int64, encoded, label) from `start_example` on, this pipeline's
    positions only (see the module docstring for the order, resume and sharding rules)."""
    shards = split.shards
    if num_shards > 1 and len(shards) >= num_shards:
        first = start_example + (shard - start_example) % num_shards  # this pipeline's first
        own = shards[shard::num_shards]
        block = min(config.shuffle_buffer, sum(count for _, count in own))
        local = shard_stream(own, block, seed, first // num_shards, stream_id=shard)
        return local.map(lambda position, encoded, label:
                         (position * num_shards + shard, encoded, label))
    stream = shard_stream(shards, min(config.shuffle_buffer, split.num_examples), seed,
                          start_example)
    if num_shards > 1:  # too few shards to deal: every pipeline reads all, keeps its own
        stream = stream.filter(lambda position, *_: position % num_shards == shard)
    return stream


def shard_stream(shards: list[tuple[str, int]], block_size: int, seed: int, start: int,
                 stream_id: int = 0) -> tf.data.Dataset:
    """(position, encoded, label) of the endless stream over `shards` from `start` on."""
    count = sum(examples for _, examples in shards)
    order_salt, block_salt = ORDER_SALT + 2 * stream_id, BLOCK_SALT + 2 * stream_id
    reader = _EpochReader(shards, seed, order_salt)
    blocks_per_epoch = -(-count // block_size)
    epoch, offset = divmod(start, count)
    block_in_epoch, within_block = divmod(offset, block_size)
    first = reader.records_from(epoch, block_in_epoch * block_size).batch(block_size)
    later = tf.data.Dataset.range(epoch + 1, MAX_POSITION).flat_map(
        lambda number: reader.epoch_records(number).batch(block_size))
    blocks = first.concatenate(later)

    def permute(block_number, serialized):
        size = tf.shape(serialized, out_type=tf.int64)[0]
        shuffle_seed = ops.example_seed(seed, block_number, salt=block_salt)
        order = tf.random.experimental.index_shuffle(tf.range(size), shuffle_seed, size - 1)
        block_epoch, block_index = block_number // blocks_per_epoch, block_number % blocks_per_epoch
        positions = block_epoch * count + block_index * block_size + tf.range(size)
        # Records are taken from the block a few at a time: no permuted copy of all of it.
        pieces = tf.data.Dataset.from_tensor_slices((positions, order)).batch(PIECE)
        return pieces.map(lambda position, index: (
            position, *parse_records(tf.gather(serialized, index)))).unbatch()

    first_block = epoch * blocks_per_epoch + block_in_epoch
    # The next block is read while this one is used.
    return blocks.prefetch(1).enumerate(first_block).flat_map(permute).skip(within_block)


class _EpochReader:
    """The serialized records of one epoch: shards in the epoch's permuted order, read in
    groups of CYCLE shards interleaved one record at a time."""

    def __init__(self, shards: list[tuple[str, int]], seed: int, salt: int):
        self.paths = tf.constant([path for path, _ in shards])
        self.counts = [count for _, count in shards]
        self.cycle = min(CYCLE, len(shards))
        self.seed, self.salt = seed, salt

    def order(self, epoch) -> tf.Tensor:
        """The epoch's shard order: a permutation of the shard indices."""
        size = tf.cast(tf.shape(self.paths)[0], tf.int64)
        return tf.random.experimental.index_shuffle(
            tf.range(size), ops.example_seed(self.seed, epoch, salt=self.salt), size - 1)

    def _group(self, paths) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(paths).interleave(
            tf.data.TFRecordDataset, cycle_length=self.cycle, block_length=1,
            num_parallel_calls=self.cycle, deterministic=True)

    def epoch_records(self, epoch) -> tf.data.Dataset:
        paths = tf.data.Dataset.from_tensor_slices(tf.gather(self.paths, self.order(epoch)))
        return paths.batch(self.cycle).flat_map(self._group)

    def records_from(self, epoch: int, skip: int) -> tf.data.Dataset:
        """Epoch `epoch`'s records from its `skip`-th on: the groups before it are not read,
        the group it falls in is read from its start."""
        order = self.order(epoch).numpy().tolist()
        groups = [order[start:start + self.cycle] for start in range(0, len(order), self.cycle)]
        group = 0
        while group < len(groups) and skip >= (size := sum(self.counts[i] for i in groups[group])):
            skip -= size
            group += 1
        rest = [index for chosen in groups[group:] for index in chosen]  # skip < the epoch
        paths = tf.data.Dataset.from_tensor_slices(tf.gather(self.paths, rest))
        return paths.batch(self.cycle).flat_map(self._group).skip(skip)
