"""Rewrite checkpoints saved before `kernel_basis` (se2's steerable coefficients in the legacy SVD basis) in the
current Gram-Schmidt basis, so that they mean the same filters on every machine.

Run it on the machine (the numpy/LAPACK build) that trained them: the legacy basis's signs are that build's.
Usage: python scripts/upgrade_kernel_basis.py RUN_OR_CHECKPOINT [...]
"""

from __future__ import annotations

import sys

from histoeq.runs.checkpoint import upgrade_kernel_basis

if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {'rewritten in the current basis' if upgrade_kernel_basis(arg) else 'already current'}")
