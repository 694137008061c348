"""Run artefacts every later stage reads: checkpoints, run records, and how a model's inputs are prepared.

Training writes these and evaluation, export and the sweeps read them, so they sit below all of those: a checkpoint
is loaded the same way everywhere, on a device chosen the same way, with tiles normalised the same way.
"""
