"""The dip loss (torch) and gate 3 (numpy) measure a dip the same way.

Same window, same guard bands, same smoothing: the loss's differentiable measurement and the gate's
`_measure_window` must agree. On the clean panel references they agree to float rounding; on a
de-noised prediction within DIP_AGREEMENT (2 % relative, a fifth of the gate's 10 % tolerance), the
one difference being the gate's running-median de-spiking of the guard bands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from godrun.data import layout
from godrun.data.loader import load_corpus
from godrun.evaluator.denoisers import DENOISERS
from godrun.gates import metrics
from godrun.spec import DipDetector, Recipe
from godrun.trainer.losses import SpectralLoss

DIP_AGREEMENT = 0.02


@pytest.fixture(scope="module")
def panel(small_corpus: Path):
    return load_corpus(
        small_corpus / layout.PANEL_MANIFEST,
        small_corpus / layout.SPECTRA_DIR,
        wavelength_grid=small_corpus / layout.WAVELENGTH_GRID,
    )


def _both(panel, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative differences (area, depth) of loss vs gate measurements of `pred` in every reference dip window."""
    wl = panel.wavelengths
    recipe = Recipe()
    loss = SpectralLoss(recipe, torch.from_numpy(wl), None).double()
    cfg = DipDetector(guard_nm=recipe.baseline_guard_nm, smooth_nm=recipe.dip_detect_sigma_nm)
    prepared, refs = metrics._prepare(pred, wl, cfg), metrics._prepare(panel.reference.astype(np.float64), wl, cfg)
    offset = metrics._crop(wl, cfg).start
    h = round(recipe.dip_window_half_nm / float(np.median(np.diff(wl))))
    d_area, d_depth = [], []
    for i in range(len(pred)):
        dips = metrics._detect(refs[i], cfg)
        if not dips:
            continue
        centres = torch.tensor([[int(np.argmin(np.abs(wl - d.center_nm))) for d in dips]])
        windows = torch.stack([centres - h, centres + h], dim=-1)  # any window: here ±dip_window_half_nm
        got = loss.measure(loss.smooth(torch.from_numpy(pred[i : i + 1])), windows, None)
        for k in range(len(dips)):
            c = int(centres[0, k]) - offset
            want = metrics._measure_window(prepared[i], c - h, c + h, cfg)
            d_area.append(abs(float(got["area"][0, k]) - want.area) / abs(want.area))
            d_depth.append(abs(float(got["depth"][0, k]) - want.depth) / abs(want.depth))
    assert len(d_area) >= 10, "the panel should hold dips to compare"
    return np.array(d_area), np.array(d_depth)


def test_loss_and_gate_measure_reference_dips_identically(panel) -> None:
    area, depth = _both(panel, panel.reference.astype(np.float64))
    assert area.max() < 1e-6 and depth.max() < 1e-6


@pytest.mark.parametrize("denoiser", ["savgol", "gaussian"])
def test_loss_and_gate_agree_on_a_prediction(panel, denoiser: str) -> None:
    pred = DENOISERS[denoiser](panel.raw, panel.wavelengths).astype(np.float64)
    area, depth = _both(panel, pred)
    assert area.max() < DIP_AGREEMENT and depth.max() < DIP_AGREEMENT
