"""Data: sources (image folders, tensorflow-datasets), preprocessing ops, tf.data pipelines."""
