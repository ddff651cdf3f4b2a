"""Independent plain-numpy reference for the paper's ablation switches (docs/reference.md
§1.6): the fixed 2-D sine-cosine position embeddings, no position embeddings, and either
classifier, as a forward pass over an official-layout checkpoint.

Written from the formula, one value at a time with `math`, sharing no code with `vitcli`.
The forward pass reuses `numpy_vit.forward`, which adds whatever table the parameters hold to
every token: the sincos2d table with a zero row in front of it for a class token (which gets
no position embedding), or all zeros for `none`, are exactly those models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from tests.reference import numpy_vit

POSEMB = "Transformer/posembed_input/pos_embedding"


def sincos2d(rows: int, columns: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """(rows * columns, width) float64: token t = y * columns + x (row y, column x) gets, for
    each frequency k < width / 4 with omega_k = temperature^(-k / (width/4 - 1)), the values
    sin(x omega_k), cos(x omega_k), sin(y omega_k), cos(y omega_k) at k, q + k, 2q + k and
    3q + k (q = width / 4): the column's sines, its cosines, the row's sines, its cosines."""
    if width % 4 or width < 8:
        raise ValueError(f"width must be a multiple of 4, at least 8, got {width}")
    quarter = width // 4
    table = np.empty((rows * columns, width))
    for y in range(rows):
        for x in range(columns):
            token = y * columns + x
            for k in range(quarter):
                omega = temperature ** (-k / (quarter - 1))
                table[token, k] = math.sin(x * omega)
                table[token, quarter + k] = math.cos(x * omega)
                table[token, 2 * quarter + k] = math.sin(y * omega)
                table[token, 3 * quarter + k] = math.cos(y * omega)
    return table


def position_table(kind: str, grid: int, width: int, class_token: bool) -> np.ndarray:
    """The (1, tokens, width) table a `kind` model adds to its tokens, class row included."""
    rows = grid * grid + (1 if class_token else 0)
    if kind == "none":
        return np.zeros((1, rows, width))
    table = sincos2d(grid, grid, width)
    if class_token:
        table = np.concatenate([np.zeros((1, width)), table])
    return table[None]


def forward(params: Mapping[str, np.ndarray], images: np.ndarray, kind: str,
            grid: int) -> np.ndarray:
    """Logits of a sincos2d or none model whose other arrays are `params` (no table)."""
    width = params["embedding/kernel"].shape[-1]
    table = position_table(kind, grid, width, class_token="cls" in params)
    return numpy_vit.forward({**params, POSEMB: table}, images)
