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
    truth = ((split.x - (split.clean - split.offset[:, None]) / split.scale[:, None]) ** 2).double().mean(0).numpy()
    # the ends carry ~1000x the ROI's noise; the pair estimate follows it within sampling error everywhere
    assert truth.max() / np.median(truth) > 100
    bands = np.array_split(np.arange(len(var)), 20)  # ~30 nm bands: per-wavelength values carry spikes
    ratio = np.array([var[b].mean() / truth[b].mean() for b in bands])
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio


def test_weights_follow_the_noise_power(split: ds.SplitData) -> None:
    var = ds.replicate_noise_variance(split)
    for power in (-1.0, 0.5):
        w = ds.noise_weights(var, power)
        assert w.mean() == pytest.approx(1.0, rel=1e-5)
        # w * var^-power is the same constant at every wavelength
        k = w * var ** (-power)
        assert np.allclose(k, k[0], rtol=1e-4)
    inverse, std = ds.noise_weights(var, -1.0), ds.noise_weights(var, 0.5)
    noisiest = int(np.argmax(var))
    assert inverse[noisiest] < 0.01 < 1.0 < std[noisiest]


def test_unpaired_rows_give_no_variance(split: ds.SplitData) -> None:
    alone = ds.SplitData(**{**split.__dict__, "partner": torch.arange(len(split))})
    assert not ds.replicate_noise_variance(alone).any()
    assert np.allclose(ds.noise_weights(ds.replicate_noise_variance(alone), 0.5), 1.0)


def test_recipe_weighting_reaches_the_loss(small_corpus: Path, tmp_path: Path) -> None:
    from godrun.trainer.loop import Trainer

    lams = {}
    for power in (0.0, 0.5):
        recipe = Recipe(noise_weight_power=power, init_checkpoint=None, device="cpu")
        r = rooted(recipe, small_corpus, tmp_path / str(power))
        t = Trainer(r, log=False)
        lams[power] = t.loss_fn.lam.numpy()
        t.close()
    var = ds.replicate_noise_variance(t.train_data)
    ratio = lams[0.5] / lams[0.0]
    k = ratio * var**-0.5
    assert np.allclose(k, k[0], rtol=1e-3)
