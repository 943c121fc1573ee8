"""Statistics of replicate noise along wavelength (bench/noise_realism.py; tests/test_noise_profiles.py).

All take a session of replicates R [N, L] of one spectrum, in scan order, on a 1 nm grid `wl`, and work on the
differences of consecutive scans d = R[i+1] − R[i], which cancel the spectrum and leave two scans' noise:
* sigma: per-scan σ = rms(d)/√2 (white noise of σ gives σ);
* lag1: the lag-1 autocorrelation of d along wavelength, pooled Σ d_k d_{k+1} / Σ d_k² (zero-mean noise,
  no per-row mean removed, so a stationary AR(1) with coefficient ρ gives ρ without the short-band bias);
* psd_slope: the log-log slope of d's periodogram (Hann window, mean over rows) against spatial frequency,
  bins 1..Nyquist (white: 0, a random walk: −2);
* drift: (mean of the last 3 scans − mean of the first 3) / the session's mean, over the band (signed).
Several runs (sessions) pool their differences, never differencing across two runs.
"""

from __future__ import annotations

import numpy as np

BAND_NM = 50.0


def bands(wl: np.ndarray, lo: float = 200.0, hi: float | None = None) -> list[tuple[float, float]]:
    top = float(wl.max()) if hi is None else hi
    edges = np.arange(lo, top, BAND_NM)
    return [(float(a), float(min(a + BAND_NM, top + 1.0))) for a in edges if a + 10 <= top]


def _mask(wl: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    return (wl >= band[0]) & (wl < band[1])


def diffs(replicates: np.ndarray) -> np.ndarray:
    return np.diff(np.asarray(replicates, dtype=np.float64), axis=0)


def sigma(d: np.ndarray) -> float:
    return float(np.sqrt(np.mean(d * d) / 2.0))


def lag1(d: np.ndarray) -> float:
    return float(np.sum(d[:, :-1] * d[:, 1:]) / np.sum(d * d))


def psd_slope(d: np.ndarray) -> float:
    n = d.shape[1]
    spec = np.abs(np.fft.rfft(d * np.hanning(n)[None, :], axis=1)) ** 2
    freq = np.fft.rfftfreq(n)
    keep = slice(1, None)
    slope, _ = np.polyfit(np.log(freq[keep]), np.log(spec.mean(axis=0)[keep]), 1)
    return float(slope)


def drift(replicates: np.ndarray) -> float:
    r = np.asarray(replicates, dtype=np.float64)
    k = min(3, len(r) // 2)
    return float((r[-k:].mean() - r[:k].mean()) / r.mean())


def band_table(runs: list[np.ndarray], wl: np.ndarray, band_list: list[tuple[float, float]]) -> list[dict]:
    """One row per band: sigma, lag1, psd_slope of the consecutive differences pooled over the runs
    (never across two runs), and the drift of the first run (the blanks, in the real session)."""
    d = np.concatenate([diffs(r) for r in runs])
    rows = []
    for band in band_list:
        m = _mask(wl, band)
        rows.append(
            {
                "band": band,
                "sigma": sigma(d[:, m]),
                "lag1": lag1(d[:, m]),
                "psd_slope": psd_slope(d[:, m]),
                "drift": drift(runs[0][:, m]),
            }
        )
    return rows
