"""Dips the measurement does not back are filled; dips it backs are left alone (godrun.model.dipcheck)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from godrun.contract.checkpoint import CheckpointMeta
from godrun.errors import InputError
from godrun.gates.metrics import detect_dips
from godrun.model import normalise
from godrun.model.dipcheck import evidence, unsupported_dips_filled
from godrun.model.inference import predict
from godrun.spec import SEED_DETECTOR, Recipe

WL = np.arange(200.0, 801.0)
LEVEL, SD = 0.64, 0.0048  # default profile's flat stretch at 331-395 nm: level and white-noise sd per point


def _dip(depth: float, centre: float = 360.0, sigma: float = 12.0) -> np.ndarray:
    return LEVEL * (1.0 - depth * np.exp(-0.5 * ((WL - centre) / sigma) ** 2))


def _noise(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, SD, (n, len(WL)))


def _window(y: np.ndarray) -> tuple[int, int]:
    (d,) = detect_dips(y, WL)
    return int(np.searchsorted(WL, d.left_nm)), int(np.searchsorted(WL, d.right_nm))


def test_a_shallow_dip_the_flat_measurement_does_not_show_is_filled() -> None:
    pred = _dip(0.012)[None]
    assert detect_dips(pred[0], WL)  # gate 3 would call it a dip (and, the reference flat, a spurious one)
    measured = LEVEL + _noise(1)
    out, n = unsupported_dips_filled(pred, measured, WL, SEED_DETECTOR, 8.0)
    assert n == 1 and detect_dips(out[0], WL) == []
    lo, hi = _window(pred[0])
    outside = np.r_[0:lo, hi + 1 : len(WL)]
    assert np.array_equal(out[0, outside], pred[0, outside])
    assert np.abs(out[0, lo : hi + 1] - LEVEL).max() < 1e-3  # filled up to the (flat) guard-band line


def test_a_dip_the_measurement_shows_is_kept_bit_for_bit() -> None:
    pred = np.stack([_dip(0.012), _dip(0.08, centre=420.0, sigma=6.0)])
    measured = pred + _noise(2, 2) * np.array([[0.25], [1.0]])  # the shallow dip at a quarter of the noise
    out, n = unsupported_dips_filled(pred, measured, WL, SEED_DETECTOR, 8.0)
    assert n == 0 and np.array_equal(out, pred)
    # at the full noise the shallow dip, though really there, is backed by ~4 standard errors only: filled
    (lo, hi), found = _window(pred[0]), []
    for seed in range(20):
        e = evidence(pred[0], pred[0] + _noise(seed)[0], WL, lo, hi, 10)
        assert e is not None
        found.append(e.a / e.se)
    assert 2.5 < np.median(found) < 6.0
    _, n_noisy = unsupported_dips_filled(pred[:1], pred[:1] + _noise(3), WL, SEED_DETECTOR, 8.0)
    assert n_noisy == 1


def test_zero_disables_and_the_input_is_not_changed() -> None:
    pred = _dip(0.012)[None]
    before = pred.copy()
    out, n = unsupported_dips_filled(pred, LEVEL + _noise(4), WL, SEED_DETECTOR, 0.0)
    assert n == 0 and np.array_equal(out, pred) and np.array_equal(pred, before)
    _, n = unsupported_dips_filled(pred, LEVEL + _noise(4), WL, SEED_DETECTOR, 8.0)
    assert n == 1 and np.array_equal(pred, before)


def test_the_amplitude_and_its_standard_error_match_a_simulation() -> None:
    """a is unbiased for a measurement dipping `amp` times as deep as the prediction, and its spread over noise
    draws is the standard error the function states (an independent check: 600 draws)."""
    pred = _dip(0.012)
    lo, hi = _window(pred)
    amp = 0.5
    measured = LEVEL - amp * (LEVEL - pred) + _noise(5, 600)
    found = [evidence(pred, m, WL, lo, hi, 10) for m in measured]
    assert all(f is not None for f in found)
    a = np.array([f.a for f in found if f is not None])
    se = np.array([f.se for f in found if f is not None])
    assert abs(a.mean() - amp) < 4 * a.std() / np.sqrt(len(a))
    assert a.std() == pytest.approx(np.median(se), rel=0.12)


def test_a_window_without_a_guard_band_on_one_side_is_not_judged() -> None:
    pred = _dip(0.012)
    assert evidence(pred, pred, WL, 0, 40, 10) is None  # nothing left of the window
    assert evidence(np.full(len(WL), LEVEL), pred, WL, 100, 140, 10) is None  # a prediction with no deficit


class _InventsADip(torch.nn.Module):
    """A 'network' whose answer for row i is out[i] (normalised frame), whatever the input: a shallow dip."""

    def __init__(self, out: np.ndarray) -> None:
        super().__init__()
        self.out = torch.from_numpy(out.astype(np.float32))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.out[: len(x)].clone()


@pytest.mark.parametrize("min_se", [8.0, 0.0])
def test_predict_fills_a_dip_the_network_invents_unless_disabled(min_se: float) -> None:
    raw = (LEVEL + 0.2 * (WL - 200.0) / 600.0 + _noise(6, 3)).astype(np.float32)  # flat but for a gentle tilt
    params = normalise.fit(raw)
    invented = np.stack([_dip(0.012) + 0.2 * (WL - 200.0) / 600.0] * 3)
    out_n = (invented - params["offset"][:, None]) / params["scale"][:, None]
    meta = CheckpointMeta(config=Recipe(geometry_film=False, dip_evidence_se=min_se).model_dump(), epoch=1)
    pred = predict(_InventsADip(out_n), meta, raw, None, WL)
    assert pred.dtype == np.float32 and pred.shape == raw.shape
    dips = [detect_dips(p.astype(np.float64), WL) for p in pred]
    assert all(dips) if min_se == 0 else not any(dips)
    with pytest.raises(InputError, match="grid"):
        predict(_InventsADip(out_n), meta, raw, None, WL[:-1])
