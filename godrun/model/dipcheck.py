"""Dips the measurement does not support are not reported (inference only; numpy).

A denoiser that keeps dips must follow the measured spectrum at the scale of a dip, so on a flat stretch it
also follows the noise's slow wobbles, and now and then one of them is deep and wide enough for gate 3's
detector (its min_area) to call a dip: a *spurious* dip, and one fails the gate for the whole panel. Measured
(docs/noise.md, "Dips without evidence"; bench/dip_evidence.py): over the best and last checkpoints of 28
corpora (150 panel spectra each) every spurious dip candidate, all on the default profile's flat stretches at
336–361 nm, was backed by the measurement at 4.6 standard errors or less, every predicted dip that matched a real
one (15 360) by 9.4 or more.

So for each dip the detector finds in a prediction, its evidence in the measured (despiked) spectrum is the
least-squares amplitude `a` of the measurement's deficit below its own guard-band line on the prediction's
deficit below the prediction's guard-band line (1 = the measurement dips as deep as the prediction), with its
standard error from the measurement's local white-noise sd (scaled MAD of the point-to-point steps over the
window and its guard bands): `a` is linear in the measurement, so the error is exact for white noise. A dip
with a <= `min_se` standard errors is filled up to the prediction's guard-band line. Slow correlated noise
(the skspec-fit profile) is larger than the steps show, so there the check is more lenient, never stricter.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from godrun.gates.metrics import dip_windows, grid_step, guard_bands, guard_points
from godrun.spec import DipDetector

MAX_DIPS = 64  # per spectrum: more than the ROI can hold at the detector's narrowest window
MAD_SD = 1.4826  # the scaled MAD's factor: the sd of Gaussian noise
NO_DEFICIT = 1e-9  # a deficit below this fraction of the prediction's level is rounding, not a dip


class Evidence(NamedTuple):
    a: float  # the measurement's amplitude in units of the prediction's dip
    se: float  # its standard error (white noise)
    deficit: np.ndarray  # the prediction's guard-band line minus the prediction, over the window


def evidence(pred: np.ndarray, measured: np.ndarray, wl: np.ndarray, lo: int, hi: int, guard: int) -> Evidence | None:
    """The measurement's evidence for the dip of `pred` over grid points lo..hi (one spectrum each; None where a
    guard band is missing or the prediction has no deficit there)."""
    left, right = guard_bands(lo, hi, guard, len(wl))
    if len(left) == 0 or len(right) == 0:
        return None
    g = np.concatenate([left, right])
    w = np.arange(lo, hi + 1)
    centre = wl[w].mean()
    line_at_guards = np.stack([np.ones(len(g)), wl[g] - centre], axis=1)
    line_in_window = np.stack([np.ones(len(w)), wl[w] - centre], axis=1)
    extend = line_in_window @ np.linalg.pinv(line_at_guards)  # window values of the line fitted to guard values
    deficit = extend @ pred[g] - pred[w]
    if not np.any(deficit > NO_DEFICIT * np.abs(pred[w]).max()):
        return None
    norm = float(deficit @ deficit)
    on_guards, on_window = extend.T @ deficit / norm, -deficit / norm
    a = float(on_guards @ measured[g] + on_window @ measured[w])
    steps = np.diff(measured[g[0] : g[-1] + 1])
    sd = MAD_SD * float(np.median(np.abs(steps - np.median(steps)))) / np.sqrt(2.0)
    se = sd * float(np.sqrt(on_guards @ on_guards + on_window @ on_window))
    return Evidence(a, se, deficit)


def unsupported_dips_filled(
    pred: np.ndarray, measured: np.ndarray, wl: np.ndarray, cfg: DipDetector, min_se: float
) -> tuple[np.ndarray, int]:
    """pred [N, L] with every detected dip that `measured` [N, L] (despiked, same units) backs by no more than
    `min_se` standard errors filled up to its guard-band line, and how many were (0 disables)."""
    src = np.asarray(pred, dtype=np.float64)
    out = src.copy()
    if min_se <= 0 or out.size == 0:
        return out, 0
    wl = np.asarray(wl, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    guard = guard_points(grid_step(wl), cfg)
    filled = 0
    for i, windows in enumerate(dip_windows(src, wl, cfg, MAX_DIPS)):
        for lo, hi in windows[windows[:, 0] >= 0]:
            found = evidence(src[i], measured[i], wl, int(lo), int(hi), guard)
            if found is not None and found.a <= min_se * found.se:
                out[i, lo : hi + 1] += np.clip(found.deficit, 0.0, None)
                filled += 1
    return out, filled
