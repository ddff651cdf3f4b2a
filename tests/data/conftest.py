"""Fixtures for the data tests: a private cache root per test and a tiny real
tensorflow-datasets builder, prepared once (the image folders and readers are in
tests/support/images.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tfds import prepare_tiny_tfds


@pytest.fixture(autouse=True)
def vitcli_home(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own cache root (outside its tmp_path, which holds the data), so index
    caches never leak between tests."""
    home = tmp_path_factory.mktemp("vitcli-home")
    monkeypatch.setenv("VITCLI_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_tfds_dir(tmp_path_factory) -> str:
    """A data_dir in which the tiny builder is really prepared (no network involved)."""
    return prepare_tiny_tfds(tmp_path_factory.mktemp("tfds"))
