"""Classical denoisers the evaluator can judge in place of a checkpoint (`--denoiser NAME`).

Each takes the raw panel [N, L] and its wavelength grid [L] (nm) and returns [N, L] float32.
Widths are given in nm and converted with the grid's median spacing, so they mean the same on any grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pywt
from scipy.ndimage import gaussian_filter1d, median_filter

Denoiser = Callable[[np.ndarray, np.ndarray], np.ndarray]

SAVGOL_WINDOW_NM = 11.0
SAVGOL_POLYORDER = 3
GAUSSIAN_SIGMA_NM = 2.0
WAVELET = "sym8"
WAVELET_LEVEL = 4
WAVELET_MAD_WINDOW = 15  # finest-level coefficients (~30 nm) per local noise estimate


def _step_nm(wl: np.ndarray) -> float:
    return float(np.median(np.diff(np.asarray(wl, dtype=np.float64))))


def identity(raw: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """The raw spectra themselves: what every model has to beat."""
    return np.asarray(raw, dtype=np.float32).copy()


def savgol(raw: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Savitzky-Golay, cubic over an 11 nm window (a light smoother)."""
    from scipy.signal import savgol_filter  # importing scipy.signal costs ~1 s; only this denoiser needs it

    window = max(round(SAVGOL_WINDOW_NM / _step_nm(wl)) | 1, SAVGOL_POLYORDER + 2)
    return savgol_filter(raw, window, SAVGOL_POLYORDER, axis=-1, mode="interp").astype(np.float32)


def gaussian(raw: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Gaussian blur with sigma 2 nm."""
    sigma = GAUSSIAN_SIGMA_NM / _step_nm(wl)
    return gaussian_filter1d(np.asarray(raw, np.float64), sigma, axis=-1, mode="nearest").astype(np.float32)


def _local_sigma(finest: np.ndarray, length: int) -> np.ndarray:
    """Noise sigma along the spectrum (running MAD of the finest details), resampled to `length` coefficients."""
    s = median_filter(np.abs(finest), size=(1, WAVELET_MAD_WINDOW), mode="nearest") / 0.6745
    idx = np.minimum((np.arange(length) * finest.shape[-1]) // length, finest.shape[-1] - 1)
    return s[:, idx]


def wavelet(raw: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """sym8 wavelet shrinkage, soft universal threshold with a *local* noise sigma (the noise is heteroscedastic)."""
    x = np.atleast_2d(np.asarray(raw, dtype=np.float64))
    n = x.shape[-1]
    level = min(WAVELET_LEVEL, pywt.dwt_max_level(n, pywt.Wavelet(WAVELET).dec_len))
    coeffs = pywt.wavedec(x, WAVELET, level=level, axis=-1, mode="symmetric")
    k = np.sqrt(2.0 * np.log(n))
    shrunk = [coeffs[0]]
    for c in coeffs[1:]:
        thr = k * _local_sigma(coeffs[-1], c.shape[-1])
        shrunk.append(np.sign(c) * np.maximum(np.abs(c) - thr, 0.0))
    out = pywt.waverec(shrunk, WAVELET, axis=-1, mode="symmetric")[..., :n].astype(np.float32)
    return out.reshape(np.shape(raw))


DENOISERS: dict[str, Denoiser] = {"identity": identity, "savgol": savgol, "gaussian": gaussian, "wavelet": wavelet}
