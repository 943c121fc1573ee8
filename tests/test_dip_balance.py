"""The dip balance (Recipe.dip_balance): the dip loss scaled so that its floor does not drive the steps.

In quiet, correlated noise a Noise2Noise target's dip features carry noise that no prediction can follow; on
the prior's output for the raw inputs the dip loss was ~40x the pixel terms there, and the panel PSNR drifted
down after mid-run. Under the default profile's loud noise the pixel terms dominate and nothing changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GODRUN_NUM_THREADS", "1")

from test_trainer_train import small_recipe

from godrun.cli import main
from godrun.spec import Recipe
from godrun.trainer.loop import Trainer
from godrun.trainer.losses import SpectralLoss


@pytest.fixture(scope="module")
def quiet_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quiet_corpus")
    assert main(["data", "synth", "--out", str(root), "--scale", "0.05", "--noise-profile", "skspec-fit"]) == 0
    assert main(["data", "panel", "--root", str(root)]) == 0
    return root


def _scale(corpus: Path, out: Path, **kw: object) -> float:
    trainer = Trainer(small_recipe(corpus, out, **kw), log=False)
    try:
        return trainer.loss_fn.dip_scale
    finally:
        trainer.close()


def test_quiet_correlated_noise_scales_the_dip_loss_down_and_loud_noise_does_not(
    small_corpus: Path, quiet_corpus: Path, tmp_path: Path
) -> None:
    quiet = _scale(quiet_corpus, tmp_path / "quiet")
    assert 0 < quiet < 0.2, quiet
    assert _scale(small_corpus, tmp_path / "default") == 1.0  # scaled down, never up


def test_the_scale_depends_on_the_data_and_seed_alone(quiet_corpus: Path, tmp_path: Path) -> None:
    assert _scale(quiet_corpus, tmp_path / "a") == _scale(quiet_corpus, tmp_path / "b")  # a resume recomputes it


def test_no_balance_when_off_without_the_prior_or_with_clean_targets(quiet_corpus: Path, tmp_path: Path) -> None:
    assert _scale(quiet_corpus, tmp_path / "off", dip_balance=False) == 1.0
    assert _scale(quiet_corpus, tmp_path / "rank0", subspace_rank=0) == 1.0
    clean = {"noise2noise": False, "noise2noise_pairwise": False}
    assert _scale(quiet_corpus, tmp_path / "clean", **clean) == 1.0  # clean targets: no noise floor


def test_the_scale_weighs_the_dip_term_and_nothing_else() -> None:
    g = torch.Generator().manual_seed(0)
    wl = torch.linspace(200, 800, 601)
    dips = 1.0 - 0.3 * torch.exp(-0.5 * ((wl - 400) / 6) ** 2)  # one dip in the ROI, in every row
    target = dips + 0.02 * torch.randn(8, 601, generator=g)
    pred = dips + 0.02 * torch.randn(8, 601, generator=g)
    loss = SpectralLoss(Recipe(), wl, None)
    zero, one = torch.zeros(8), torch.ones(8)
    full, parts = loss(pred, target, zero, one)
    loss.dip_scale = 0.25
    scaled, again = loss(pred, target, zero, one)
    assert parts["dip"] > 0 and again == {**parts, "total": again["total"]}
    assert torch.isclose(full - scaled, torch.tensor(0.75 * Recipe().dip_weight * parts["dip"]), rtol=1e-5)
