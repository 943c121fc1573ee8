"""Loss weights from the replicate pairs' noise variance (no clean data): the estimate and the weighting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from godrun.spec import Recipe
from godrun.trainer import dataset as ds
from godrun.trainer.presets import rooted


@pytest.fixture(scope="module")
def split(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> ds.SplitData:
    recipe = rooted(Recipe(), small_corpus, tmp_path_factory.mktemp("nw"))
    return ds.load_split(recipe, recipe.train_manifest, None, with_weights=False, verify=False)


def test_replicate_pairs_estimate_the_true_noise_variance(split: ds.SplitData) -> None:
    var = ds.replicate_noise_variance(split)
    truth = ((split.x - (split.reference - split.offset[:, None]) / split.scale[:, None]) ** 2).double().mean(0).numpy()
    # the ends carry ~1000x the ROI's noise; the pair estimate follows it within sampling error everywhere
    assert truth.max() / np.median(truth) > 100
    bands = np.array_split(np.arange(len(var)), 20)  # ~30 nm bands: per-wavelength values carry spikes
    ratio = np.array([var[b].mean() / truth[b].mean() for b in bands])
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio


def _roi(n: int) -> np.ndarray:
    wl = np.linspace(200.0, 800.0, n)
    return (wl >= 320.0) & (wl <= 500.0)


def test_weights_follow_the_noise_power_outside_the_roi(split: ds.SplitData) -> None:
    var = ds.replicate_noise_variance(split)
    roi = _roi(len(var))
    lam = np.linspace(0.5, 1.5, len(var)).astype(np.float32)
    for power in (-1.0, 0.5):
        w = ds.noise_weighted(lam, var, power, roi)
        # the ROI keeps its λ-weights; outside it the weight is moved around, its total kept
        assert np.array_equal(w[roi], lam[roi])
        assert w[~roi].sum() == pytest.approx(lam[~roi].sum(), rel=1e-5)
        # outside the ROI, (w / λ) * var^-power is the same constant at every wavelength
        k = (w / lam * var ** (-power))[~roi]
        assert np.allclose(k, k[0], rtol=1e-4)
    inverse, std = ds.noise_weighted(lam, var, -1.0, roi), ds.noise_weighted(lam, var, 0.5, roi)
    noisiest = int(np.argmax(var))
    assert not roi[noisiest]
    assert inverse[noisiest] < 0.01 * lam[noisiest] < lam[noisiest] < std[noisiest]


def test_unpaired_rows_give_no_variance(split: ds.SplitData) -> None:
    alone = ds.SplitData(**{**split.__dict__, "partner": torch.arange(len(split))})
    var = ds.replicate_noise_variance(alone)
    assert not var.any()
    lam = np.ones(len(var), np.float32)
    assert np.allclose(ds.noise_weighted(lam, var, 0.5, _roi(len(var))), 1.0)


def test_recipe_weighting_reaches_the_loss_and_leaves_the_roi_alone(small_corpus: Path, tmp_path: Path) -> None:
    from godrun.trainer.loop import Trainer

    lams = {}
    for power in (0.0, 0.5):
        recipe = Recipe(noise_weight_power=power, init_checkpoint=None, device="cpu")
        r = rooted(recipe, small_corpus, tmp_path / str(power))
        t = Trainer(r, log=False)
        lams[power] = t.loss_fn.lam.numpy()
        t.close()
    var = ds.replicate_noise_variance(t.train_data)
    roi = (t.wl >= 320.0) & (t.wl <= 500.0)
    ratio = lams[0.5] / lams[0.0]
    k = (ratio * var**-0.5)[~roi]
    assert np.allclose(k, k[0], rtol=1e-3)
    # the ends gain weight, the ROI's MSE weight (next to the dip and derivative terms) does not move:
    # spreading the weighting over the whole grid cut the ROI's share of the weight ~6x (ROI ratio fell)
    assert ratio[np.argmax(var)] > 3.0
    assert np.allclose(ratio[roi], 1.0, rtol=1e-5)
