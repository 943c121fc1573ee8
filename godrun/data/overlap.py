"""Leakage judged on the values: a panel spectrum or reference re-encoded (float64, another .npy header, new
ids, a new hash) into the training data is still the same spectrum.

Two vectors are the same spectrum when their RMS difference is at most VALUE_TOLERANCE of the panel vector's
RMS (relative L2 distance). Re-saving float32 values as float64 gives distance 0, as float16 about 2e-4; the
nearest honest pair of the synthetic corpus (clean references of two different groups) lies at 4e-3, noisy
spectra at 0.2. Every training vector (noisy spectrum and clean reference) is compared with every panel
vector (both kinds); non-finite rows (a training row without a reference) are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VALUE_TOLERANCE = 1e-3
_BLOCK = 2048  # training rows per matrix product: bounds memory to _BLOCK x panel rows


@dataclass(frozen=True)
class Vectors:
    """Named rows of one kind (spectra or references) of one manifest."""

    kind: str  # "spectrum" or "clean reference"
    values: np.ndarray  # [N, L]
    ids: Sequence[str]  # spectrum_id of each row


def spectra_and_references(raw: np.ndarray, reference: np.ndarray, ids: Sequence[str]) -> list[Vectors]:
    """One manifest's rows as value_leakage compares them: its noisy spectra and its clean references."""
    return [Vectors("spectrum", raw, ids), Vectors("clean reference", reference, ids)]


def near_duplicates(train: np.ndarray, panel: np.ndarray, tol: float = VALUE_TOLERANCE) -> list[tuple[int, int]]:
    """(train row, panel row) pairs whose relative L2 distance is at most `tol` (first panel match per row)."""
    t = np.asarray(train, np.float64)
    p = np.asarray(panel, np.float64)
    if t.size == 0 or p.size == 0 or t.shape[1] != p.shape[1]:
        return []
    t_ok = np.flatnonzero(np.isfinite(t).all(axis=1))
    p_ok = np.flatnonzero(np.isfinite(p).all(axis=1))
    p = p[p_ok]
    pn = (p * p).sum(axis=1)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(t_ok), _BLOCK):
        rows = t_ok[start : start + _BLOCK]
        blk = t[rows]
        d2 = (blk * blk).sum(axis=1)[:, None] + pn[None, :] - 2.0 * (blk @ p.T)
        hit = d2 <= (tol * tol) * np.maximum(pn[None, :], np.finfo(np.float64).tiny)
        for i in np.flatnonzero(hit.any(axis=1)):
            pairs.append((int(rows[i]), int(p_ok[int(np.argmax(hit[i]))])))
    return pairs


def value_leakage(train: Sequence[Vectors], panel: Sequence[Vectors], tol: float = VALUE_TOLERANCE) -> list[str]:
    """A problem line per (training kind, panel kind) with rows holding the same values as panel rows."""
    problems = []
    for t in train:
        for p in panel:
            pairs = near_duplicates(t.values, p.values, tol)
            if pairs:
                i, j = pairs[0]
                problems.append(
                    f"{len(pairs)} training {t.kind}(s) hold the values of a panel {p.kind} (relative distance "
                    f"<= {tol:g}): train {t.ids[i]!r} is panel {p.ids[j]!r}"
                )
    return problems
