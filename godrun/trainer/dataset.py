"""Training and panel data: Noise2Noise pairs, dose conditioning, sampling weights, train-only augmentation.

Each row's input is normalised with its own parameters (normalise.py); its target (the partner
replicate, or the clean reference) is put in the *input's* frame, so one de-normalisation serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from godrun.contract import files
from godrun.errors import InputError
from godrun.inputs import load_npz, numeric_column, read_csv
from godrun.model import normalise
from godrun.model.conditioning import raw_cond, standardise_cond
from godrun.spec import Recipe


@dataclass
class SplitData:
    """One manifest's spectra ready for the model (all float32 torch tensors on CPU)."""

    raw: torch.Tensor  # [N, L] measured (noisy) spectra
    x: torch.Tensor  # [N, L] normalised inputs
    offset: torch.Tensor  # [N]
    scale: torch.Tensor  # [N]
    reference: torch.Tensor  # [N, L] clean references (raw units)
    partner: torch.Tensor  # [N] long: the Noise2Noise partner row (itself when it has none)
    cond: torch.Tensor | None  # [N, F] standardised dose features
    weights: torch.Tensor  # [N] sampling probability (sums to 1)
    groups: np.ndarray  # [N] group_id
    meta: pd.DataFrame
    dip_windows: torch.Tensor | None = None  # [N, M, 2] gate-3 dip windows of each clean reference

    def __len__(self) -> int:
        return int(self.x.shape[0])


def cond_stats_for(recipe: Recipe) -> dict | None:
    """Feature names, means and stds used to standardise FiLM inputs (stored in checkpoints)."""
    if not recipe.geometry_film:
        return None
    from godrun.data.loader import load_dose_stats

    path = Path(recipe.dose_stats_json)
    if not path.is_file():
        raise InputError(f"--dose_stats_json: file not found: {path}")
    stats = load_dose_stats(path)
    missing = [f for f in recipe.film_features if f not in stats]
    if missing:
        raise InputError(f"--dose_stats_json {path}: no statistics for feature(s) {', '.join(missing)}")
    feats = list(recipe.film_features)
    std = [float(stats[f][1]) if float(stats[f][1]) > 0 else 1.0 for f in feats]
    return {"features": feats, "mean": [float(stats[f][0]) for f in feats], "std": std}


def sampling_weights(csv: str | Path, groups: np.ndarray) -> np.ndarray:
    """Per-row probability ∝ its group's dose sampling weight."""
    path = Path(csv)
    if not path.is_file():
        raise InputError(f"--dose_sampling_weights_csv: file not found: {path}")
    table = read_csv(path, "--dose_sampling_weights_csv", required=("group_id", "weight"), dtype={"group_id": str})
    weights = numeric_column(table, "weight", path, "--dose_sampling_weights_csv")
    w = dict(zip(table["group_id"].astype(str), weights, strict=True))
    missing = sorted(set(groups.tolist()) - set(w))
    if missing:
        raise InputError(f"{path}: no sampling weight for group {missing[0]!r} ({len(missing)} missing)")
    per_row = np.array([w[g] for g in groups], np.float64)
    if not np.all(np.isfinite(per_row)) or np.any(per_row < 0) or per_row.sum() <= 0:
        raise InputError(f"{path}: weights must be finite, >= 0 and not all zero")
    return per_row / per_row.sum()


def partners(meta: pd.DataFrame) -> np.ndarray:
    """Fixed Noise2Noise partner per row (next row of the same pair_id, cyclically; itself without a pair_id)."""
    n = len(meta)
    if "pair_id" not in meta.columns:
        return np.arange(n)
    codes, _ = pd.factorize(meta["pair_id"].astype(str))
    partner = np.arange(n)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], n]
    for s, e in zip(starts, ends, strict=True):
        members = order[s:e]
        partner[members] = np.roll(members, -1)
    return partner


