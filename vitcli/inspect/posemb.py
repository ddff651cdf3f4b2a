"""Position-embedding similarity (docs/reference.md §8, paper Fig. 7 centre).

For each grid position, the cosine similarity of its learned embedding with every other
position's: close positions come out similar, and row/column structure appears, although the
model was never told the patches form a 2-D grid.
"""

from __future__ import annotations

import keras
import numpy as np

from vitcli.errors import VitcliError
from vitcli.inspect.attention import token_layout


def grid_embeddings(model: keras.Model) -> np.ndarray:
    """(grid rows, grid columns, D) position embeddings of the patches (the class token's row
    left out)."""
    layout = token_layout(model)
    names = [layer.name for layer in model.layers]
    if "posembed_input" not in names:
        raise VitcliError(f"model '{model.name}' has no position embeddings (posemb none)",
                          hint="a learned or sincos2d model has a table to draw")
    table = np.asarray(model.get_layer("posembed_input").pos_embedding, np.float64)[0]
    patches = table[layout.num_prefix_tokens:]
    return patches.reshape(*layout.grid_shape, -1)


def cosine_similarity_grid(embeddings: np.ndarray) -> np.ndarray:
    """(grid, grid, D) -> (grid, grid, grid, grid): [i, j, k, l] is the cosine similarity of
    position (i, j) with position (k, l)."""
    rows, columns, width = embeddings.shape
    vectors = np.asarray(embeddings, np.float64).reshape(rows * columns, width)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    # A zero embedding (untrained or pruned) has no direction: similarity 0, not NaN.
    units = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return (units @ units.T).reshape(rows, columns, rows, columns)
