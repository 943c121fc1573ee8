"""Gate verdicts on the small synthetic panel: clean passes, raw fails gate 1, damaged dips fail gate 3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from godrun.evaluator.denoisers import DENOISERS
from godrun.evaluator.panel import (
    Panel,
    denoiser_candidate,
    evaluate_candidates,
    evaluate_prediction,
    load_panel,
    prediction_candidate,
)
from godrun.gates import metrics, ranking
from godrun.spec import DipDetector, Gates


@pytest.fixture(scope="module")
def panel(small_corpus: Path) -> Panel:
    data = small_corpus / "data"
    return load_panel(
        data / "validation_panel.csv",
        data / "spectra_for_fold",
        data / "spectra_for_fold" / "wavelength_grid.npy",
        metadata_csv=data / "metadata" / "dose_features.csv",
    )


def _gate(verdict, name: str):
    return next(g for g in verdict.gates if g.name == name)


def _check(verdict, gate: str, metric: str):
    return next(c for c in _gate(verdict, gate).checks if c.metric == metric)


def test_clean_reference_passes_all_four_gates(panel: Panel) -> None:
    _, verdict, _ = evaluate_prediction(panel, panel.reference.copy(), Gates())
    assert [g.name for g in verdict.gates] == ["aggregate", "tail", "roi", "downstream"]
    assert verdict.verdict == "pass" and verdict.failed_gates == []
    assert all(g.passed for g in verdict.gates)


def test_raw_spectra_fail_gate_1(panel: Panel) -> None:
    _, verdict, _ = evaluate_prediction(panel, denoiser_candidate("identity").predict(panel), Gates())
    assert verdict.verdict == "fail"
    assert not _gate(verdict, "aggregate").passed and "aggregate" in verdict.failed_gates
    # cross-check the PSNR number against an independent computation
    diff = panel.raw.astype(np.float64) - panel.reference
    rng = panel.reference.max(1) - panel.reference.min(1)
    expected = np.mean(10 * np.log10(rng.astype(np.float64) ** 2 / np.mean(diff**2, axis=1)))
    assert _check(verdict, "aggregate", "psnr_mean").value == pytest.approx(expected, rel=1e-6)


def _free_spot(refs: np.ndarray, wl: np.ndarray, cfg: DipDetector) -> tuple[int, float]:
    """A spectrum and an ROI position at least 25 nm away from every one of its reference dips."""
    for i, ref in enumerate(refs):
        dips = metrics.detect_dips(ref, wl, cfg)
        for c in np.arange(cfg.roi_min_nm + 25, cfg.roi_max_nm - 25, 2.0):
            if all(c < d.left_nm - 25 or c > d.right_nm + 25 for d in dips):
                return i, float(c)
    raise AssertionError("no spectrum of the panel has a dip-free stretch in the ROI (controls should)")


def test_one_injected_dip_fails_gate_3_on_spurious_peaks(panel: Panel) -> None:
    gates = Gates()
    cfg = gates.detector
    wl = panel.wavelengths
    pred = panel.reference.astype(np.float64).copy()
    i, c = _free_spot(panel.reference, wl, cfg)
    pred[i] *= 1.0 - 0.08 * np.exp(-0.5 * ((wl - c) / 5.0) ** 2)
    per, verdict, _ = evaluate_prediction(panel, pred.astype(np.float32), gates)
    assert int(per["n_spurious"].sum()) == 1 and per["n_spurious"].iloc[i] == 1
    assert not _gate(verdict, "roi").passed and verdict.spurious_peaks == 1
    assert not _check(verdict, "roi", "spurious_peaks").passed
    assert _check(verdict, "roi", "roi_ratio").passed  # only the spurious dip is wrong
    assert _gate(verdict, "tail").passed and _gate(verdict, "downstream").passed


def test_halving_dip_depth_fails_gate_3(panel: Panel) -> None:
    gates = Gates()
    cfg = gates.detector
    wl = panel.wavelengths
    s = metrics.smooth(panel.reference, wl, 0.0)
    base = metrics.continuum(s, wl)  # upper envelope: the reference without its dips
    pred = (base - 0.5 * (base - panel.reference)).astype(np.float32)  # every dip half as deep
    has_dips = np.array([len(metrics.detect_dips(r, wl, cfg)) > 0 for r in panel.reference])
    assert has_dips.any(), "the synthetic panel should carry dips"
    per, verdict, _ = evaluate_prediction(panel, pred, gates)
    assert not _gate(verdict, "roi").passed
    assert not _check(verdict, "roi", "roi_ratio").passed
    assert per.loc[has_dips, "depth_err_max"].median() == pytest.approx(0.5, abs=0.15)


def test_classical_denoisers_keep_shape_and_beat_raw_mse(panel: Panel) -> None:
    raw_mse = np.mean((panel.raw - panel.reference) ** 2)
    assert np.array_equal(DENOISERS["identity"](panel.raw, panel.wavelengths), panel.raw)
    for name in ("savgol", "gaussian", "wavelet"):
        out = DENOISERS[name](panel.raw, panel.wavelengths)
        assert out.shape == panel.raw.shape and out.dtype == np.float32
        assert np.mean((out - panel.reference) ** 2) < raw_mse, name


def test_ranking_puts_more_gates_first_then_composite_score(panel: Panel) -> None:
    gates = Gates()
    cands = [
        denoiser_candidate("identity"),
        denoiser_candidate("wavelet"),
        prediction_candidate("clean", panel.reference),
    ]
    ranked = evaluate_candidates(panel, cands, gates)
    assert ranked[0].name == "clean" and ranked[0].prediction is not None
    assert all(ev.prediction is None for ev in ranked[1:])
    independent = sorted(ranked, key=lambda e: (-sum(g.passed for g in e.verdict.gates), -e.score))
    assert [e.name for e in ranked] == [e.name for e in independent]
    for ev in ranked:
        assert ev.score == pytest.approx(ranking.composite_score(ev.verdict))
