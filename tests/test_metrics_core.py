"""PSNR/SAM against independent implementations; the dip detector on analytic dips; gate assembly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.signal import find_peaks
from scipy.spatial.distance import cosine
from skimage.metrics import peak_signal_noise_ratio

from godrun.gates.metrics import (
    PSNR_CAP_DB,
    detect_dips,
    evaluate_gates,
    local_maxima,
    measure_dip,
    panel_metrics,
    psnr,
    sam_degrees,
    spurious_dips,
)
from godrun.gates.ranking import composite_score
from godrun.spec import GATE_NAMES, SEED_DETECTOR, DipDetector, Gates

WL = np.linspace(200.0, 800.0, 601)


def _base() -> np.ndarray:
    return 0.6 + 0.2 * np.exp(-(((WL - 480) / 220) ** 2)) + 2e-4 * (WL - 500)


def _dip(center: float, fwhm: float, depth: float) -> np.ndarray:
    return depth * np.exp(-0.5 * ((WL - center) / (fwhm / 2.3548)) ** 2)


def test_psnr_matches_skimage():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.1, 1.0, (6, 601))
    pred = ref + rng.normal(0, rng.uniform(0.01, 0.3, (6, 1)), (6, 601))
    ours = psnr(pred, ref)
    theirs = [peak_signal_noise_ratio(r, p, data_range=r.max() - r.min()) for p, r in zip(pred, ref, strict=True)]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert np.isinf(psnr(ref, ref)).all()


def test_sam_matches_cosine_distance():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.1, 1.0, (5, 601))
    pred = ref * rng.uniform(0.5, 2.0, (5, 1)) + rng.normal(0, 0.2, (5, 601))
    expected = [np.degrees(np.arccos(1.0 - cosine(p, r))) for p, r in zip(pred, ref, strict=True)]
    np.testing.assert_allclose(sam_degrees(pred, ref), expected, atol=1e-6)
    np.testing.assert_allclose(sam_degrees(ref * 3.0, ref), 0.0, atol=1e-5)
    np.testing.assert_allclose(sam_degrees(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])), [90.0])


def test_detects_analytic_dips_with_area_depth_centroid():
    y = _base() * (1 - _dip(360, 15, 0.05) - _dip(440, 22, 0.10))
    dips = detect_dips(y, WL, SEED_DETECTOR)
    assert [round(d.center_nm) for d in dips] == [360, 440]
    for d, (fwhm, depth) in zip(dips, [(15, 0.05), (22, 0.10)], strict=True):
        ew = depth * fwhm * 1.0645  # Gaussian equivalent width in nm
        assert d.equivalent_width_nm == pytest.approx(ew, rel=0.2)
        assert d.area == pytest.approx(d.equivalent_width_nm / 600.0)
        assert d.depth == pytest.approx(depth, rel=0.15)
        assert abs(d.centroid_nm - d.center_nm) < 1.0
        again = measure_dip(y, WL, d)
        assert again.area == pytest.approx(d.area) and again.depth == pytest.approx(d.depth)


def test_min_area_outside_roi_and_flat_spectra():
    assert detect_dips(_base(), WL) == []
    tiny = _base() * (1 - _dip(400, 10, 0.01))  # area ~1.8e-4 < 5e-4
    assert detect_dips(tiny, WL) == []
    assert len(detect_dips(tiny, WL, DipDetector(min_area=1e-4))) == 1
    outside = _base() * (1 - _dip(600, 15, 0.2))
    assert detect_dips(outside, WL) == []


def test_spurious_and_measurement_on_shallower_prediction():
    ref = _base() * (1 - _dip(380, 15, 0.08))
    pred = _base() * (1 - _dip(380, 15, 0.06) - _dip(460, 15, 0.06))
    rd, pdips = detect_dips(ref, WL), detect_dips(pred, WL)
    assert len(rd) == 1 and len(pdips) == 2
    assert [round(d.center_nm) for d in spurious_dips(pdips, rd)] == [460]
    m = measure_dip(pred, WL, rd[0])
    assert m.depth == pytest.approx(0.06, rel=0.15) and m.area < rd[0].area * 0.8


def _panel(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = np.stack([_base() * (1 - _dip(370, 14, 0.08) - _dip(450, 20, 0.12)) for _ in range(n)])
    ref[: n // 4] = _base()  # controls
    return ref, ref + rng.normal(0, 0.08, ref.shape)


def test_gates_reference_passes_noise_fails_and_score_orders():
    ref, raw = _panel()
    gates = Gates()
    good = evaluate_gates(panel_metrics(ref * 1.001, ref, raw, WL, gates), gates)
    bad = evaluate_gates(panel_metrics(raw, ref, raw, WL, gates), gates)
    assert [g.name for g in good.gates] == list(GATE_NAMES)
    assert good.verdict == "pass" and good.failed_gates == []
    assert bad.verdict == "fail" and "aggregate" in bad.failed_gates
    assert composite_score(good) > composite_score(bad)
    for gate in good.gates:
        for c in gate.checks:
            assert c.passed == (c.value >= c.threshold if c.op == ">=" else c.value <= c.threshold)
    assert len(good.model_dump_json(by_alias=True)) < 4096


def test_evaluate_gates_thresholds_come_from_gates():
    ref, raw = _panel()
    df = panel_metrics(ref * 1.001, ref, raw, WL, Gates())
    strict = Gates(psnr_mean_min=99.0)
    v = evaluate_gates(df, strict)
    assert v.failed_gates == ["aggregate"]
    df2 = df.copy()
    df2.loc[0, "n_spurious"] = 1
    assert "roi" in evaluate_gates(df2, Gates()).failed_gates
    assert evaluate_gates(df2, Gates(spurious_peaks_max=1)).verdict == "pass"
    assert isinstance(df, pd.DataFrame) and {"psnr", "sam", "roi_pass", "downstream_err_raw"} <= set(df.columns)


def test_local_maxima_is_scipy_find_peaks() -> None:
    """The detector's peak finder against scipy.signal.find_peaks(x, height=h): flat tops, ends, NaN, ties."""
    rng = np.random.default_rng(3)
    cases = [rng.normal(size=n) for n in (0, 1, 2, 3, 50, 601)]
    cases += [np.round(rng.normal(size=400), 1) for _ in range(20)]  # many flat runs and plateaus
    cases += [np.array([0.0, 1.0, 1.0, 1.0, 0.0, 2.0, 2.0]), np.array([3.0, 3.0, 1.0, 2.0, 2.0, 1.0])]
    with_nan = rng.normal(size=200)
    with_nan[rng.choice(200, 15, replace=False)] = np.nan
    cases.append(with_nan)
    for x in cases:
        for h in (-np.inf, 0.0, 0.5):
            assert local_maxima(x, h).tolist() == find_peaks(x, height=h)[0].tolist(), (x, h)


