"""The folder index: every file decoded once, the result cached and invalidated by changes."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.images import encode, image_array, make_folder
from vitcli.data.index import cache_file, check_files, index_folder


def test_second_index_decodes_nothing(tmp_path, vitcli_home):
    make_folder(tmp_path / "data", {"cat": 3, "dog": 2})
    first = index_folder(tmp_path / "data")
    second = index_folder(tmp_path / "data")
    assert first.checked == 5 and second.checked == 0
    assert second.entries == first.entries
    assert first.cache_file == cache_file((tmp_path / "data").resolve())
    assert first.cache_file.parent == vitcli_home / "index"


def test_cache_file_format(tmp_path):
    make_folder(tmp_path / "data", {"cat": 1})
    (tmp_path / "data" / "cat" / "broken.png").write_bytes(b"not a png")
    index = index_folder(tmp_path / "data")
    record = json.loads(index.cache_file.read_text())
    assert record["version"] == 1 and record["root"] == str((tmp_path / "data").resolve())
    size, mtime_ns, error = record["files"]["cat/000.png"]
    stat = (tmp_path / "data" / "cat" / "000.png").stat()
    assert (size, mtime_ns, error) == (stat.st_size, stat.st_mtime_ns, None)
    assert "not an image" in record["files"]["cat/broken.png"][2]
    assert not list(index.cache_file.parent.glob("*.tmp"))  # written atomically, nothing left


def test_added_and_modified_files_are_the_only_ones_checked_again(tmp_path):
    root = tmp_path / "data"
    make_folder(root, {"cat": 3, "dog": 3})
    index_folder(root)
    (root / "cat" / "new.png").write_bytes(encode(image_array(0, 50)))
    modified = root / "dog" / "004.png"
    modified.write_bytes(b"")  # now empty: must be noticed
    os.utime(modified, ns=(modified.stat().st_atime_ns, modified.stat().st_mtime_ns + 10**9))
    (root / "dog" / "005.png").unlink()
    index = index_folder(root)
    assert index.checked == 2
    errors = {entry.path: entry.error for entry in index.entries}
    assert errors["cat/new.png"] is None and errors["dog/004.png"] == "empty file"
    assert "dog/005.png" not in errors
    assert index_folder(root).checked == 0


def test_hidden_and_top_level_files_are_ignored(tmp_path):
    root = tmp_path / "data"
    make_folder(root, {"cat": 1})
    (root / "LICENSE.txt").write_text("not data")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (root / "cat" / "._000.png").write_bytes(b"apple double")
    (root / "cat" / "Thumbs.db").write_bytes(b"\0")
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "objects" / "x").write_bytes(b"\0")
    assert [entry.path for entry in index_folder(root).entries] == ["cat/000.png"]


def test_reasons_for_bad_files(tmp_path):
    root = tmp_path / "data"
    good = encode(image_array(0, 1), "JPEG")
    files = {"empty.jpg": b"", "text.jpg": b"hello", "notes.txt": b"a text file",
             "truncated.jpg": good[: len(good) // 2],
             "truncated.png": encode(image_array(0, 2))[:60], "fine.jpg": good}
    (root / "cat").mkdir(parents=True)
    for name, data in files.items():
        (root / "cat" / name).write_bytes(data)
    errors = {entry.path: entry.error for entry in index_folder(root).entries}
    assert errors["cat/fine.jpg"] is None
    assert errors["cat/empty.jpg"] == "empty file"
    assert errors["cat/text.jpg"].startswith("not an image")
    assert errors["cat/notes.txt"].startswith("not an image")
    assert errors["cat/truncated.jpg"].startswith("corrupt or truncated image")
    assert errors["cat/truncated.png"].startswith("corrupt or truncated image")
    assert all("\n" not in error for error in errors.values() if error)


def test_unwritable_cache_still_indexes(tmp_path, monkeypatch):
    make_folder(tmp_path / "data", {"cat": 2})
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.setenv("VITCLI_HOME", str(blocker))  # index/ cannot be created under a file
    assert index_folder(tmp_path / "data").checked == 2
    assert index_folder(tmp_path / "data").checked == 2


def test_progress_follows_the_check(tmp_path):
    make_folder(tmp_path / "data", {"cat": 70, "dog": 1})
    (tmp_path / "data" / "dog" / "bad.png").write_bytes(b"bad")
    calls = []
    index_folder(tmp_path / "data", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(64, 72), (71, 72), (72, 72)]  # per batch of checked files, then the end
    index_folder(tmp_path / "data", progress=lambda done, total: calls.append((done, total)))
    assert len(calls) == 3  # a cache hit checks nothing


def test_symbolic_links_are_followed_without_looping(tmp_path):
    make_folder(tmp_path / "elsewhere", {"cat": 2})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cat").symlink_to(tmp_path / "elsewhere" / "cat")
    (tmp_path / "data" / "cat" / "loop").symlink_to(tmp_path / "data")
    paths = [entry.path for entry in index_folder(tmp_path / "data").entries]
    assert paths == ["cat/000.png", "cat/001.png"]  # the loop back to data/ is not entered


def test_unreadable_files_are_checked_again(tmp_path):
    root = tmp_path / "data"
    make_folder(root, {"cat": 2})
    locked = root / "cat" / "001.png"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("this user reads files without read permission (root)")
        errors = {entry.path: entry.error for entry in index_folder(root).entries}
        assert errors["cat/001.png"].startswith("unreadable")
    finally:
        locked.chmod(0o644)
    index = index_folder(root)
    assert index.checked == 1 and all(entry.error is None for entry in index.entries)


def test_a_file_gone_before_it_is_read_is_unreadable(tmp_path):
    errors = check_files(tmp_path, ["cat/gone.png"])
    assert errors["cat/gone.png"].startswith("unreadable (No such file")


def test_fifos_and_other_special_files_are_ignored(tmp_path):
    root = tmp_path / "data"
    make_folder(root, {"cat": 1})
    os.mkfifo(root / "cat" / "pipe.png")  # reading it would block forever
    assert [entry.path for entry in index_folder(root).entries] == ["cat/000.png"]
