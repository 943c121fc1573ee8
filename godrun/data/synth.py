"""Synthetic UV-vis corpus in the seed's layout (godrun/data/layout.py), deterministic for a seed.

Physics imitated (per group = treatment × sample × angle):
* a smooth sample-specific baseline (level, tilt, curvature, one broad hump, a UV absorption edge
  below ~270 nm), scaled by an angle-dependent amplitude 0.55 + 0.45·cos θ;
* 2–3 Gaussian absorption dips per production sample at fixed centres in 340–480 nm, FWHM 10–28 nm,
  relative depth a_j·(0.35 + 0.65·D) with D the group's dose index (0.6·UVA_norm + 0.4·UVB_norm);
  a_j is chosen so that every dip's area is ≥ ~2.5× the detector's min_area at the lowest dose;
  treatment-6 controls have no dips;
* Noise2Noise pairs: each pair of replicates shares one clean spectrum (small per-pair amplitude,
  tilt and dip-depth variation); each replicate adds the noise of an instrument profile
  (godrun/data/noise.py, godrun/data/profiles/; docs/noise.md). The default profile: shot + read noise
  of a dual-lamp spectrometer through the lamp × grating × detector throughput, so it is large at the
  deep-UV and NIR ends, moderate in the dim 320–400 nm part of the ROI and smallest near 450–650 nm;
  plus a slow lamp drift and occasional positive one- or two-point (cosmic-ray) spikes. The fitted
  profile (skspec-fit) adds correlated low-frequency noise and a lamp warm-up over the session.
Spectra and clean references are float32 .npy files, one per spectrum / per pair.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.data import layout
from godrun.data.noise import NoiseProfile, PhotonTransfer, add_noise, load_profile, white_sigma
from godrun.data.noise import throughput as _throughput
from godrun.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text

SCALE_MIN_GROUP = 4  # one pair per polarity
DIP_SPAN_NM = (340.0, 480.0)  # dip centres stay here, so windows and guard bands fit the 320-500 nm ROI


@dataclass(frozen=True)
class GroupPlan:
    group_id: str
    treatment: int
    sample: str
    angle: str
    n: int


def scaled_count(n: int, scale: float) -> int:
    """Spectra in a group at `scale`: even (whole pairs), at least one pair per polarity."""
    return max(SCALE_MIN_GROUP, 2 * round(n * scale / 2.0))


def plan_groups(scale: float = 1.0) -> list[GroupPlan]:
    """Every group of the corpus with its spectrum count (panel groups 300/300/150 at scale 1)."""
    if not (0 < scale <= 1.0):
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    plans = []
    for t in layout.TREATMENTS:
        control = t == layout.CONTROL_TREATMENT
        for s in layout.CONTROL_SAMPLES if control else layout.PRODUCTION_SAMPLES:
            for a in layout.ANGLES:
                gid = layout.group_id(t, s, a)
                default = layout.CONTROL_GROUP_SIZE if control else layout.PRODUCTION_GROUP_SIZE
                n = layout.PANEL_GROUPS[gid][0] if gid in layout.PANEL_GROUPS else default
                plans.append(GroupPlan(gid, t, s, a, scaled_count(n, scale)))
    return plans


def wavelength_grid() -> np.ndarray:
    return np.linspace(layout.GRID_MIN_NM, layout.GRID_MAX_NM, layout.GRID_POINTS)


# --------------------------------------------------------------------------- dose features

_THETA_DEG = {"6Oclock": 25.0, "12Oclock": 55.0}
_P_UVA = (2.0, 3.0, 4.0, 5.0, 6.0)  # mW/cm² per treatment
_P_UVB = (0.10, 0.16, 0.24, 0.32, 0.45)
_HOURS = (4.0, 6.0, 8.0, 10.0, 12.0)


def dose_features(plans: list[GroupPlan]) -> pd.DataFrame:
    """The eight FiLM features per group (controls: zero dose)."""
    rows = []
    for p in plans:
        cos = math.cos(math.radians(_THETA_DEG[p.angle]))
        if p.treatment == layout.CONTROL_TREATMENT:
            pa = pb = uva = uvb = 0.0
        else:
            pos = 1.0 + 0.04 * (layout.PRODUCTION_SAMPLES.index(p.sample) - 2)  # position under the lamp
            pa, pb = _P_UVA[p.treatment - 1] * pos, _P_UVB[p.treatment - 1] * pos
            uva = pa * cos * _HOURS[p.treatment - 1] * 3.6  # J/cm²
            uvb = pb * cos * _HOURS[p.treatment - 1] * 3.6
        rows.append(
            {
                "group_id": p.group_id,
                "cos_theta": cos,
                "UVA_total": uva,
                "UVB_total": uvb,
                "UVA_over_UVB": uva / uvb if uvb > 0 else 0.0,
                "P_UVA_mW_cm2": pa,
                "P_UVB_mW_cm2": pb,
            }
        )
    df = pd.DataFrame(rows)
    df["UVA_norm"] = df["UVA_total"] / df["UVA_total"].max()
    df["UVB_norm"] = df["UVB_total"] / df["UVB_total"].max()
    return df[["group_id", *layout.DOSE_FEATURE_COLUMNS]].round(6)


def dose_index(features: pd.Series) -> float:
    return float(0.6 * features["UVA_norm"] + 0.4 * features["UVB_norm"])


# --------------------------------------------------------------------------- clean spectra


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class SampleShape:
    level: float
    tilt: float
    curve: float
    hump: tuple[float, float, float]  # centre, width, amplitude
    edge: tuple[float, float]  # UV edge centre, width
    dips: tuple[tuple[float, float, float], ...]  # centre, FWHM, a_j


def sample_shape(sample: str, seed: int) -> SampleShape:
    rng = np.random.default_rng([seed, 7, ord(sample)])
    dips: list[tuple[float, float, float]] = []
    if sample in layout.PRODUCTION_SAMPLES:
        n_dips = int(rng.integers(2, 4))
        fwhm = rng.uniform(10.0, 28.0, n_dips)
        need = fwhm[:-1] + fwhm[1:] + 25.0  # windows (~±FWHM) plus both guard bands stay apart
        while need.sum() > DIP_SPAN_NM[1] - DIP_SPAN_NM[0]:  # drop the last dip until they fit
            fwhm, need = fwhm[:-1], need[:-1]
        slack = DIP_SPAN_NM[1] - DIP_SPAN_NM[0] - need.sum()
        share = rng.dirichlet(np.ones(len(fwhm) + 1)) * slack
        centres = DIP_SPAN_NM[0] + share[0] + np.concatenate([[0.0], np.cumsum(need + share[1:-1])])
        for c, f in zip(centres, fwhm, strict=True):
            a = max(2.4 / float(f), float(rng.uniform(0.10, 0.20)))
            dips.append((round(float(c), 2), round(float(f), 2), round(a, 4)))
    return SampleShape(
        level=float(rng.uniform(0.55, 0.8)),
        tilt=float(rng.uniform(-0.15, 0.15)),
        curve=float(rng.uniform(-0.12, 0.05)),
        hump=(float(rng.uniform(380, 650)), float(rng.uniform(150, 260)), float(rng.uniform(-0.1, 0.2))),
        edge=(float(rng.uniform(235, 258)), float(rng.uniform(6, 10))),
        dips=tuple(dips),
    )


def baseline(shape: SampleShape, wl: np.ndarray) -> np.ndarray:
    x = (wl - 500.0) / 300.0
    c, w, a = shape.hump
    b = 1.0 + shape.tilt * x + shape.curve * x**2 + a * np.exp(-0.5 * ((wl - c) / w) ** 2)
    return shape.level * b * _sigmoid((wl - shape.edge[0]) / shape.edge[1])


def dip_profile(shape: SampleShape, wl: np.ndarray, dose: float, depth_scale: np.ndarray) -> np.ndarray:
    """Relative absorption [P, L] (1 − transmission factor) for P pairs; zero for controls."""
    absorb = np.zeros((len(depth_scale), len(wl)))
    for c, f, a in shape.dips:
        sigma = f / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        depth = a * (0.35 + 0.65 * dose)
        absorb += depth * depth_scale[:, None] * np.exp(-0.5 * ((wl - c) / sigma) ** 2)[None, :]
    return absorb


# --------------------------------------------------------------------------- noise
# The noise model and its instrument profiles live in godrun/data/noise.py and godrun/data/profiles/.


def throughput(wl: np.ndarray) -> np.ndarray:
    """The default profile's system throughput S(λ) (godrun/data/noise.py)."""
    white = load_profile().white
    assert isinstance(white, PhotonTransfer)
    return _throughput(wl, white)


