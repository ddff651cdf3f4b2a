"""Images are judged by their headers before anything decodes them: a file declaring more
pixels than VITCLI_MAX_IMAGE_PIXELS is skipped with its reason, never decoded (peak memory is
measured in a fresh process). Folders of one class and class names that cannot be one line of
labels.txt are refused for training."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from PIL import Image

from tests.support.checks import vitcli_error
from tests.support.images import image_array, make_folder, write_black_png
from vitcli.config import DataConfig
from vitcli.data import pipeline
from vitcli.data.headers import DEFAULT_MAX_PIXELS, MAX_PIXELS_VARIABLE, declared_size
from vitcli.data.index import check_paths, index_folder
from vitcli.data.sources import open_source

REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_png_writer_writes_real_pngs(tmp_path):
    write_black_png(tmp_path / "small.png", 300, 200)
    decoded = tf.io.decode_png((tmp_path / "small.png").read_bytes()).numpy()
    assert decoded.shape == (200, 300, 3) and not decoded.any()
    write_black_png(tmp_path / "huge.png", 12000, 12000)
    assert (tmp_path / "huge.png").stat().st_size < 500_000  # ~435 KB for 432 MB of pixels


@pytest.fixture
def bomb_folder(tmp_path) -> Path:
    """DIR/{cat,dog}/ with three small PNGs each, and a 12000 x 12000 PNG in cat/."""
    root = tmp_path / "data"
    make_folder(root, {"cat": 3, "dog": 3})
    write_black_png(root / "cat" / "huge.png", 12000, 12000)
    return root


def test_an_oversized_image_is_skipped_with_its_size(bomb_folder):
    errors = {entry.path: entry.error for entry in index_folder(bomb_folder).entries}
    assert errors.pop("cat/huge.png") == (
        f"too large to decode (12000 x 12000 = 144,000,000 pixels, over the limit of "
        f"{DEFAULT_MAX_PIXELS:,}; {MAX_PIXELS_VARIABLE} raises it)")
    assert set(errors.values()) == {None}


def test_training_and_evaluation_never_see_it(bomb_folder):
    source = open_source(DataConfig(source=str(bomb_folder), val_split="0"))
    assert [Path(path).name for path, _ in source.skipped] == ["huge.png"]
    split = source.split("train")
    assert split.num_examples == 6 and not any("huge" in path for path in split.files)
    images = [batch for batch, _ in pipeline.eval_dataset(split, DataConfig(), image_size=8,
                                                          batch_size=4)]
    assert sum(len(batch) for batch in images) == 6


# The peak is the process's own VmHWM: ru_maxrss would include the RSS of the (large) pytest
# process that forked it, which Linux carries across exec. Both folders are indexed by one
# process (one TensorFlow start): a decoded 12000 x 12000 image would raise the peak ~60%.
PEAK_SCRIPT = """
import sys
from vitcli.data.index import index_folder

def peak():
    return next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM"))

normal = index_folder(sys.argv[1])
assert all(entry.error is None for entry in normal.entries)
normal_peak = peak()
bombed = index_folder(sys.argv[2])
assert [entry.path for entry in bombed.entries if entry.error] == ["cat/huge.png"]
print(normal_peak, peak())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_indexing_the_oversized_image_costs_no_more_than_a_normal_folder(bomb_folder, tmp_path):
    normal = tmp_path / "normal"
    make_folder(normal, {"cat": 3, "dog": 3})
    completed = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(normal),
                                str(bomb_folder)], cwd=REPOSITORY, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    normal_peak, bomb_peak = map(int, completed.stdout.split()[-2:])
    assert bomb_peak < 1.2 * normal_peak, (bomb_peak, normal_peak)


def encoded(fmt: str, width: int, height: int, frames: int = 1, **options) -> bytes:
    pictures = [Image.fromarray(image_array(1, index, size=1)).resize((width, height))
                for index in range(frames)]
    buffer = io.BytesIO()
    if frames > 1:
        options.update(save_all=True, append_images=pictures[1:], duration=40)
    pictures[0].save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("JPEG", {}),
                                              ("JPEG", {"progressive": True}), ("BMP", {}),
                                              ("GIF", {}), ("WEBP", {}),
                                              ("WEBP", {"lossless": True})])
