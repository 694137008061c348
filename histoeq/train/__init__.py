"""Training: run folders, checkpoints, the training loop, distributed launch, sweeps and the training benchmark.

Submodules are imported where needed so that `histoeq.train.checkpoint` stays cheap to import (export and predict use
it without the training machinery).
"""