def noise_sigma(clean: np.ndarray, wl: np.ndarray, profile: NoiseProfile | None = None) -> np.ndarray:
    """White (per-pixel) σ_T [..., L] of a clean spectrum under `profile` (default: the default profile)."""
    return white_sigma(clean, wl, profile or load_profile())


# --------------------------------------------------------------------------- group synthesis


def _pair_clean(plan: GroupPlan, feats: pd.Series, wl: np.ndarray, seed: int, rng: np.random.Generator) -> np.ndarray:
    shape = sample_shape(plan.sample, seed)
    n_pairs = plan.n // 2
    amp = 0.55 + 0.45 * float(feats["cos_theta"])
    base = baseline(shape, wl) * amp
    pol_gain = np.where(np.arange(n_pairs) % 2 == 0, 1.0, 0.97)  # neg polarity reads slightly lower
    x = (wl - 500.0) / 300.0
    gain = (1.0 + 0.02 * rng.standard_normal(n_pairs)) * pol_gain
    tilt = 0.01 * rng.standard_normal(n_pairs)
    depth_scale = 1.0 + 0.02 * rng.standard_normal(n_pairs)
    absorb = dip_profile(shape, wl, dose_index(feats), depth_scale)
    return base[None, :] * gain[:, None] * (1.0 + tilt[:, None] * x[None, :]) * (1.0 - absorb)