def test_every_format_is_sized_from_its_header(tmp_path, monkeypatch, fmt, options):
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")
    (tmp_path / "over").write_bytes(encoded(fmt, 40, 30, **options))  # 1200 pixels
    (tmp_path / "at").write_bytes(encoded(fmt, 50, 20, **options))  # 1000: still allowed
    over, at = check_paths([tmp_path / "over", tmp_path / "at"])
    assert over.startswith("too large to decode (40 x 30 = 1,200 pixels") and at is None


def test_a_gif_counts_every_frame(tmp_path, monkeypatch):
    """TensorFlow's GIF decoder reads all frames even when only the first is kept."""
    data = encoded("GIF", 20, 20, frames=3)
    assert declared_size(io.BytesIO(data)) == (1200, "20 x 20, 3 frames")
    (tmp_path / "animated.gif").write_bytes(data)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")
    assert "3 frames" in check_paths([tmp_path / "animated.gif"])[0]


def test_a_jpeg_thumbnail_is_not_mistaken_for_the_image(tmp_path):
    thumbnail = encoded("JPEG", 8, 8)
    exif = Image.Exif()
    exif[0x9286] = thumbnail  # a user comment holding a whole JPEG, before the frame header
    buffer = io.BytesIO()
    Image.fromarray(image_array(0, 0, size=24)).save(buffer, "JPEG", exif=exif)
    assert declared_size(io.BytesIO(buffer.getvalue())) == (576, "24 x 24")


def test_the_limit_can_be_raised_and_lowered(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_folder(root, {"cat": 1})
    (root / "cat" / "big.png").write_bytes(encoded("PNG", 40, 30))
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")
    assert _errors(root)["cat/big.png"].startswith("too large")
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "5000")  # raised: the file is checked again
    assert _errors(root)["cat/big.png"] is None
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")  # lowered: the cache is not trusted
    assert _errors(root)["cat/big.png"].startswith("too large")


def _errors(root: Path) -> dict[str, str | None]:
    return {entry.path: entry.error for entry in index_folder(root).entries}


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1e9"])
def test_a_bad_limit_is_one_line(tmp_path, monkeypatch, value):
    make_folder(tmp_path / "data", {"cat": 1})
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, value)
    message = vitcli_error(index_folder, tmp_path / "data")
    assert MAX_PIXELS_VARIABLE.lower() in message and "positive whole number" in message


def test_one_class_is_refused_for_training_a_classifier_only(tmp_path):
    make_folder(tmp_path / "data", {"cat": 4})
    config = DataConfig(source=str(tmp_path / "data"))
    message = vitcli_error(open_source, config, purpose="classify")
    assert "1 class ('cat')" in message and "at least two" in message
    assert open_source(config).num_classes == 1  # pre-training or figures need no labels
    evaluated = open_source(config, purpose="evaluate")
    assert evaluated.split("all").num_examples == 4


@pytest.mark.parametrize("name", ["two\nlines", "carriage\rreturn", "tab\there", "escape\x1b[31m",
                                  "line\u2028separator"])
def test_class_names_that_labels_txt_cannot_hold_are_refused(tmp_path, name):
    make_folder(tmp_path / "data", {"fine": 2, name: 2})
    message = vitcli_error(open_source, DataConfig(source=str(tmp_path / "data")))
    assert repr(name).lower() in message and str(tmp_path / "data").lower() in message
    assert "labels.txt" in message


def test_ordinary_unicode_class_names_are_kept(tmp_path):
    names = ["chat noir", "Hund", "狗", "caf\u00e9"]
    make_folder(tmp_path / "data", dict.fromkeys(names, 2))
    source = open_source(DataConfig(source=str(tmp_path / "data")), purpose="classify")
    assert source.class_names == sorted(names)
    assert "".join(f"{name}\n" for name in source.class_names).splitlines() == sorted(names)


def test_unknown_purpose_is_a_programming_error(tmp_path):
    make_folder(tmp_path / "data", {"cat": 1, "dog": 1})
    with pytest.raises(ValueError, match="purpose"):
        open_source(DataConfig(source=str(tmp_path / "data")), purpose="train")

