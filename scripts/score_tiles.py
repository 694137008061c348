"""Tile-level scores of `histoeq predict` outputs against per-tile ground truth (the IDC `<patient>.tiles.csv`).

    python scripts/score_tiles.py PRED_DIR TRUTH_DIR [--positive IDC] [--threshold 0.5]

A predicted tile matches a ground-truth tile when its centre lies inside it (both in level-0 pixels). Prints one
line per slide and the pooled figures: tiles matched, AUC, balanced accuracy and F1 (scikit-learn).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score


def match(pred: pd.DataFrame, truth: pd.DataFrame, tile: int, positive: str) -> pd.DataFrame:
    """Ground-truth rows with the probability of the predicted tile whose centre falls inside them."""
    cx = (pred["minx"] + pred["width"] / 2).to_numpy()
    cy = (pred["miny"] + pred["height"] / 2).to_numpy()
    keys = {(int(x // tile), int(y // tile)): p for x, y, p in zip(cx - 1, cy - 1, pred[f"prob_{positive}"])}
    # IDC patches sit on a 50 px grid offset by 1 px; key both sides by the grid cell of (coordinate - 1).
    cells = zip(((truth["x"] - 1) // tile).astype(int), ((truth["y"] - 1) // tile).astype(int))
    out = truth.copy()
    out["prob"] = [keys.get(c, np.nan) for c in cells]
    return out


def scores(frame: pd.DataFrame, threshold: float) -> dict[str, float]:
    got = frame.dropna(subset=["prob"])
    y, p = got["label_idc"].to_numpy(), got["prob"].to_numpy()
    return {"tiles": len(frame), "matched": len(got), "auc": roc_auc_score(y, p),
            "balanced_accuracy": balanced_accuracy_score(y, p >= threshold), "f1": f1_score(y, p >= threshold)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred_dir", type=Path)
    parser.add_argument("truth_dir", type=Path)
    parser.add_argument("--positive", default="IDC")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--tile", type=int, default=50)
    args = parser.parse_args()
    frames = []
    for pred_csv in sorted(args.pred_dir.glob("*.csv")):
        truth_csv = args.truth_dir / f"{pred_csv.stem}.tiles.csv"
        if not truth_csv.exists():
            continue
        frame = match(pd.read_csv(pred_csv), pd.read_csv(truth_csv), args.tile, args.positive)
        frame["slide"] = pred_csv.stem
        frames.append(frame)
        s = scores(frame, args.threshold)
        print(f"{pred_csv.stem}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in s.items()))
    if not frames:
        print(f"error: {args.pred_dir}: no predictions with ground truth in {args.truth_dir}", file=sys.stderr)
        return 2
    pooled = scores(pd.concat(frames), args.threshold)
    print("pooled: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in pooled.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
