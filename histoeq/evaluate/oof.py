"""Decisions from out-of-fold (OOF) predictions: the endpoints of docs/protocol.md per arm, and paired comparisons.

An arm is one ``oof.csv`` of a ``histoeq sweep --cv K`` (optionally one model/augment/fraction group of it), with
an optional spatial-context kernel applied within each patient's tile grid. The first arm is the reference; every
other arm is compared with it by the paired per-patient AUC difference, Holm-adjusted over the comparisons made in
one call (the declared family).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from histoeq.errors import InputError
from histoeq.evaluate.patients import (
    Estimate,
    choose_threshold,
    holm,
    mean_patient_auc,
    paired_auc_difference,
    per_patient_auc,
    pooled_metric,
)
from histoeq.slide.context import NO_CONTEXT, smooth_by_group

OOF_KEYS = ("model", "augment", "fraction")


@dataclass(frozen=True)
class Arm:
    name: str
    path: Path
    context: str = NO_CONTEXT


@dataclass(frozen=True)
class ArmResult:
    name: str
    patients: int
    excluded: list[str]  # patients with one class only
    mean_patient_auc: Estimate
    pooled_auc: Estimate
    threshold: float
    balanced_accuracy: Estimate
    f1: Estimate
    per_patient: pd.DataFrame


def parse_arm(spec: str) -> Arm:
    """``NAME=PATH[@KERNEL]`` or ``PATH[@KERNEL]`` (the name is then the file's folder name)."""
    name, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path, _, context = rest.partition("@")
    return Arm(name=name or Path(path).parent.name, path=Path(path), context=context or NO_CONTEXT)


def read_oof(arm: Arm, step: float) -> pd.DataFrame:
    """One arm's OOF table with a ``score`` column (P of the last class, after context)."""
    if not arm.path.is_file():
        raise InputError(arm.path, "no such OOF file (a histoeq sweep --cv K writes oof.csv)")
    try:
        table = pd.read_csv(arm.path, dtype={"patient": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(arm.path, f"unreadable CSV ({str(exc).splitlines()[0]})") from None
    probs = [c for c in table.columns if c.startswith("p_")]
    missing = [c for c in ("id", "patient", "x", "y", "label") if c not in table.columns]
    if missing or len(probs) != 2:
        raise InputError(arm.path, f"not a two-class OOF table (missing {', '.join(missing) or 'p_<class> columns'})")
    groups = table[[k for k in OOF_KEYS if k in table.columns]].drop_duplicates()
    if len(groups) > 1:
        raise InputError(arm.path, f"holds {len(groups)} model/augment/fraction groups; split it first")
    if table["id"].duplicated().any():
        raise InputError(arm.path, "a patch is predicted twice (overlapping sweeps in one folder?)")
    table = table.sort_values("id").reset_index(drop=True)
    table["score"] = smooth_by_group(table["x"].to_numpy(), table["y"].to_numpy(), table[probs[1]].to_numpy(),
                                     table["patient"].to_numpy(), step, arm.context)
    return table


def arm_result(name: str, table: pd.DataFrame, n_boot: int) -> ArmResult:
    labels, scores, patients = table["label"].to_numpy(), table["score"].to_numpy(), table["patient"].to_numpy()
    per_patient = per_patient_auc(labels, scores, patients)
    threshold = choose_threshold(labels, scores)
    return ArmResult(
        name=name, patients=int(per_patient["auc"].notna().sum()),
        excluded=per_patient.loc[per_patient["auc"].isna(), "patient"].tolist(),
        mean_patient_auc=mean_patient_auc(per_patient, n_boot),
        pooled_auc=pooled_metric(labels, scores, patients, "auc", n_boot=min(n_boot, 2000)),
        threshold=threshold,
        balanced_accuracy=pooled_metric(labels, scores, patients, "balanced_accuracy", threshold,
                                        n_boot=min(n_boot, 2000)),
        f1=pooled_metric(labels, scores, patients, "f1", threshold, n_boot=min(n_boot, 2000)),
        per_patient=per_patient)


def compare_arms(arms: list[Arm], step: float = 50.0, n_boot: int = 10_000) -> tuple[list[ArmResult], pd.DataFrame]:
    """Endpoints per arm, and each later arm against the first (paired by patient; Holm over the comparisons)."""
    tables = [read_oof(arm, step) for arm in arms]
    ref_ids = tables[0]["id"].to_numpy()
    for arm, table in zip(arms[1:], tables[1:]):
        if not np.array_equal(table["id"].to_numpy(), ref_ids):
            raise InputError(arm.path, f"predicts other patches than {arms[0].path} (not the same CV pool)")
    results = [arm_result(arm.name, table, n_boot) for arm, table in zip(arms, tables)]
    rows = []
    for result in results[1:]:
        diff = paired_auc_difference(results[0].per_patient, result.per_patient, n_boot)
        rows.append({"comparison": f"{result.name} − {results[0].name}", "mean_delta_patient_auc": diff.value,
                     "ci95_low": diff.low, "ci95_high": diff.high, "p": diff.p,
                     "better_patients": int((result.per_patient.set_index("patient")["auc"]
                                             - results[0].per_patient.set_index("patient")["auc"] > 0).sum())})
    comparisons = pd.DataFrame(rows, columns=["comparison", "mean_delta_patient_auc", "ci95_low", "ci95_high", "p",
                                              "better_patients"])
    if len(comparisons):
        comparisons["p_holm"] = holm(comparisons["p"].tolist())
        comparisons["adopted"] = (comparisons["mean_delta_patient_auc"] > 0) & (comparisons["p_holm"] < 0.05)
    return results, comparisons
