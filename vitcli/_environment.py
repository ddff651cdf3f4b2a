"""The one place where process-wide defaults are set, before TensorFlow is first imported.

Keras must run on the TensorFlow backend, and TensorFlow's C++ start-up chatter
(oneDNN, CUDA probing) would bury vitcli's own output. Both are defaults only: a
user's own environment variables win.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up lines (printed regardless of
    TF_CPP_MIN_LOG_LEVEL in TF 2.21) sent to /dev/null; errors still surface."""
    import sys

    if "tensorflow" in sys.modules or os.environ.get("VITCLI_DEBUG"):
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
