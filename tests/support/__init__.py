"""Helpers shared by the tests: import them from here, never from a conftest.py (conftest files
hold only fixtures, built with these helpers).

cli          the in-process CLI runner, `invoke` and the one-`error:`-line checks
checks       `vitcli_error` (a one-line VitcliError) and `disk_snapshot`
checkpoints  tiny official-layout checkpoint shapes and `official_checkpoint`
models       random images, logits and their parity tolerance, weights by path, nested
             layers, random non-zero weights, the inspection tests' tiny models
layers       the layer battery (config round trip, .keras save/load, mixed precision)
images       image-folder makers (colour folders, labelled-id folders, PNGs) and readers
tfds         a tiny real tensorflow-datasets builder and mnist's metadata
export       the tiny export model's settings and the serving helpers
runs         what finished runs hold: trained weights, checkpoint steps, optimizer arrays
memory       resident memory sampled while something runs (standard library only)

This package imports nothing itself, so a subprocess started in the repository root can take
one module, as `python -c "from tests.support.memory import rss_during ..."` does.
"""
