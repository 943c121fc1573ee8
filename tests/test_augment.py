"""Train-only augmentation (godrun.trainer.dataset.augment): jitter and cutout act on input and target alike."""

from __future__ import annotations

import torch

from godrun.spec import Recipe
from godrun.trainer import dataset as ds


def test_cutout_zeroes_the_same_window_in_input_and_target() -> None:
    """A window the model cannot see is not charged as an error: the target loses it too (docs/noise.md)."""
    recipe = Recipe(cutout_prob=1.0, cutout_nm=8.0, jitter_nm=0.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 601) + 1.0  # no zero anywhere before the cutout
    y = x + 0.01 * torch.randn(16, 601, generator=gen)
    xa, ya, mask, _ = ds.augment(x.clone(), y.clone(), recipe, gen, 1.0)
    cut = xa == 0
    assert torch.equal(mask, cut)
    assert torch.equal(cut.sum(1), torch.full((16,), 8))  # one 8 nm window per row
    assert torch.equal(ya == 0, cut)
    assert torch.equal(xa[~cut], x[~cut]) and torch.equal(ya[~cut], y[~cut])


def test_jitter_shifts_input_and_target_together() -> None:
    recipe = Recipe(cutout_prob=0.0, jitter_nm=1.0)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 601)
    xa, ya, mask, shift = ds.augment(x.clone(), x.clone(), recipe, gen, 1.0)
    assert torch.equal(xa, ya) and not torch.equal(xa, x) and not mask.any()
    assert torch.equal(ds.shift_spectra(x, shift), xa) and shift.abs().max() <= 1.0
