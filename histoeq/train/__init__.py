"""Training: the training loop, its batch pipeline, distributed launch and the model adapter it builds from.

What a run leaves behind (checkpoints, run records) is `histoeq.runs`, read by the later stages without this package.
"""
