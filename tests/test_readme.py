"""The README is the user's guide: its Python example must run as printed, and it must stay a guide."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_example_runs_against_the_shipped_model() -> None:
    blocks = _python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "the README has one Python example"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-c", blocks[0]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    # What the comments in the example promise: the registry's names, logits (2, 2), the shipped model's classes,
    # its µm/px and probabilities (4, 2).
    assert out[0].startswith("['cnn',") and "'p4m'" in out[0] and out[0].endswith("torch.Size([2, 2])"), out
    assert out[1] == "['non-IDC', 'IDC'] 4.0 (4, 2)", out


def test_readme_stays_a_guide() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    for section in ("## Install", "## Quick start", "## Commands", "## Python API", "## Development"):
        assert section in text, section
