"""Shared export fixtures: one tiny random ViT and each format exported from it once per
session (converters are slow); the helpers are in tests/support/export.py."""

from __future__ import annotations

import pytest

from tests.support.export import LABELS, TINY, TOP_K
from tests.support.models import randomise_weights
from vitcli.export import export_model
from vitcli.models.vit import build_vit


@pytest.fixture(scope="session")
def model():
    """The tiny ViT with random non-zero weights everywhere (the head too), so probabilities
    are far from uniform and a wrong weight shows."""
    vit = build_vit(TINY)
    randomise_weights(vit, seed=0)
    return vit


@pytest.fixture(scope="session")
def exported(model, tmp_path_factory):
    """`exported(fmt)`: the ExportResult of `fmt`, exported (and verified) once per session."""
    folder = tmp_path_factory.mktemp("exports")
    results = {}

    def result_of(fmt: str):
        if fmt not in results:
            out = folder / ("served" if fmt == "savedmodel" else f"model_{fmt}")
            results[fmt] = export_model(model, fmt, out, labels=LABELS, top_k=TOP_K)
        return results[fmt]

    return result_of
