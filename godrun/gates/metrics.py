"""Panel metrics and the four readiness gates (docs/design.md, section 6); numpy/scipy only.

Units and conventions
---------------------
* PSNR_i = 10·log10(R_i² / MSE_i) with R_i = max(r_i) − min(r_i) (skimage's ``data_range``), floored for a
  flat reference (a blank, a featureless control), whose own range is its noise and would give meaningless
  values (−238 dB was measured on a real water blank): R_i = max(max − min, PSNR_RANGE_REL · max|r_i|,
  PSNR_RANGE_ABS), i.e. at least 5 % of the reference's level and at least 0.001 in the data's unit (1 mAU
  for absorbance, 0.1 %T for percent transmittance). A reference with real structure (every synthetic one:
  its UV edge alone spans most of its level) is untouched. A perfect prediction gives +inf, which the gate
  aggregates cap at ``PSNR_CAP_DB``.
* SAM_i = angle between p_i and r_i in degrees (cosine clipped to [−1, 1]); defined for zero vectors too:
  0° when both are zero, 90° when only one is (no direction shared).
* Dips are absorption features inside the ROI (320–500 nm). The detector smooths the spectrum with a
  Gaussian of ``smooth_nm``, finds candidates below an upper-envelope continuum, then measures each one
  against a **local linear baseline** fitted by least squares to two guard bands of ``guard_nm`` just
  outside the dip's window [left, right]. With b(λ) that line and s(λ) the smoothed spectrum:
    - depth  = max over the window of 1 − s/b          (relative, 0.05 = a 5 % dip)
    - area   = ∫ (1 − s/b) dλ / span, span = wl[-1] − wl[0] (600 nm on the seed grid), signed
    - equivalent_width_nm = ∫ (1 − s/b) dλ = area · span
    - centroid_nm = Σ λ·max(1 − s/b, 0) / Σ max(1 − s/b, 0)
  So a 5 % deep Gaussian dip of 15 nm FWHM has area ≈ 1.3e-3 and the default ``min_area`` 5e-4 is an
  equivalent width of 0.3 nm.
* A dip found in p matches a reference dip when its centre lies inside the reference dip's window (or
  the reference centre inside p's window); unmatched dips in p are spurious.
* ROI pass (gate 3): every reference dip's area and depth measured on p (same window, same guard
  bands) within ``roi_tolerance`` relative error of r's. The pass fraction is taken over the spectra
  that have at least one reference dip (controls cannot fail it; 1.0 when no spectrum has dips).
* Downstream proxy (gate 4): the baseline pipeline smooths (``smooth_nm``), removes an upper-envelope
  local baseline and integrates the relative absorbance 1 − s/b in 10 nm bands across the ROI (area
  units as above). ``downstream_err`` = Σ_bands |Q(p) − Q(r)|; ``downstream_err_raw`` the same for the
  raw spectrum. Gate 4 passes when the panel mean of the first is ≤ (1 + downstream_margin) × the mean of the
  second.
* A prediction holding NaN or inf fails every gate it touches: PSNR −inf (capped at −PSNR_CAP_DB), SAM 180°,
  ROI failed (and counted as over the spurious-dip limit), downstream error inf.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d, median_filter, uniform_filter1d

from godrun.spec import SEED_DETECTOR, DipDetector

if TYPE_CHECKING:
    from godrun.spec import Gates, Verdict

PSNR_CAP_DB = 100.0
PSNR_RANGE_REL = 0.05  # floor of PSNR's data range: this fraction of the reference's level (max |r|) ...
PSNR_RANGE_ABS = 1e-3  # ... and this much in the data's unit
CONTINUUM_SIGMA_NM = 12.0
CONTINUUM_ITERS = 10
CANDIDATE_MIN_DEPTH = 0.002
EDGE_FRACTION = 0.05
MAX_HALF_WIDTH_NM = 40.0
BAND_NM = 10.0
MEDIAN_POINTS = 5


# --------------------------------------------------------------------------- PSNR / SAM


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[None, :] if a.ndim == 1 else a


def psnr_data_range(reference: np.ndarray) -> np.ndarray:
    """PSNR's peak per row: reference.max − reference.min, floored for flat references (see the module doc)."""
    r = _as_2d(reference)
    level = np.abs(r).max(axis=1)
    return np.maximum.reduce([r.max(axis=1) - r.min(axis=1), PSNR_RANGE_REL * level, np.full(len(r), PSNR_RANGE_ABS)])


