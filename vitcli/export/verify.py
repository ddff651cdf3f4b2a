"""Runs an exported artefact in a fresh process and saves what it returns:

    python -m vitcli.export.verify FORMAT ARTEFACT INPUTS.npz OUTPUTS.npz

A fresh process proves the artefact stands alone: nothing of the exporting process (Keras
objects, registered layers, traced functions) can stand in for what the file lacks.
INPUTS.npz holds `pixels` (float32 NHWC in [0, 255]) and, for a format that serves images
(SavedModel), `encoded/<i>` (encoded images as uint8 bytes). OUTPUTS.npz keys are
`<input kind>/<route>/<output>`: the input kind is `pixels` or `images`, the route says how
the artefact was run. Each format's runner (`ExportFormat.run`) lives in its own module, which
imports its runtime only when it runs, so this process loads one format's runtime only.
"""

from __future__ import annotations

import sys

import numpy as np

from vitcli.export.formats import FORMATS


def main(arguments: list[str]) -> int:
    fmt, artefact, inputs_path, outputs_path = arguments
    with np.load(inputs_path, allow_pickle=False) as archive:
        inputs = {key: archive[key] for key in archive.files}
    np.savez(outputs_path, **FORMATS[fmt].run(artefact, inputs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
