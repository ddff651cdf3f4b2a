"""The one place where process-wide defaults are set, before TensorFlow is first imported.

Keras must run on the TensorFlow backend, and TensorFlow's C++ start-up chatter
(oneDNN, CUDA probing) would bury vitcli's own output. Both are defaults only: a
user's own environment variables win.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