def load_split(
    recipe: Recipe,
    manifest: str,
    cond_stats: dict | None,
    *,
    with_weights: bool,
    verify: bool = True,
    require_references: bool = True,
) -> SplitData:
    """One manifest's rows ready for the model; `verify` re-hashes every file against the manifest.

    Without `require_references` (the training manifest) rows may have no clean reference: their `reference` row is
    the mean of their group's replicates (replicate_mean_references), which gives the dip loss its windows.
    """
    from godrun.data.loader import load_corpus

    mpath = Path(manifest)
    if not mpath.is_file():
        raise InputError(f"manifest not found: {mpath}")
    grid = files.wavelength_grid(recipe.train_dir)
    corpus = load_corpus(
        mpath,
        recipe.train_dir,
        wavelength_grid=grid if grid.is_file() else None,
        expected_length=recipe.sequence_length,
        verify=verify,
        require_references=require_references,
    )
    if corpus.raw.shape[1] != recipe.sequence_length:
        raise InputError(f"--sequence_length {recipe.sequence_length} but {mpath} spectra have {corpus.raw.shape[1]}")
    groups = corpus.meta["group_id"].astype(str).to_numpy()
    if corpus.has_reference is not None and not corpus.has_reference.all():
        corpus.reference = replicate_mean_references(corpus.raw, corpus.reference, corpus.has_reference, groups)
    xn, params = normalise.normalise(corpus.raw)
    partner = partners(corpus.meta)
    cond = None
    if cond_stats is not None:
        cond = torch.from_numpy(
            standardise_cond(
                raw_cond(recipe.dose_features_csv, cond_stats["features"], groups),
                cond_stats["mean"],
                cond_stats["std"],
            )
        )
    if with_weights:
        weights = torch.from_numpy(sampling_weights(recipe.dose_sampling_weights_csv, groups))
    else:
        weights = torch.full((len(groups),), 1.0 / max(len(groups), 1), dtype=torch.float64)
    return SplitData(
        raw=torch.from_numpy(np.ascontiguousarray(corpus.raw, dtype=np.float32)),
        x=torch.from_numpy(xn),
        offset=torch.from_numpy(params["offset"].astype(np.float32)),
        scale=torch.from_numpy(params["scale"].astype(np.float32)),
        reference=torch.from_numpy(np.ascontiguousarray(corpus.reference, dtype=np.float32)),
        partner=torch.from_numpy(partner),
        cond=cond,
        weights=weights,
        groups=groups,
        meta=corpus.meta,
        dip_windows=reference_windows(recipe, corpus.reference, corpus.wavelengths) if recipe.dip_loss else None,
    )


