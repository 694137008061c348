"""Device check for the train area (run by hand on a CUDA machine, not collected by pytest).

    python tests/bench/bench_train_gpu.py DATASET OUT_DIR

1. `bench_train`: one training epoch per model on the dataset's train split (AMP off: it times the plain step);
2. `train` on CUDA (bf16 AMP, uint8 array on the GPU) for cnn and p4m, then `--resume` of a finished run (no-op);
3. `evaluate_runs` with 4 rotations + flips (exact views only): p4m must have zero D4 spread on the GPU too.
Prints one JSON line per result.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from histoeq.evaluate.report import evaluate_runs
from histoeq.lab.bench_train import bench_train
from histoeq.train.config import TrainConfig
from histoeq.train.trainer import train


def main(data: str, out: str) -> None:
    out_dir = Path(out)
    print(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}), flush=True)
    for batch in (128, 512):
        for row in bench_train(data, ["cnn", "p4", "p4m", "se2"], batch_size=batch, device="cuda"):
            row.pop("config")
            print(json.dumps({"bench": row, "batch_size": batch}), flush=True)
    runs = []
    for model in ("cnn", "p4m"):
        start = time.perf_counter()
        result = train(TrainConfig(data=Path(data), model=model, out=out_dir / f"run_{model}", epochs=3,
                                   augment="rot90+flip", device="cuda", batch_size=256))
        print(json.dumps({"train": result, "wall_s": time.perf_counter() - start}), flush=True)
        runs.append(out_dir / f"run_{model}")
    again = train(TrainConfig(data=Path(data), model="cnn", out=runs[0], epochs=3, augment="rot90+flip",
                              device="cuda", batch_size=256, resume=True))
    print(json.dumps({"resume_finished_run": again["status"], "epochs_run": again["epochs_run"]}), flush=True)
    record = evaluate_runs(runs, data, out_dir / "eval", rotations=4, flips=True, device="cuda")
    for r in record["runs"]:
        print(json.dumps({"eval": r["run"], "auc_identity": r["summary"]["auc"]["identity"],
                          "spread_exact": r["spread"]["exact"], "label_change": r["label_change_fraction"]}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