def synth_group(
    plan: GroupPlan, feats: pd.Series, wl: np.ndarray, seed: int, index: int, profile: NoiseProfile | None = None
):
    """(reference [P, L], one per pair; raw [N, L]; rows) of one group; pairs are (2k, 2k+1), scanned in row order."""
    rng = np.random.default_rng([seed, 1, index])
    reference = _pair_clean(plan, feats, wl, seed, rng)
    pair_of = np.repeat(np.arange(plan.n // 2), 2)
    raw = add_noise(reference[pair_of], wl, rng, profile or load_profile())
    tag = f"t{plan.treatment}_{plan.sample}_{plan.angle}"
    rows = []
    rep_count = {pol: 0 for pol in layout.POLARITIES}
    for i, k in enumerate(pair_of):
        pol = layout.POLARITIES[k % 2]
        rep = rep_count[pol]
        rep_count[pol] += 1
        sid = f"{tag}_{pol}_r{rep:03d}"
        pid = f"{tag}_pair{k:03d}"
        rows.append(
            {
                "spectrum_id": sid,
                "group_id": plan.group_id,
                "treatment": plan.treatment,
                "sample": plan.sample,
                "angle": plan.angle,
                "polarity": pol,
                "replicate": rep,
                "pair_id": pid,
                "path": f"spectra/{plan.group_id}/{sid}.npy",
                "reference_path": f"references/{plan.group_id}/{pid}.npy",
                "_pair": int(k),
                "_row": i,
            }
        )
    return reference.astype(np.float32), raw.astype(np.float32), rows


# --------------------------------------------------------------------------- writing

_NPY_HEADER: dict[int, bytes] = {}


def npy_bytes(vec: np.ndarray) -> bytes:
    """The exact bytes np.save writes for a 1-D float32 array (header built once per length)."""
    vec = np.ascontiguousarray(vec, dtype="<f4")
    header = _NPY_HEADER.get(vec.shape[0])
    if header is None:
        buf = io.BytesIO()
        np.save(buf, np.zeros_like(vec))
        header = _NPY_HEADER[vec.shape[0]] = buf.getvalue()[: -vec.nbytes]
    return header + vec.tobytes()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A .npz with fixed zip timestamps, so the same arrays give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.save(member, arr)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buf.getvalue()


def _write_raw(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def synthesise(
    out: str | Path, scale: float = 1.0, seed: int = 0, noise_profile: str | Path | NoiseProfile | None = None
) -> pd.DataFrame:
    """Write the whole corpus under `out` (a workspace root holding data/); returns manifest_all.

    `noise_profile`: a profile, a packaged profile's name or a JSON file (default: the default profile).
    """
    out = Path(out)
    profile = noise_profile if isinstance(noise_profile, NoiseProfile) else load_profile(noise_profile)
    root = out / layout.SPECTRA_DIR
    plans = plan_groups(scale)
    feats = dose_features(plans).set_index("group_id")
    wl = wavelength_grid()
    all_rows: list[dict] = []
    acc_sum = np.zeros(len(wl))
    acc_sq = np.zeros(len(wl))
    acc_n = 0
    made_dirs: set[Path] = set()
    for gi, plan in enumerate(plans):
        reference, raw, rows = synth_group(plan, feats.loc[plan.group_id], wl, seed, gi, profile)
        for sub in ("spectra", "references"):
            d = root / sub / plan.group_id
            if d not in made_dirs:
                d.mkdir(parents=True, exist_ok=True)
                made_dirs.add(d)
        ref_sha: dict[str, str] = {}
        for k in range(len(reference)):
            data = npy_bytes(reference[k])
            _write_raw(root / rows[2 * k]["reference_path"], data)
            ref_sha[rows[2 * k]["reference_path"]] = hashlib.sha256(data).hexdigest()
        for row in rows:
            row["reference_sha256"] = ref_sha[row["reference_path"]]
            data = npy_bytes(raw[row["_row"]])
            _write_raw(root / row["path"], data)
            row["content_sha256"] = hashlib.sha256(data).hexdigest()
        if plan.group_id not in layout.PANEL_GROUPS:
            x = raw.astype(np.float64)
            acc_sum += x.sum(0)
            acc_sq += (x * x).sum(0)
            acc_n += len(x)
        all_rows.extend(rows)
    manifest = pd.DataFrame(all_rows)[list(layout.MANIFEST_COLUMNS)]
    _write_metadata(out, plans, feats, manifest)
    mean = acc_sum / acc_n
    std = np.sqrt(np.maximum(acc_sq / acc_n - mean**2, 0.0))
    stats = _lambda_from_moments(mean, std, wl)
    atomic_write_bytes(out / layout.LAMBDA_STATS, npz_bytes(stats))
    atomic_write_bytes(out / layout.WAVELENGTH_GRID, _npy_any(wl))
    atomic_write_text(out / layout.MANIFEST_ALL, manifest.to_csv(index=False, lineterminator="\n"))
    return manifest


def _lambda_from_moments(mean: np.ndarray, std: np.ndarray, wl: np.ndarray) -> dict[str, np.ndarray]:
    """Per-wavelength mean/std of the training spectra and loss weights (mean 1).

    weights ∝ sqrt(median std / std) clipped to [0.5, 2] (the noisy ends count less), times 1.5 inside
    the ROI (320–500 nm), normalised to mean 1.
    """
    w = np.clip(np.sqrt(np.median(std) / np.maximum(std, 1e-12)), 0.5, 2.0)
    w = w * np.where((wl >= 320.0) & (wl <= 500.0), 1.5, 1.0)
    w = w / w.mean()
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "weights": w.astype(np.float32)}


def _npy_any(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _write_metadata(out: Path, plans: list[GroupPlan], feats: pd.DataFrame, manifest: pd.DataFrame) -> None:
    train = [p.group_id for p in plans if p.group_id not in layout.PANEL_GROUPS]
    write_metadata(out, feats, manifest, train)


def write_metadata(out: Path, feats: pd.DataFrame | None, manifest: pd.DataFrame, train: list[str]) -> None:
    """dose_sampling_weights.csv and dose_features.csv (the group_ids alone without `feats`); dose_stats.json
    when `feats` (indexed by group_id).

    Each training group is drawn equally often overall; with dose features higher dose groups get a mild boost.
    """
    counts = manifest.groupby("group_id", sort=False).size()
    boost = {g: 1.0 + 0.5 * dose_index(feats.loc[g]) if feats is not None else 1.0 for g in counts.index}
    w = pd.Series({g: (counts.mean() / counts[g]) * boost[g] for g in counts.index})
    w = w / w[train].mean()
    weights = pd.DataFrame({"group_id": w.index, "weight": w.round(6).to_numpy()})
    atomic_write_text(out / layout.DOSE_SAMPLING_WEIGHTS, weights.to_csv(index=False, lineterminator="\n"))
    if feats is None:  # the group list alone: the evaluator's --metadata; FiLM needs the feature columns
        groups = pd.DataFrame({"group_id": list(counts.index)})
        atomic_write_text(out / layout.DOSE_FEATURES, groups.to_csv(index=False, lineterminator="\n"))
        return
    feats_out = feats.reset_index()
    atomic_write_text(out / layout.DOSE_FEATURES, feats_out.to_csv(index=False, lineterminator="\n"))
    tf = feats.loc[train]
    stats = {
        "features": {
            c: {"mean": round(float(tf[c].mean()), 8), "std": round(float(tf[c].std(ddof=0)), 8)}
            for c in layout.DOSE_FEATURE_COLUMNS
        },
        "groups": len(train),
        "computed_over": "training groups (validation panel excluded)",
    }
    atomic_write_json(out / layout.DOSE_STATS, stats)