def test_psnr_of_a_flat_blank_uses_the_documented_floor():
    """A water blank (flat reference, noise only) has a defined PSNR: the peak is floored, not its noise range."""
    from godrun.gates.metrics import PSNR_RANGE_ABS, PSNR_RANGE_REL, psnr_data_range

    rng = np.random.default_rng(3)
    blank = 1e-6 * rng.standard_normal((1, 601))  # absorbance of a blank against itself: ~0, tiny noise
    pred = blank + 2e-4 * rng.standard_normal((1, 601))
    assert psnr_data_range(blank)[0] == PSNR_RANGE_ABS
    rmse = np.sqrt(np.mean((pred - blank) ** 2))
    expected = 20 * np.log10(PSNR_RANGE_ABS / rmse)  # direct formula
    np.testing.assert_allclose(psnr(pred, blank), [expected], atol=1e-9)
    theirs = peak_signal_noise_ratio(blank[0], pred[0], data_range=PSNR_RANGE_ABS)
    np.testing.assert_allclose(psnr(pred, blank), [theirs], atol=1e-9)
    old = 20 * np.log10((blank.max() - blank.min()) / rmse)  # the blank's noise range as the peak
    assert -20 < expected < 30 and expected - old > 20
    level = np.full((1, 601), 0.8) + 1e-6 * rng.standard_normal((1, 601))  # a flat transmittance blank
    assert psnr_data_range(level)[0] == pytest.approx(PSNR_RANGE_REL * np.abs(level).max())
    # a structured reference keeps skimage's data_range
    ref = 0.2 + np.linspace(0, 1, 601)[None]
    assert psnr_data_range(ref)[0] == pytest.approx(1.0)


def test_sam_is_defined_for_zero_vectors():
    zero = np.zeros((1, 601))
    one = np.ones((1, 601))
    assert sam_degrees(zero, zero)[0] == 0.0
    assert sam_degrees(zero, one)[0] == 90.0 and sam_degrees(one, zero)[0] == 90.0
    assert np.isfinite(psnr(zero, zero)).sum() == 0 and psnr(zero, zero)[0] == np.inf


def test_one_tail_rule_for_the_gate_the_column_and_the_group_summary():
    """Gate 2's rule (PSNR cap included) gives the same answer wherever the evaluator reports it: the gate's
    tail_ratio, the per-spectrum tail_ok column and the per-group tail_pass_ratio and psnr_mean."""
    from types import SimpleNamespace

    from godrun.evaluator.panel import group_summary

    ref, raw = _panel()
    pred = raw.copy()
    pred[1] = ref[1]  # perfect: PSNR +inf, capped
    pred[2, 100] = np.nan  # not finite: PSNR -inf, capped
    gates = Gates(tail_psnr_min=20.0, tail_sam_max=5.0)
    per = panel_metrics(pred, ref, raw, WL, gates)
    verdict = evaluate_gates(per, gates)
    panel = SimpleNamespace(meta=pd.DataFrame({"group_id": ["g"] * len(ref)}))
    summary = group_summary(panel, per, gates)  # type: ignore[arg-type]
    assert 0.0 < verdict.tail_ratio < 1.0
    assert summary["tail_pass_ratio"].iloc[0] == verdict.tail_ratio == per["tail_ok"].mean()
    assert summary["psnr_mean"].iloc[0] == pytest.approx(verdict.psnr_mean)
    assert summary["psnr_min"].iloc[0] == -PSNR_CAP_DB
