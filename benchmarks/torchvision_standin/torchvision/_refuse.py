"""Placeholders that refuse to run and record that something tried."""

from __future__ import annotations

import os

STANDIN_ROOT = os.path.dirname(os.path.abspath(__file__))
CALLS: list[str] = []


class StandInError(RuntimeError):
    """Raised by every stand-in function or class: the real torchvision is not installed."""


def refuse(name: str):
    CALLS.append(name)
    raise StandInError(f"torchvision stand-in: {name} is not available (import-only package, "
                       "see benchmarks/README.md)")


def function(module: str, name: str):
    """A function `module.name` that refuses to run."""

    def placeholder(*args, **kwargs):
        refuse(f"{module}.{name}")

    placeholder.__name__ = placeholder.__qualname__ = name
    placeholder.__module__ = module
    return placeholder


def placeholder_class(module: str, name: str):
    """A class `module.name` whose construction and call refuse to run (subclassable)."""

    def __init__(self, *args, **kwargs):
        refuse(f"{module}.{name}")

    def __call__(self, *args, **kwargs):
        refuse(f"{module}.{name}.__call__")

    return type(name, (), {"__init__": __init__, "__call__": __call__, "__module__": module})
