"""Resampling a measured spectrum onto the 200–800 nm, 1 nm grid, keeping band integrals.

Method: each grid point g_i stands for the bin [g_i − h, g_i + h] (h half the grid step; the first and
last bins reach out as far as the measurement does, at most 199.5 and 800.5 nm, at least the grid's ends
200 and 800 nm). Its value is the mean, over the
bin, of the piecewise-linear interpolant through the measured points:

    v_i = (F(b_i+1) − F(b_i)) / (b_i+1 − b_i),  F(x) = ∫ from x_0 to x of the interpolant (quadratic per segment)

* source finer than the grid (several points per bin): v_i is the bin average of the measurement, so noise
  is averaged, not aliased as point-picking would;
* source coarser (bins between two measured points): v_i is the linear interpolation at g_i, up to the
  interpolant's curvature at a knot inside the bin;
* either way Σ v_i · width_i = ∫ interpolant over [200, 800]: band integrals (a dip's area) are kept.

On the grid: a measurement sampled exactly at consecutive grid points (whole nm, 1 nm apart) is taken as
is, its points being the bins' measurements; averaging the interpolant over bins centred on its knots would
filter it by [1/8, 3/4, 1/8] (white noise's std −23 %, neighbours correlated) before the denoiser sees it.

Sampling: measured points more than MAX_GAP_NM (10 nm) apart inside the grid are refused (a two-point
"spectrum" would become a straight line). Coverage: the measured range must include [200, 800] nm.
With `fill="edge"` (opt-in, `--fill edge`) a spectrum covering only part of the grid is extended by its
first/last measured value beyond its range
(the manifest records the measured range, so such rows stay identifiable); the measured range must still
overlap the grid by at least MIN_OVERLAP_NM.
"""

from __future__ import annotations

import numpy as np

from godrun.errors import InputError

FILLS = ("none", "edge")
MIN_OVERLAP_NM = 100.0
MAX_GAP_NM = 10.0
EPS_NM = 1e-6


def bin_edges(grid: np.ndarray, x_lo: float, x_hi: float) -> np.ndarray:
    """Bin edges: midpoints between grid points; the outer edges half a step out, within [x_lo, x_hi]."""
    mid = (grid[1:] + grid[:-1]) / 2.0
    h0, h1 = (grid[1] - grid[0]) / 2.0, (grid[-1] - grid[-2]) / 2.0
    first = max(grid[0] - h0, min(x_lo, grid[0]))
    last = min(grid[-1] + h1, max(x_hi, grid[-1]))
    return np.concatenate([[first], mid, [last]])


def cumulative_integral(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """F(at): the integral from x[0] of the linear interpolant through (x, y); `at` within [x[0], x[-1]]."""
    dx = np.diff(x)
    slope = np.diff(y) / dx
    knots = np.concatenate([[0.0], np.cumsum(dx * (y[:-1] + y[1:]) / 2.0)])
    k = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
    t = at - x[k]
    return knots[k] + y[k] * t + 0.5 * slope[k] * t * t


def resample(x: np.ndarray, y: np.ndarray, grid: np.ndarray, where: str, fill: str = "none") -> np.ndarray:
    """`y` measured at increasing `x` (nm) as bin means on `grid` (see the module doc)."""
    lo, hi = float(grid[0]), float(grid[-1])
    if fill not in FILLS:
        raise InputError(f"--fill {fill!r}: choose from {', '.join(FILLS)}")
    _refuse_gaps(x, lo, hi, where)
    covers = x[0] <= lo + EPS_NM and x[-1] >= hi - EPS_NM
    if not covers:
        overlap = min(x[-1], hi) - max(x[0], lo)
        if fill == "none" or overlap < MIN_OVERLAP_NM:
            extra = "" if fill == "none" else f" (--fill edge needs {MIN_OVERLAP_NM:g} nm of overlap)"
            raise InputError(
                f"{where}: measured {x[0]:g}-{x[-1]:g} nm does not cover the grid {lo:g}-{hi:g} nm{extra}"
                + ("; `--fill edge` extends it by its end values" if fill == "none" else "")
            )
    picked = _on_grid(x, y, grid)
    if picked is not None:
        return picked
    if not covers:
        x, y = _extend(x, y, lo, hi)
    edges = bin_edges(grid, float(x[0]), float(x[-1]))
    F = cumulative_integral(x, y, edges)
    return np.diff(F) / np.diff(edges)


def _on_grid(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """The measured values themselves when, inside the grid's range, the measurement is sampled exactly at
    consecutive grid points (beyond its range: its end values, as `fill="edge"`); else None."""
    step = (grid[-1] - grid[0]) / (len(grid) - 1)
    inside = (x >= grid[0] - EPS_NM) & (x <= grid[-1] + EPS_NM)
    xi, yi = x[inside], y[inside]
    k = np.rint((xi - grid[0]) / step).astype(np.int64)
    if xi.size < 2 or np.any(np.diff(k) != 1) or np.any(np.abs(grid[0] + k * step - xi) > EPS_NM):
        return None
    out = np.empty(len(grid))
    out[k] = yi
    out[: k[0]], out[k[-1] + 1 :] = yi[0], yi[-1]
    return out


def _refuse_gaps(x: np.ndarray, lo: float, hi: float, where: str) -> None:
    """Two measured points more than MAX_GAP_NM apart inside the grid: no spectrum to interpolate between."""
    inside = (x[1:] > lo) & (x[:-1] < hi)
    gaps = np.flatnonzero(inside & (np.diff(x) > MAX_GAP_NM + EPS_NM))
    if gaps.size:
        k = int(gaps[0])
        raise InputError(
            f"{where}: no measurement between {x[k]:g}-{x[k + 1]:g} nm, a gap of {x[k + 1] - x[k]:g} nm "
            f"(at most {MAX_GAP_NM:g} nm between points is interpolated)"
        )


def _extend(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    if x[0] > lo:
        x, y = np.concatenate([[lo], x]), np.concatenate([[y[0]], y])
    if x[-1] < hi:
        x, y = np.concatenate([x, [hi]]), np.concatenate([y, [y[-1]]])
    return x, y
