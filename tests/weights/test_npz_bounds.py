""".npz checkpoints cost memory bounded by the file: members are judged from the zip directory
and their .npy headers before anything is inflated, and a model is never built larger than
the arrays that describe it. Peak memories are measured in fresh processes."""

from __future__ import annotations

import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import vitcli
from tests.support.checkpoints import official_checkpoint
from tests.support.checks import vitcli_error
from tests.support.cli import runner
from vitcli.cli.app import app
from vitcli.weights.npz import allowed_bytes, read_npz

MiB, GiB = 2**20, 2**30
REPOSITORY = Path(__file__).resolve().parents[2]


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A version 1.0 .npy header for `shape`, padded as numpy pads it."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text = text.ljust(64 * ((len(text) + 11) // 64 + 1) - 11) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def write_deflate_bomb(path: Path, key: str, shape: tuple[int, ...], chunk: int = 16 * MiB):
    """A valid .npz whose one member inflates to the float32 zeros of `shape`, written
    without ever holding them: one raw-deflated chunk of zeros, closed by a full flush (so it
    refers to nothing before it), is repeated, then a zip directory is written by hand."""
    header = npy_header(shape)
    size = int(np.prod(shape)) * 4
    assert size % chunk == 0 and len(header) + size < 2**32  # no zip64 needed
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    crc, zeros = zlib.crc32(header), bytes(chunk)
    for _ in range(size // chunk):
        crc = zlib.crc32(zeros, crc)
    compressed = len(start) + len(block) * (size // chunk) + len(end)
    name = f"{key}.npy".encode()
    fields = (20, 0, 8, 0, 33, crc, compressed, len(header) + size, len(name))  # 33: 1980-01-01
    with open(path, "wb") as handle:
        handle.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", *fields, 0) + name)
        handle.write(start)
        for _ in range(size // chunk):
            handle.write(block)
        handle.write(end)
        directory = handle.tell()
        handle.write(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0, 0)
                     + name)
        handle.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1,
                                 handle.tell() - directory, directory, 0))


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A ~2 MB .npz that inflates to a 2 GiB array (numpy itself would allocate it all)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    write_deflate_bomb(path, "embedding/kernel", (2**29,))
    return path


def test_the_bomb_is_a_real_archive(bomb):
    with zipfile.ZipFile(bomb) as archive:
        (info,) = archive.infolist()
        assert info.file_size == 2 * GiB + len(npy_header((2**29,)))
        with archive.open(info) as member:  # its first bytes inflate as numpy's would
            assert np.lib.format.read_magic(member) == (1, 0)
            assert np.lib.format.read_array_header_1_0(member)[0] == (2**29,)
            assert member.read(MiB) == bytes(MiB)
    assert bomb.stat().st_size < 3 * MiB


def test_bomb_is_one_line_naming_sizes(bomb):
    message = vitcli_error(read_npz, bomb)
    assert "bomb.npz" in message and "2.0 gib" in message and "decompression bomb" in message


# The peak is the process's own VmHWM: ru_maxrss would include the RSS of the (large) pytest
# process that forked it, which Linux carries across exec.
PEAK_SCRIPT = """
import sys
from vitcli.errors import VitcliError
from vitcli.weights.npz import read_npz
try:
    read_npz(sys.argv[1])
    print("loaded")
except VitcliError as error:
    print("refused:", error)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def peak_load(path: Path) -> tuple[str, int]:
    """(the outcome line, the peak resident memory in KiB) of reading `path` in a new process
    (numpy alone, no TensorFlow: a 2 GiB inflation would stand out ~60-fold)."""
    completed = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=300, check=True)
    lines = completed.stdout.strip().splitlines()
    return lines[-2], int(lines[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_reading_the_bomb_costs_no_more_than_a_small_checkpoint(bomb, tmp_path):
    normal = tmp_path / "small.npz"
    np.savez(normal, **official_checkpoint("token"))
    outcome, normal_peak = peak_load(normal)
    assert outcome == "loaded"
    outcome, bomb_peak = peak_load(bomb)
    assert outcome.startswith("refused:") and "decompression bomb" in outcome
    assert bomb_peak < 1.2 * normal_peak, (bomb_peak, normal_peak)


def lying_header(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose member's header claims `shape` but holds 16 bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("embedding/kernel.npy", npy_header(shape) + bytes(16))


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_header_claiming_4_tib_is_one_line_without_allocating(tmp_path, compression):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("embedding/kernel.npy", npy_header((2**40,)) + bytes(16))
    message = vitcli_error(vitcli.load_checkpoint, path)
    assert "4.0 tib" in message and "embedding/kernel" in message and "16 b" in message


def test_the_cli_refuses_a_4_tib_header_in_one_line(tmp_path):
    path = tmp_path / "huge.npz"
    lying_header(path, (2**40,))
    result = runner.invoke(app, ["weights", "info", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "4.0 TiB" in errors[0], result.stderr


def test_allowed_bytes_rule():
    assert allowed_bytes(2 * MiB) == 256 * MiB  # small files: a fixed allowance
    assert allowed_bytes(100 * MiB) == 50 * 100 * MiB  # 50-fold up to 8 GiB
    assert allowed_bytes(1 * GiB) == 8 * GiB
    assert allowed_bytes(10 * GiB) == 20 * GiB  # twice the file beyond


def test_a_compressed_checkpoint_with_a_zero_head_still_loads(tmp_path):
    arrays = official_checkpoint("token")
    arrays["head/kernel"] = np.zeros_like(arrays["head/kernel"])  # deflates ~1000-fold
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **arrays)
    loaded = read_npz(path)
    assert loaded.keys() == arrays.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)


def test_expected_shapes_are_compared_before_reading(tmp_path):
    path = tmp_path / "state.npz"
    np.savez(path, a=np.zeros((2, 3), np.float32), b=np.arange(4))
    assert set(read_npz(path, expected={"a": (2, 3), "b": (4,)})) == {"a", "b"}
    assert set(read_npz(path, expected={"a": (2, 3), "b": None})) == {"a", "b"}  # any shape
    assert "'a' has shape (2, 3), expected (3, 2)" in vitcli_error(
        read_npz, path, expected={"a": (3, 2), "b": (4,)})
    assert "1 array(s) missing" in vitcli_error(read_npz, path, expected={
        "a": (2, 3), "b": (4,), "c": (1,)})
    # A lying header is refused before the expected shapes are even looked at.
    lying_header(tmp_path / "lie.npz", (1000,))
    assert "declares shape" in vitcli_error(read_npz, tmp_path / "lie.npz",
                                            expected={"embedding/kernel": (1000,)})


def test_a_forged_width_is_refused_before_the_model_is_built(tmp_path):
    """A 6 MB embedding 500,000 wide would make every encoder block 10^12 parameters: refused
    from the arithmetic, not by running out of memory."""
    arrays = official_checkpoint("token")
    arrays["embedding/kernel"] = np.zeros((1, 1, 3, 500_000), np.float32)
    path = tmp_path / "forged.npz"
    np.savez(path, **arrays)
    message = vitcli_error(vitcli.load_checkpoint, path)
    assert "parameters" in message and "forged" in message

