"""FiLM's conditioning input: a row's raw dose features from the per-group CSV, standardised with the statistics
the checkpoint records (`cond_stats`), for training and for inference alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from godrun.errors import InputError


def raw_cond(
    dose_features_csv: str | Path, features: list[str], groups: np.ndarray, *, data: bytes | None = None
) -> np.ndarray:
    """Raw (unstandardised) dose features per row [N, F] from the per-group CSV (or its bytes, `data`)."""
    from godrun.data.loader import load_dose_features

    path = Path(dose_features_csv)
    if data is None and not path.is_file():
        raise InputError(f"--dose_features_csv: file not found: {path}")
    table = load_dose_features(path, features, sorted(set(groups.tolist())), data=data)
    rows: np.ndarray = table.loc[groups, features].to_numpy(np.float32)
    return rows


def standardise_cond(cond: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(cond - mean) / std per feature, float32 (the checkpoint's `cond_stats`)."""
    return ((cond - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)
