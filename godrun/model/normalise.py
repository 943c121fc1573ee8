"""Deterministic per-spectrum baseline centring + scaling, shared by training, the panel and the evaluator.

x_n = (x - offset) / scale with offset = median(x) and scale = (p95(x) - p5(x)) / 2: robust to the
occasional spike, affine so that de-normalising a prediction is exact. Parameters come from the
*input* spectrum only, so a target is put in the input's frame and a prediction goes back with it.
"""

from __future__ import annotations

import numpy as np

from godrun.contract.checkpoint import NormMeta
from godrun.errors import InputError

METHOD = "median_p5p95_v1"
SCALE_FLOOR = 1e-6


def norm_meta() -> NormMeta:
    """What a checkpoint records so that inference can check it applies the same transform."""
    return NormMeta(method=METHOD, scale_floor=SCALE_FLOOR)


def fit(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-spectrum offset and scale, float64 [N]."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected [N, L] spectra, got shape {x.shape}")
    offset = np.median(x, axis=1)
    lo, hi = np.percentile(x, [5.0, 95.0], axis=1)
    scale = np.maximum((hi - lo) / 2.0, SCALE_FLOOR * (1.0 + np.abs(offset)))
    return {"offset": offset, "scale": scale}


def apply(x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Put spectra (inputs or their targets) into the frame given by `params`."""
    x = np.asarray(x, dtype=np.float64)
    return ((x - params["offset"][:, None]) / params["scale"][:, None]).astype(np.float32)


def normalise(x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    params = fit(x)
    return apply(x, params), params


def denormalise(yn: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    yn = np.asarray(yn, dtype=np.float64)
    return (yn * params["scale"][:, None] + params["offset"][:, None]).astype(np.float32)


def check_meta(meta: NormMeta | None, where: str) -> None:
    """Refuse a checkpoint trained with a different normalisation (inference would silently mis-scale)."""
    if meta is not None and meta.method != METHOD:
        raise InputError(f"{where}: normalisation {meta.method!r} differs from this code's {METHOD!r}")
