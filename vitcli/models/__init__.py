"""Keras 3 layers, the model builder and the variant table."""
