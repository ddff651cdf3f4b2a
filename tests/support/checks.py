"""Checks on what the library raises and on what it leaves on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vitcli.errors import VitcliError


def vitcli_error(function, *args, **kwargs) -> str:
    """Calls `function`, requires a one-line VitcliError and returns its message (lowercase)."""
    with pytest.raises(Exception) as caught:
        function(*args, **kwargs)
    assert type(caught.value) is VitcliError, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message.lower()


def disk_snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """(sha256, mtime_ns) of every file under `directory`, by relative path."""
    return {
        str(path.relative_to(directory)): (hashlib.sha256(path.read_bytes()).hexdigest(),
                                           path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*")) if path.is_file()
    }
