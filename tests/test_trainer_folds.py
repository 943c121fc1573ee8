"""Track_H 3/1/1 group folds, the fold-02 warm start, presets and the trainer's Prometheus endpoint."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("GODRUN_NUM_THREADS", "1")

from godrun.errors import InputError
from godrun.model import checkpoint as ck
from godrun.trainer import folds
from godrun.trainer.loop import Trainer
from godrun.trainer.presets import PRESETS, preset_recipe, rooted


def test_group_folds_are_3_1_1_disjoint_and_cover_every_group() -> None:
    groups = [f"treatment_{t}/sample_{s}/{a}" for t in range(1, 6) for s in "FGHJK" for a in ("6Oclock", "12Oclock")]
    parts = folds.group_parts(groups * 3, seed=0)
    assert sorted(g for p in parts for g in p) == sorted(set(groups))
    tests_seen = []
    for k in range(1, 6):
        split = folds.split_fold(parts, k)
        tr, va, te = set(split["train"]), set(split["val"]), set(split["test"])
        assert not (tr & va or tr & te or va & te)
        assert tr | va | te == set(groups)
        assert len(va) == len(te) == len(groups) // 5 and len(tr) == 3 * len(groups) // 5
        tests_seen += split["test"]
    assert sorted(tests_seen) == sorted(set(groups))  # every group is tested exactly once
    assert folds.group_parts(groups, seed=0) == parts and folds.group_parts(groups, seed=1) != parts


def test_too_few_groups_is_input_error() -> None:
    with pytest.raises(InputError, match="at least 5 groups"):
        folds.group_parts(["a", "b"], seed=0)


def test_folds_cli_writes_fold02_checkpoint(small_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    for sub in ("data",):
        (tmp_path / sub).symlink_to(small_corpus / sub)
    monkeypatch.chdir(tmp_path)
    assert folds.main(["--folds", "2", "--preset", "tiny", "--epochs", "1"]) == 0
    best = tmp_path / "checkpoints/prod/Track_H_fold_02/mamba_tiny_uv_best.pt"
    got = ck.load_checkpoint(best)
    assert got.meta.config["init_checkpoint"] is None and got.meta.epoch == 1
    train = pd.read_csv(tmp_path / "data/folds/Track_H_fold_02/train.csv")
    val = pd.read_csv(tmp_path / "data/folds/Track_H_fold_02/val.csv")
    panel = pd.read_csv(tmp_path / "data/validation_panel.csv")
    assert not set(train.group_id) & set(val.group_id)
    assert not set(panel.group_id) & (set(train.group_id) | set(val.group_id))


def test_presets_are_valid_recipes_keeping_the_seed_losses() -> None:
    seed = preset_recipe("seed")
    for name in PRESETS:
        r = preset_recipe(name)
        assert r.noise2noise and r.noise2noise_pairwise and r.dip_loss and r.geometry_film
        assert (r.dip_w_area, r.derivative_weight, r.curvature_weight_roi) == (
            seed.dip_w_area,
            seed.derivative_weight,
            seed.curvature_weight_roi,
        )
    assert preset_recipe("demo").init_checkpoint == seed.init_checkpoint


def test_prometheus_metrics_served_while_training(small_corpus: Path, tmp_path: Path) -> None:
    recipe = rooted(
        preset_recipe("tiny", init_checkpoint=None, epochs=1, steps_per_epoch=1, metrics_port=0), small_corpus, tmp_path
    )
    trainer = Trainer(recipe, log=False)
    try:
        trainer.run()
        body = urllib.request.urlopen(f"http://127.0.0.1:{trainer.prom.port}/metrics", timeout=10).read().decode()
    finally:
        trainer.close()
    for name in (
        "godrun_train_epoch 1.0",
        "godrun_train_spectra_total 16.0",
        "godrun_train_panel_psnr_mean_decibels",
        "godrun_train_panel_sam_mean_degrees",
        "godrun_train_best_epoch 1.0",
        "godrun_train_lr",
        "godrun_train_epoch_seconds",
        "godrun_train_loss",
        "godrun_train_epochs 1.0",
    ):
        assert name in body, name