def psnr(pred: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-spectrum PSNR (dB) of pred [N, L] against reference [N, L]; peak: psnr_data_range(reference) per row."""
    p, r = _as_2d(pred), _as_2d(reference)
    if p.shape != r.shape:
        raise ValueError(f"pred {p.shape} and reference {r.shape} differ in shape")
    data_range = psnr_data_range(r)
    mse = np.mean((p - r) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def capped_psnr(psnr_db: np.ndarray | pd.Series) -> np.ndarray:
    """PSNR as the gates aggregate it: within ±PSNR_CAP_DB (a perfect spectrum is +inf), NaN as −PSNR_CAP_DB."""
    ps = np.clip(np.asarray(psnr_db, dtype=np.float64), -PSNR_CAP_DB, PSNR_CAP_DB)
    return np.where(np.isnan(ps), -PSNR_CAP_DB, ps)


def worst_sam(sam_deg: np.ndarray | pd.Series) -> np.ndarray:
    """SAM as the gates aggregate it: NaN (no angle) as 180°."""
    sam = np.asarray(sam_deg, dtype=np.float64)
    return np.where(np.isnan(sam), 180.0, sam)


def tail_pass(psnr_db: np.ndarray | pd.Series, sam_deg: np.ndarray | pd.Series, gates: Gates) -> np.ndarray:
    """Gate 2 per spectrum: PSNR (capped_psnr) at least gates.tail_psnr_min and SAM (worst_sam) at most
    gates.tail_sam_max. The gate's tail_ratio is the mean of this over the panel."""
    return (capped_psnr(psnr_db) >= gates.tail_psnr_min) & (worst_sam(sam_deg) <= gates.tail_sam_max)


def sam_degrees(pred: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-spectrum spectral angle (degrees) between pred and reference rows."""
    p, r = _as_2d(pred), _as_2d(reference)
    np_, nr = np.linalg.norm(p, axis=1), np.linalg.norm(r, axis=1)
    norms = np_ * nr
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, np.sum(p * r, axis=1) / norms, 0.0)
    cos = np.where((np_ == 0) & (nr == 0), 1.0, cos)  # two zero vectors: the same (empty) direction
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


# --------------------------------------------------------------------------- dips


@dataclass
class Dip:
    """One absorption dip; the window [left_nm, right_nm] is what measure_dip re-measures elsewhere."""

    center_nm: float
    left_nm: float
    right_nm: float
    depth: float
    area: float
    centroid_nm: float
    equivalent_width_nm: float


def grid_step(wl: np.ndarray) -> float:
    """The grid's step (nm): the median spacing of its points."""
    return float(np.median(np.diff(wl)))


def smooth(y: np.ndarray, wl: np.ndarray, sigma_nm: float) -> np.ndarray:
    """Gaussian smoothing along the last axis with sigma in nm (0 = none)."""
    y = np.asarray(y, dtype=np.float64)
    if sigma_nm <= 0:
        return y
    return gaussian_filter1d(y, sigma_nm / grid_step(wl), axis=-1, mode="nearest")


def despike(s: np.ndarray) -> np.ndarray:
    """Running median over MEDIAN_POINTS: removes one- or two-point spikes before baselines are fitted."""
    size = (1,) * (s.ndim - 1) + (MEDIAN_POINTS,)
    return median_filter(s, size=size, mode="nearest")


def _blur(x: np.ndarray, width: int) -> np.ndarray:
    """Three passes of a running mean: a fast near-Gaussian blur."""
    for _ in range(3):
        x = uniform_filter1d(x, width, axis=-1, mode="nearest")
    return x


def continuum(s: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Upper-envelope baseline of s [..., L]: a ~CONTINUUM_SIGMA_NM blur iterated on max(s, baseline) (fills dips)."""
    sigma = CONTINUUM_SIGMA_NM / grid_step(wl)
    width = max(round(math.sqrt(4.0 * sigma * sigma + 1.0)) | 1, 3)  # 3 box passes ≈ Gaussian sigma
    b = _blur(s, width)
    for _ in range(CONTINUUM_ITERS):
        b = _blur(np.maximum(s, b), width)
    return b


@dataclass
class _Prepared:
    """One spectrum ready for dip work: smoothed, de-spiked (for baselines) and its continuum."""

    wl: np.ndarray
    step: float
    span: float
    s: np.ndarray
    s_med: np.ndarray
    cont: np.ndarray


def _crop(wl: np.ndarray, cfg: DipDetector) -> slice:
    """Only the ROI plus room for the widest window and its guard bands matters for dips."""
    margin = 2.0 * MAX_HALF_WIDTH_NM + cfg.guard_nm
    idx = np.flatnonzero((wl >= cfg.roi_min_nm - margin) & (wl <= cfg.roi_max_nm + margin))
    return slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)


def _prepare(y: np.ndarray, wl: np.ndarray, cfg: DipDetector) -> list[_Prepared]:
    y2 = _as_2d(y)
    if y2.shape[1] != len(wl):
        raise ValueError(f"spectra have {y2.shape[1]} points but the grid has {len(wl)}")
    s = smooth(y2, wl, cfg.smooth_nm)
    cut = _crop(wl, cfg)
    wl_c, s = wl[cut], s[:, cut]
    s_med = despike(s)
    cont = continuum(s_med, wl_c)
    step, span = grid_step(wl), float(wl[-1] - wl[0])
    return [_Prepared(wl_c, step, span, s[i], s_med[i], cont[i]) for i in range(len(s))]


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    xm, ym = x.mean(), y.mean()
    var = float(np.sum((x - xm) ** 2))
    slope = float(np.sum((x - xm) * (y - ym)) / var) if var > 0 else 0.0
    return slope, float(ym - slope * xm)


def guard_points(step_nm: float, cfg: DipDetector) -> int:
    """Points in each guard band of a dip window on a grid of this step."""
    return max(round(cfg.guard_nm / step_nm), 1)


def guard_bands(lo: int, hi: int, points: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices of the guard bands left and right of the window lo..hi (`points` each, cut at the grid's n)."""
    return np.arange(max(lo - points, 0), lo), np.arange(hi + 1, min(hi + 1 + points, n))


def _measure_window(sp: _Prepared, lo: int, hi: int, cfg: DipDetector) -> Dip | None:
    """Measure the dip in s[lo..hi] against a line fitted to the (de-spiked) guard bands either side."""
    wl = sp.wl
    left, right = guard_bands(lo, hi, guard_points(sp.step, cfg), len(wl))
    idx = np.concatenate([left, right])
    if len(idx) < 2 or hi <= lo:
        return None
    if len(left) == 0 or len(right) == 0:  # one-sided guard: flat baseline from the side we have
        slope, icpt = 0.0, float(np.mean(sp.s_med[idx]))
    else:
        slope, icpt = _line_fit(wl[idx], sp.s_med[idx])
    w = wl[lo : hi + 1]
    base = slope * w + icpt
    if np.any(base <= 0):
        return None
    d = 1.0 - sp.s[lo : hi + 1] / base
    ew = float(0.5 * np.dot(np.diff(w), d[1:] + d[:-1]))  # trapezoid rule
    pos = np.clip(d, 0.0, None)
    centroid = float(np.dot(w, pos) / pos.sum()) if pos.sum() > 0 else float(w[np.argmax(d)])
    span = sp.span
    return Dip(
        center_nm=float(w[int(np.argmax(d))]),
        left_nm=float(wl[lo]),
        right_nm=float(wl[hi]),
        depth=float(d.max()),
        area=ew / span,
        centroid_nm=centroid,
        equivalent_width_nm=ew,
    )


def _window(d: np.ndarray, m: int, max_half: int) -> tuple[int, int]:
    """Grow from the minimum m while the relative depth stays above EDGE_FRACTION of the peak and keeps falling."""
    floor = EDGE_FRACTION * d[m]
    last = len(d) - 1
    lo = m
    while lo > max(0, m - max_half) and d[lo - 1] > floor and d[lo - 1] <= d[lo] + 0.25 * floor:
        lo -= 1
    hi = m
    while hi < min(last, m + max_half) and d[hi + 1] > floor and d[hi + 1] <= d[hi] + 0.25 * floor:
        hi += 1
    return max(lo - 1, 0), min(hi + 1, last)


def local_maxima(x: np.ndarray, height: float) -> np.ndarray:
    """Indices of the local maxima of x [L] at least `height` high: scipy.signal.find_peaks(x, height=height)[0].

    A flat top counts once, at its middle; a run touching either end is no peak. Written here because importing
    scipy.signal costs about a second in every process that loads the gates (tests/test_metrics_core.py
    holds the two equal).
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        return np.zeros(0, dtype=np.intp)
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])  # first index of each run of equal values
    ends = np.r_[starts[1:] - 1, len(x) - 1]
    v = x[starts]
    k = np.flatnonzero((v[1:-1] > v[:-2]) & (v[1:-1] > v[2:])) + 1
    peaks = (starts[k] + ends[k]) // 2
    return peaks[x[peaks] >= height]


def _detect(sp: _Prepared, cfg: DipDetector) -> list[Dip]:
    wl = sp.wl
    roi = np.flatnonzero((wl >= cfg.roi_min_nm) & (wl <= cfg.roi_max_nm))
    if len(roi) < 3:
        return []
    i0, i1 = int(roi[0]), int(roi[-1])
    b = sp.cont
    d = np.where(b > 0, 1.0 - sp.s_med / np.where(b > 0, b, 1.0), 0.0)
    peaks = local_maxima(d[i0 : i1 + 1], CANDIDATE_MIN_DEPTH)
    max_half = max(round(MAX_HALF_WIDTH_NM / sp.step), 2)
    dips: list[Dip] = []
    for m in sorted(peaks + i0, key=lambda k: -d[k]):
        if any(dp.left_nm <= wl[m] <= dp.right_nm for dp in dips):
            continue
        lo, hi = _window(d, int(m), max_half)
        dip = _measure_window(sp, lo, hi, cfg)
        if dip is not None and dip.area >= cfg.min_area and cfg.roi_min_nm <= dip.center_nm <= cfg.roi_max_nm:
            dips.append(dip)
    return sorted(dips, key=lambda dp: dp.center_nm)


def detect_dips(y: np.ndarray, wl: np.ndarray, cfg: DipDetector | None = None) -> list[Dip]:
    """Dips of y [L] in the ROI whose baseline-relative area is at least cfg.min_area."""
    cfg = cfg or SEED_DETECTOR
    wl = np.asarray(wl, dtype=np.float64)
    return _detect(_prepare(y, wl, cfg)[0], cfg)


def _measure_like(sp: _Prepared, like: Dip, cfg: DipDetector) -> Dip | None:
    lo = int(np.argmin(np.abs(sp.wl - like.left_nm)))
    hi = int(np.argmin(np.abs(sp.wl - like.right_nm)))
    return _measure_window(sp, lo, hi, cfg)


def measure_dip(y: np.ndarray, wl: np.ndarray, like: Dip, cfg: DipDetector | None = None) -> Dip:
    """Measure y over `like`'s window with the same guard bands (depth/area NaN if unmeasurable)."""
    cfg = cfg or SEED_DETECTOR
    wl = np.asarray(wl, dtype=np.float64)
    dip = _measure_like(_prepare(y, wl, cfg)[0], like, cfg)
    if dip is None:
        nan = float("nan")
        return Dip(like.center_nm, like.left_nm, like.right_nm, nan, nan, nan, nan)
    return dip


def dip_windows(y: np.ndarray, wl: np.ndarray, cfg: DipDetector, max_dips: int) -> np.ndarray:
    """Gate-3 dip windows of each row of y [N, L] as grid indices [N, max_dips, 2] (lo, hi; -1 where none).

    These are the windows gate 3 re-measures a prediction in (the detector's on the reference), so a loss
    measured in them trains the numbers the gate compares. The largest dips are kept when there are more.
    """
    wl = np.asarray(wl, dtype=np.float64)
    out = np.full((len(_as_2d(y)), max_dips, 2), -1, dtype=np.int64)
    offset = _crop(wl, cfg).start
    for i, sp in enumerate(_prepare(y, wl, cfg)):
        dips = sorted(_detect(sp, cfg), key=lambda d: -d.area)[:max_dips]
        for k, d in enumerate(dips):
            lo = int(np.argmin(np.abs(sp.wl - d.left_nm)))
            hi = int(np.argmin(np.abs(sp.wl - d.right_nm)))
            out[i, k] = (lo + offset, hi + offset)
    return out


def _matches(a: Dip, b: Dip) -> bool:
    return a.left_nm <= b.center_nm <= a.right_nm or b.left_nm <= a.center_nm <= b.right_nm


def spurious_dips(pred_dips: list[Dip], ref_dips: list[Dip]) -> list[Dip]:
    """Dips found in the prediction that match no reference dip."""
    return [p for p in pred_dips if not any(_matches(r, p) for r in ref_dips)]


# --------------------------------------------------------------------------- downstream proxy


def downstream_quantities(y: np.ndarray, wl: np.ndarray, cfg: DipDetector | None = None) -> np.ndarray:
    """The baseline pipeline on y [N, L]: relative absorbance integrated in 10 nm ROI bands -> [N, B]."""
    cfg = cfg or SEED_DETECTOR
    wl = np.asarray(wl, dtype=np.float64)
    cut = _crop(wl, cfg)
    s = smooth(_as_2d(y), wl, cfg.smooth_nm)[:, cut]
    span = float(wl[-1] - wl[0])
    wl = wl[cut]
    b = continuum(despike(s), wl)
    d = 1.0 - s / np.where(b > 0, b, np.inf)
    edges = np.arange(cfg.roi_min_nm, cfg.roi_max_nm + 1e-9, BAND_NM)
    out = []
    for lo, hi in itertools.pairwise(edges):
        m = (wl >= lo) & (wl <= hi)
        out.append(np.trapezoid(d[:, m], wl[m], axis=1) / span)
    return np.stack(out, axis=1)


# --------------------------------------------------------------------------- panel and gates


def _roi_row(sp_p: _Prepared, sp_r: _Prepared, cfg: DipDetector) -> dict[str, float | int]:
    ref_dips = _detect(sp_r, cfg)
    pred_dips = _detect(sp_p, cfg)
    area_err, depth_err, cen_err = [], [], []
    for rd in ref_dips:
        md = _measure_like(sp_p, rd, cfg)
        if md is None:
            area_err.append(math.inf)
            depth_err.append(math.inf)
            cen_err.append(math.inf)
            continue
        area_err.append(abs(md.area - rd.area) / abs(rd.area))
        depth_err.append(abs(md.depth - rd.depth) / abs(rd.depth))
        cen_err.append(abs(md.centroid_nm - rd.centroid_nm))
    nan = float("nan")
    return {
        "n_ref_dips": len(ref_dips),
        "n_pred_dips": len(pred_dips),
        "n_spurious": len(spurious_dips(pred_dips, ref_dips)),
        "area_err_max": max(area_err) if area_err else nan,
        "depth_err_max": max(depth_err) if depth_err else nan,
        "centroid_err_max_nm": max(cen_err) if cen_err else nan,
    }


def _roi_pass(df: pd.DataFrame, tol: float) -> pd.Series:
    """A spectrum passes ROI when its prediction is finite and every reference dip is within `tol` (or it has none)."""
    no_dips = df["n_ref_dips"] == 0
    within = (df["area_err_max"] <= tol) & (df["depth_err_max"] <= tol)  # NaN compares False: fails
    finite = df["pred_finite"] if "pred_finite" in df.columns else True
    return finite & (no_dips | within)


def panel_metrics(
    pred: np.ndarray, reference: np.ndarray, raw: np.ndarray, wl: np.ndarray, gates: Gates
) -> pd.DataFrame:
    """One row per spectrum: psnr, sam, tail_ok, dip errors, roi_pass, downstream errors (see module doc)."""
    p, r, x = _as_2d(pred), _as_2d(reference), _as_2d(raw)
    wl = np.asarray(wl, dtype=np.float64)
    if not (p.shape == r.shape == x.shape) or p.shape[1] != len(wl):
        raise ValueError(f"shape mismatch: pred {p.shape}, reference {r.shape}, raw {x.shape}, wl {wl.shape}")
    cfg = gates.detector
    finite = np.all(np.isfinite(p), axis=1)
    df = pd.DataFrame({"psnr": psnr(p, r), "sam": sam_degrees(p, r), "pred_finite": finite})
    # a prediction holding NaN/inf is as wrong as a prediction can be, whatever numpy makes of it
    df.loc[~finite, "psnr"] = -math.inf
    df.loc[~finite, "sam"] = 180.0
    df["tail_ok"] = tail_pass(df["psnr"], df["sam"], gates)
    prep_p, prep_r = _prepare(np.where(np.isfinite(p), p, 0.0), wl, cfg), _prepare(r, wl, cfg)
    roi = pd.DataFrame([_roi_row(a, b, cfg) for a, b in zip(prep_p, prep_r, strict=True)], index=df.index)
    df = pd.concat([df, roi], axis=1)
    df["roi_pass"] = _roi_pass(df, gates.roi_tolerance)
    err, err_raw = downstream_errors(p, r, x, wl, cfg)
    df["downstream_err"], df["downstream_err_raw"] = err, err_raw
    return df


def downstream_errors(
    pred: np.ndarray, reference: np.ndarray, raw: np.ndarray, wl: np.ndarray, cfg: DipDetector
) -> tuple[np.ndarray, np.ndarray]:
    """Per spectrum Σ_bands |Q(pred) − Q(reference)| and the same for the raw spectra (inf where pred is not finite)."""
    q_r = downstream_quantities(reference, wl, cfg)
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN rows are set to inf just below
        err = np.abs(downstream_quantities(pred, wl, cfg) - q_r).sum(axis=1)
    err = np.where(np.all(np.isfinite(_as_2d(pred)), axis=1) & np.isfinite(err), err, math.inf)
    err_raw = np.abs(downstream_quantities(raw, wl, cfg) - q_r).sum(axis=1)
    return err, err_raw


def downstream_passed(err_mean: float, err_raw_mean: float, gates: Gates) -> bool:
    """Gate 4: the prediction's mean downstream error within (1 + margin) of raw+baseline's."""
    return math.isfinite(err_mean) and err_mean <= downstream_bound(err_raw_mean, gates)


def _check(metric: str, value: float | None, op: str, threshold: float) -> dict:
    ok = value is not None and math.isfinite(value) and (value >= threshold if op == ">=" else value <= threshold)
    return {"metric": metric, "value": value, "op": op, "threshold": float(threshold), "passed": bool(ok)}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def downstream_bound(err_raw: float, gates: Gates) -> float:
    """Gate 4's threshold: raw+baseline's error, times (1 + margin), plus float round-off (a copy of raw ties)."""
    if not math.isfinite(err_raw):
        return 0.0
    return err_raw * (1.0 + gates.downstream_margin) + 1e-9 * max(err_raw, 1e-12)


def evaluate_gates(per_spectrum: pd.DataFrame, gates: Gates) -> Verdict:
    """The four gates from panel_metrics' table (lineage and report left empty)."""
    from godrun.spec import Check, GateResult, Verdict

    df = per_spectrum
    if len(df) == 0:
        raise ValueError("evaluate_gates needs at least one spectrum")
    ps = capped_psnr(df["psnr"])
    sam = worst_sam(df["sam"])
    psnr_mean, psnr_std, sam_mean = float(ps.mean()), float(ps.std()), float(sam.mean())
    tail = float(np.mean(tail_pass(ps, sam, gates)))
    finite = df["pred_finite"].to_numpy(bool) if "pred_finite" in df.columns else np.ones(len(df), bool)
    counted = (df["n_ref_dips"].to_numpy() > 0) | ~finite  # a non-finite prediction counts, dips or not
    passes = _roi_pass(df, gates.roi_tolerance).to_numpy()
    roi_ratio = float(passes[counted].mean()) if counted.any() else 1.0
    # a spectrum we cannot look at for spurious dips counts as the worst: over the limit on its own
    spurious = int(df["n_spurious"].sum()) + int((~finite).sum()) * (gates.spurious_peaks_max + 1)
    ds, ds_raw = float(df["downstream_err"].mean()), float(df["downstream_err_raw"].mean())
    specs = {
        "aggregate": [
            _check("psnr_mean", _finite(psnr_mean), ">=", gates.psnr_mean_min),
            _check("psnr_std", _finite(psnr_std), "<=", gates.psnr_std_max),
            _check("sam_mean", _finite(sam_mean), "<=", gates.sam_mean_max),
        ],
        "tail": [_check("tail_ratio", tail, ">=", gates.tail_fraction_min)],
        "roi": [
            _check("roi_ratio", roi_ratio, ">=", gates.roi_pass_fraction_min),
            _check("spurious_peaks", float(spurious), "<=", float(gates.spurious_peaks_max)),
        ],
        "downstream": [_check("downstream_err_mean", _finite(ds), "<=", downstream_bound(ds_raw, gates))],
    }
    n_bad = int((~finite).sum())
    if n_bad:  # a NaN/inf prediction fails every gate, whatever the thresholds (lenient ones included)
        for checks in specs.values():
            checks.append(_check("nonfinite_predictions", float(n_bad), "<=", 0.0))
    results = [
        GateResult(name=name, passed=all(c["passed"] for c in checks), checks=[Check(**c) for c in checks])
        for name, checks in specs.items()
    ]
    failed = [g.name for g in results if not g.passed]
    return Verdict(
        verdict="fail" if failed else "pass",
        psnr_mean=_finite(psnr_mean),
        psnr_std=_finite(psnr_std),
        sam_mean=_finite(sam_mean),
        tail_ratio=tail,
        roi_ratio=roi_ratio,
        spurious_peaks=spurious,
        gates=results,
        failed_gates=failed,
    )