def replicate_mean_references(
    raw: np.ndarray, reference: np.ndarray, has_reference: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """References where rows have none: the mean of every replicate of the row's group (itself included).

    Noise2Noise needs no clean target; what the missing reference still serves is the dip loss's windows (and the
    target of a row without a partner). Dips sit where the sample puts them, so a group's replicates share them;
    averaging n replicates divides the noise variance by n, and gate 3's detector then finds the dips the clean
    spectrum has (bench/dip_windows_without_references.py measures this against the partner alone).
    """
    out = reference.copy()
    for g in np.unique(groups[~has_reference]):
        rows = groups == g
        out[rows & ~has_reference] = raw[rows].astype(np.float64).mean(axis=0).astype(np.float32)
    return out


def reference_windows(recipe: Recipe, reference: np.ndarray, wl: np.ndarray) -> torch.Tensor:
    """Gate 3's dip windows of each clean reference: the dip loss measures prediction and target in them."""
    from godrun.gates.metrics import dip_windows

    return torch.from_numpy(dip_windows(reference.astype(np.float64), wl, recipe.detector, recipe.dip_m))


def load_wavelengths(recipe: Recipe) -> np.ndarray:
    """The grid beside the training spectra (data layout: <train_dir>/wavelength_grid.npy), --sequence_length long."""
    from godrun.data.layout import WAVELENGTH_GRID
    from godrun.data.loader import load_wavelengths as load_grid

    grid = Path(recipe.train_dir) / WAVELENGTH_GRID.name
    if not grid.is_file():
        raise InputError(f"--train_dir: wavelength grid not found: {grid}")
    return load_grid(grid, recipe.sequence_length)


def load_lambda_weights(recipe: Recipe) -> np.ndarray:
    path = Path(recipe.lambda_weights)
    if not path.is_file():
        raise InputError(f"--lambda_weights: file not found: {path}")
    w = load_npz(path, "--lambda_weights", keys=("weights",))["weights"].astype(np.float32)
    if w.shape != (recipe.sequence_length,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(f"--lambda_weights {path}: `weights` must be {recipe.sequence_length} finite values >= 0")
    return w


def replicate_noise_variance(data: SplitData) -> np.ndarray:
    """Per-wavelength noise variance [L] of the normalised inputs, from replicate pairs alone.

    Two replicates of one clean spectrum differ only by their noise, so E[(x_a - x_b)^2] / 2 is the noise
    variance — Noise2Noise's own premise, no clean data needed. Both rows are put in row a's frame, as the
    trainer puts its targets. Rows without a partner are skipped; all-unpaired data give zeros.
    """
    idx = torch.arange(len(data))
    paired = data.partner != idx
    if not bool(paired.any()):
        return np.zeros(data.x.shape[1], np.float64)
    a, b = idx[paired], data.partner[paired]
    xb = (data.raw[b] - data.offset[a, None]) / data.scale[a, None]
    diff = (data.x[a] - xb).double()
    return (diff.pow(2).mean(0) / 2).numpy()


def noise_weighted(lam: np.ndarray, variance: np.ndarray, power: float, roi: np.ndarray) -> np.ndarray:
    """Loss weights [L]: the λ-weights times (variance / median variance)^power outside the ROI, as they are inside.

    power 0.5 weights each wavelength by its noise std, so the noisy UV/NIR ends, where most of a denoiser's
    residual error lies, count more. The weight they gain comes from the other wavelengths outside the ROI
    (whose λ-weighted total is kept): the ROI keeps its λ-weights and its share of the MSE next to the dip
    and derivative terms. A weighting over the whole grid, renormalised to mean 1, cut that share from 41 %
    to 7 % and the ROI ratio of short runs with it (docs/learning-quality.md). `roi` is a boolean mask [L].
    """
    out = ~roi
    if power == 0 or not out.any():
        return lam.astype(np.float32)
    v = np.maximum(variance, 1e-12)
    f = (v / np.median(v)) ** power
    f = np.where(roi, 1.0, f * lam[out].sum() / (lam[out] * f[out]).sum())
    return (lam * f).astype(np.float32)


# ------------------------------------------------------------------ sampling and batches


def epoch_order(data: SplitData, n_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """Row indices for one epoch, drawn with the dose sampling weights; depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.multinomial(data.weights, n_samples, replacement=True, generator=g)


def targets_for(
    data: SplitData, idx: torch.Tensor, recipe: Recipe, gen: torch.Generator, *, panel: bool
) -> torch.Tensor:
    """Raw target rows: the partner replicate (Noise2Noise) or the clean reference."""
    n2n = recipe.val_noise2noise if panel else recipe.noise2noise
    if not n2n:
        return data.reference[idx]
    # non-pairwise: a random replicate of the same clean spectrum each time
    pairwise = panel or recipe.noise2noise_pairwise
    tidx = data.partner[idx] if pairwise else _random_same_pair(data, idx, gen)
    # rows without a partner fall back to their clean reference rather than learning the identity
    alone = tidx == idx
    return torch.where(alone[:, None], data.reference[idx], data.raw[tidx])


def _random_same_pair(data: SplitData, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    out = data.partner[idx].clone()
    hops = torch.randint(0, 4, (len(idx),), generator=gen)
    for _ in range(3):
        step = hops > 0
        out[step] = data.partner[out[step]]
        hops -= 1
    return out


class Batch(NamedTuple):
    """Model input and target (normalised), FiLM conditioning, and each row's de-normalisation."""

    x: torch.Tensor
    y: torch.Tensor
    cond: torch.Tensor | None
    offset: torch.Tensor
    scale: torch.Tensor
    windows: torch.Tensor | None = None  # [B, M, 2] gate-3 dip windows of each row's reference
    cutout: torch.Tensor | None = None  # [B, L] bool: the points augment zeroed in input and target
    shift: torch.Tensor | None = None  # [B] the jitter (grid points) augment moved input and target by


def make_batch(
    data: SplitData, idx: torch.Tensor, recipe: Recipe, gen: torch.Generator, wl_step: float, *, train: bool
) -> Batch:
    off, sc = data.offset[idx], data.scale[idx]
    x = data.x[idx]
    y = (targets_for(data, idx, recipe, gen, panel=not train) - off[:, None]) / sc[:, None]
    cut = shift = None
    if train:
        x, y, cut, shift = augment(x, y, recipe, gen, wl_step)
    cond = None if data.cond is None else data.cond[idx]
    windows = None if data.dip_windows is None else data.dip_windows[idx]
    return Batch(x, y, cond, off, sc, windows, cut, shift)


def augment(
    x: torch.Tensor, y: torch.Tensor, recipe: Recipe, gen: torch.Generator, wl_step: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train-only: the same sub-nm wavelength jitter on input and target; the same cutout window zeroed in both.

    Cutout zeroes the target's window too, so the model is asked to stay right around a missing stretch, not to
    invent what it could not see: with the target left whole, the window's error is the prior's uncertainty about
    8 nm of spectrum, the same at any noise level. On a quiet instrument (skspec-fit) it was ~100x the rest of
    the MSE, drove the training, and the panel PSNR fell 3-9 dB after mid-run, training rows alike
    (docs/noise.md, "The mid-run decline"). Returns x, y, the cutout mask [B, L] and the shift [B] (points)."""
    b, n = x.shape
    mask = torch.zeros(b, n, dtype=torch.bool)
    shift = torch.zeros(b, dtype=x.dtype)
    if recipe.jitter_nm > 0:
        shift = (torch.rand(b, generator=gen) * 2 - 1) * (recipe.jitter_nm / wl_step)
        x, y = shift_spectra(x, shift), shift_spectra(y, shift)
    width = round(recipe.cutout_nm / wl_step)
    if recipe.cutout_prob > 0 and width > 0:
        hit = torch.rand(b, generator=gen) < recipe.cutout_prob
        start = torch.randint(0, max(n - width, 1), (b,), generator=gen)
        pos = torch.arange(n)
        mask = hit[:, None] & (pos >= start[:, None]) & (pos < start[:, None] + width)
        x, y = x.masked_fill(mask, 0.0), y.masked_fill(mask, 0.0)
    return x, y, mask, shift


def shift_spectra(v: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each row moved by `shift` [B] grid points (linear interpolation, edges held)."""
    n = v.shape[1]
    pos = (torch.arange(n, dtype=v.dtype, device=v.device)[None] - shift.to(v)[:, None]).clamp(0, n - 1)
    lo = pos.floor().long().clamp(max=n - 2)
    frac = pos - lo
    return torch.gather(v, 1, lo) * (1 - frac) + torch.gather(v, 1, lo + 1) * frac
