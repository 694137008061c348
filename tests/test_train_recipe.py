"""Recipe options of `histoeq train`: warm-up, weight averaging (EMA), label smoothing, stain-intensity jitter and
the fixed-budget selection that cross-validation needs (out-of-fold predictions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from histoeq.train.batches import hed_jitter, parse_augment
from histoeq.train.config import TrainConfig
from histoeq.train.trainer import VAL_PREDICTIONS, _schedule, train
from tests.test_train_helpers import small_idc_fixture_path, small_threads


def test_hed_jitter_is_the_identity_at_unit_scale_and_moves_stain_otherwise() -> None:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(30, 250, (4, 3, 8, 8), dtype=np.uint8))
    same = hed_jitter(images, torch.ones(4, 2), torch.zeros(4, 2))
    assert (same.int() - images.int()).abs().max() <= 1  # float round trip through optical density
    darker = hed_jitter(images, torch.full((4, 2), 1.05), torch.full((4, 2), 0.05))
    assert darker.float().mean() < images.float().mean() - 1.0  # more stain absorbs more light
    assert parse_augment("rot90+hed").hed and not parse_augment("rot90").hed


def test_warmup_then_cosine_schedule() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = _schedule(opt, total_steps=20, warmup_steps=4)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # non-increasing after the warm-up
    assert lrs[-1] < 0.02
    plain = _schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 20, 0)
    assert isinstance(plain, torch.optim.lr_scheduler.CosineAnnealingLR)


@pytest.mark.parametrize("option, value", [("warmup_epochs", 9.0), ("ema", 1.0), ("label_smoothing", -0.1),
                                           ("select", "best-ever"), ("train_on", "test")])
def test_recipe_options_are_range_checked(tmp_path: Path, option: str, value: object) -> None:
    from histoeq.errors import HistoeqError

    config = TrainConfig(data=tmp_path, model="cnn", out=tmp_path / "run", epochs=3, **{option: value})
    with pytest.raises(HistoeqError, match=option.replace("_", "-")):
        config.check()


@pytest.fixture(scope="module")
def small_idc(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    small_threads()
    return small_idc_fixture_path(idc_dir, tmp_path_factory)


class Interrupt(Exception):
    pass


def _config(data: Path, out: Path, **kw: object) -> TrainConfig:
    return TrainConfig(data=data, model="cnn", out=out, width=4, epochs=3, max_steps=3, batch_size=16,
                       augment="flip+hed", device="cpu", seed=3, warmup_epochs=1.0, ema=0.9,
                       label_smoothing=0.1, select="last", **kw)


@pytest.mark.realdata
def test_recipe_resumes_exactly_and_keeps_the_last_averaged_weights(small_idc: Path, tmp_path: Path) -> None:
    train(_config(small_idc, tmp_path / "unbroken"))

    def stop_in_second_epoch(task: str, done: int, total: int | None = None, message: str = "") -> None:
        if done > 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_config(small_idc, tmp_path / "broken"), progress=stop_in_second_epoch)
    train(_config(small_idc, tmp_path / "broken", resume=True))
    a = torch.load(tmp_path / "unbroken" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "last.pt", weights_only=True)
    for part in ("state_dict", "train_state_dict"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    # The averaged weights differ from the raw ones, and best.pt is the last epoch's average (nothing is chosen
    # on the validation patients).
    assert any(not torch.equal(v, a["train_state_dict"][k]) for k, v in a["state_dict"].items()
               if v.is_floating_point())
    best = torch.load(tmp_path / "unbroken" / "best.pt", weights_only=True)
    assert best["epoch"] == 2
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in a["state_dict"].items())
    info = json.loads((tmp_path / "unbroken" / "run.json").read_text())
    assert info["selection"] == "last" and info["optimizer"]["ema"] == 0.9


@pytest.mark.realdata
def test_val_predictions_are_the_selected_models_probabilities(small_idc: Path, tmp_path: Path) -> None:
    from histoeq.data.dataset import PatchDataset

    train(_config(small_idc, tmp_path / "run"))
    table = pd.read_csv(tmp_path / "run" / VAL_PREDICTIONS, dtype={"patient": str})
    data = PatchDataset.open(small_idc)
    val = data.split_ids("val")
    assert table["id"].tolist() == val.tolist()
    assert set(table.columns) >= {"id", "patient", "x", "y", "label"}
    prob_cols = [c for c in table.columns if c.startswith("p_")]
    assert len(prob_cols) == len(data.classes)
    np.testing.assert_allclose(table[prob_cols].sum(axis=1), 1.0, atol=1e-5)
    # They are the predictions the last validation scored: the same AUC as the run's last epoch.
    from sklearn.metrics import roc_auc_score

    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert roc_auc_score(table["label"], table[prob_cols[1]]) == pytest.approx(last["val_auc"], abs=1e-6)


def test_pooled_training_needs_the_fixed_budget(tmp_path: Path) -> None:
    from histoeq.errors import HistoeqError

    for extra in ({}, {"select": "best"}, {"select": "last", "cv_fold": "0/5"}):
        config = TrainConfig(data=tmp_path, model="cnn", out=tmp_path / "run", train_on="train+val", **extra)
        with pytest.raises(HistoeqError, match="--select last"):
            config.check()


@pytest.mark.realdata
def test_pooled_training_uses_every_train_and_val_patch_and_validates_nothing(small_idc: Path,
                                                                              tmp_path: Path) -> None:
    from histoeq.data.dataset import PatchDataset

    train(_config(small_idc, tmp_path / "run", train_on="train+val"))
    data = PatchDataset.open(small_idc)
    pool = np.concatenate([data.split_ids("train"), data.split_ids("val")])
    chosen = json.loads((tmp_path / "run" / "fraction_ids.json").read_text())
    assert sorted(chosen["ids"]) == sorted(pool.tolist())
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["n_val"] == 0 and info["val_patients"] == [] and info["options"]["train_on"] == "train+val"
    assert not (tmp_path / "run" / VAL_PREDICTIONS).exists()
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2] and all(np.isnan(h["val_auc"]) for h in history)
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["epoch"] == 2
