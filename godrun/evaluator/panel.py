"""Panel QA: load the fixed panel once, replay each candidate on it, score it against the gates, rank.

A candidate is anything that turns the raw panel into predictions: a checkpoint (inference replayed with the
training normalisation through godrun.model.inference, EMA weights when present) or a classical denoiser.
Ranking: godrun.gates.ranking.rank_key, the one the trainer uses for its best checkpoint (gates passed, then
the composite panel score, then the name). The top one is the run's candidate; its Verdict is the run's verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from godrun.contract.checkpoint import CheckpointMeta
from godrun.contract.files import CHECKPOINT_SUFFIX
from godrun.errors import InputError
from godrun.evaluator.denoisers import DENOISERS
from godrun.fsio import sha256_file
from godrun.gates import metrics, ranking
from godrun.spec import Gates, Verdict

META_COLUMNS = ("spectrum_id", "group_id", "treatment", "sample", "angle", "polarity", "replicate")


@dataclass
class Panel:
    """The fixed validation panel, loaded once for every candidate."""

    raw: np.ndarray  # float32 [N, L]
    reference: np.ndarray  # float32 [N, L]
    meta: pd.DataFrame  # manifest rows, same order
    wavelengths: np.ndarray  # float64 [L]
    manifest: Path
    manifest_sha256: str
    metadata_csv: Path | None = None
    metadata_bytes: bytes | None = None  # dose_features.csv as read once and verified against the panel's pins
    grid_sha256: str | None = None  # the pinned grid the wavelengths were parsed from


@dataclass
class Candidate:
    """Something to evaluate: `predict(panel)` returns [N, L] de-normalised predictions."""

    name: str
    predict: Callable[[Panel], np.ndarray]
    sha256: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """One candidate's panel result; `prediction` is kept only for the top-ranked one (memory)."""

    name: str
    sha256: str | None
    per_spectrum: pd.DataFrame
    verdict: Verdict
    score: float
    seconds: float
    prediction: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gates_passed(self) -> int:
        return ranking.gates_passed(self.verdict)

    def rank_key(self) -> ranking.RankKey:
        return ranking.rank_key(self.verdict, self.name)


def load_panel(
    manifest: Path,
    root_dir: Path,
    wavelength_grid: Path | None = None,
    *,
    baseline_dir: Path | None = None,
    metadata_csv: Path | None = None,
    manifest_sha256: str | None = None,
) -> Panel:
    """Read the panel's raw spectra (root_dir) and clean references (baseline_dir, default root_dir).

    The panel must pin its wavelength grid and dose features (grid_sha256, dose_sha256): both are checked
    here, at use, and the metadata is kept as the verified bytes (never re-read from the path)."""
    from godrun.data.loader import load_corpus, verified_dose_features

    corpus = load_corpus(manifest, root_dir, wavelength_grid=wavelength_grid, require_pins=True)
    reference = corpus.reference
    if baseline_dir is not None and Path(baseline_dir).resolve() != Path(root_dir).resolve():
        reference = load_corpus(manifest, baseline_dir, wavelength_grid=wavelength_grid, require_pins=True).reference
    metadata_bytes = verified_dose_features(metadata_csv, corpus.meta, manifest) if metadata_csv else None
    return Panel(
        raw=np.asarray(corpus.raw, dtype=np.float32),
        reference=np.asarray(reference, dtype=np.float32),
        meta=corpus.meta.reset_index(drop=True),
        wavelengths=np.asarray(corpus.wavelengths, dtype=np.float64),
        manifest=Path(manifest),
        manifest_sha256=manifest_sha256 or sha256_file(manifest),
        metadata_csv=Path(metadata_csv) if metadata_csv else None,
        metadata_bytes=metadata_bytes,
        grid_sha256=str(corpus.meta["grid_sha256"].iloc[0]).lower(),
    )


def evaluate_prediction(panel: Panel, prediction: np.ndarray, gates: Gates) -> tuple[pd.DataFrame, Verdict, float]:
    """Per-spectrum metrics, the gate verdict and the composite score of one prediction of the panel."""
    pred = np.asarray(prediction, dtype=np.float32)
    if pred.shape != panel.reference.shape:
        raise InputError(f"prediction has shape {pred.shape}, the panel is {panel.reference.shape}")
    per = metrics.panel_metrics(pred, panel.reference, panel.raw, panel.wavelengths, gates)
    verdict = metrics.evaluate_gates(per, gates)
    return per, verdict, ranking.composite_score(verdict)


def evaluate_candidates(panel: Panel, candidates: Iterable[Candidate], gates: Gates) -> list[Evaluation]:
    """Evaluate every candidate; return them ranked (best first), the best one holding its prediction."""
    results: list[Evaluation] = []
    best: Evaluation | None = None
    for cand in candidates:
        t0 = time.perf_counter()
        pred = cand.predict(panel)
        per, verdict, score = evaluate_prediction(panel, pred, gates)
        ev = Evaluation(cand.name, cand.sha256, per, verdict, score, time.perf_counter() - t0, pred, dict(cand.info))
        if best is None or ev.rank_key() < best.rank_key():
            if best is not None:
                best.prediction = None
            best = ev
        else:
            ev.prediction = None
        results.append(ev)
    if not results:
        raise InputError("nothing to evaluate: no checkpoint and no --denoiser")
    return sorted(results, key=Evaluation.rank_key)


def denoiser_candidate(name: str) -> Candidate:
    if name not in DENOISERS:
        raise InputError(f"--denoiser: unknown {name!r} (choose from {', '.join(DENOISERS)})")
    fn = DENOISERS[name]
    return Candidate(f"denoiser:{name}", lambda p: fn(p.raw, p.wavelengths), None, {"denoiser": name})


def prediction_candidate(name: str, prediction: np.ndarray) -> Candidate:
    """A fixed array as a candidate (tests, precomputed predictions)."""
    return Candidate(name, lambda p: prediction)


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Every *.pt file directly inside the folder, sorted by name."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        raise InputError(f"--checkpoint-dir: {d} is not a folder")
    found = sorted(p for p in d.glob(f"*{CHECKPOINT_SUFFIX}") if p.is_file())
    if not found:
        raise InputError(f"--checkpoint-dir: no *.pt checkpoint in {d}")
    return found


def checkpoint_candidates(
    paths: Sequence[Path], *, device: str = "cpu", batch_size: int = 256, hashes: dict[str, str] | None = None
) -> list[Candidate]:
    """Lazy candidates: each checkpoint is loaded only when its turn comes and freed afterwards."""
    hashes = hashes or {}
    out = []
    for path in paths:
        cand = Candidate(str(path), lambda p: np.empty(0), hashes.get(str(path)) or sha256_file(path), {})
        cand.predict = _checkpoint_predictor(Path(path), device, batch_size, cand.info, cand.sha256)
        out.append(cand)
    return out


def _checkpoint_predictor(
    path: Path, device: str, batch_size: int, info: dict[str, Any], sha256: str | None = None
) -> Callable[[Panel], np.ndarray]:
    def run(panel: Panel) -> np.ndarray:
        from godrun.model import inference  # torch only when a checkpoint is really evaluated

        # A file that is not a checkpoint of this code is an InputError from load_model; anything else it
        # raises is a bug, left a crash (retried), never the user's fault.
        model, meta, has_ema = inference.load_model(path, device=device, prefer_ema=True, sha256=sha256)
        info.update(
            epoch=meta.epoch,
            ema=has_ema,
            init_checkpoint=meta.config.get("init_checkpoint"),
            data_hashes=dict(meta.data_hashes),
            scan_backend=meta.scan_backend,
        )
        cond = conditioning(meta, panel)
        pred = inference.predict(model, meta, panel.raw, cond, panel.wavelengths, batch_size, device)
        return np.asarray(pred)

    return run


def conditioning(meta: CheckpointMeta, panel: Panel) -> np.ndarray | None:
    """The raw FiLM inputs [N, F] for the panel rows in the checkpoint's feature order (None without FiLM)."""
    if meta.cond_stats is None:
        return None
    if panel.metadata_csv is None:
        raise InputError("--metadata: the checkpoint uses FiLM dose features; give data/metadata/dose_features.csv")
    from godrun.model.inference import raw_cond_for

    return raw_cond_for(meta, panel.metadata_csv, panel.meta["group_id"].astype(str).tolist(), panel.metadata_bytes)


def group_summary(panel: Panel, per_spectrum: pd.DataFrame, gates: Gates) -> pd.DataFrame:
    """Per-group means and pass ratios (PSNR, SAM, tail, ROI, spurious dips, downstream error)."""
    df = per_spectrum.reset_index(drop=True).assign(group_id=panel.meta["group_id"].astype(str).to_numpy())
    df = df.assign(psnr=metrics.capped_psnr(df["psnr"]), tail_pass=metrics.tail_pass(df["psnr"], df["sam"], gates))
    aggs: dict[str, tuple[str, str]] = {
        "n": ("psnr", "size"),
        "psnr_mean": ("psnr", "mean"),
        "psnr_std": ("psnr", lambda s: float(np.std(s))),  # type: ignore[dict-item]
        "psnr_min": ("psnr", "min"),
        "sam_mean": ("sam", "mean"),
        "sam_max": ("sam", "max"),
        "tail_pass_ratio": ("tail_pass", "mean"),
    }
    optional = {
        "roi_pass_ratio": ("roi_pass", "mean"),
        "ref_dips": ("n_ref_dips", "sum"),
        "spurious_peaks": ("n_spurious", "sum"),
        "area_err_max": ("area_err_max", "max"),
        "depth_err_max": ("depth_err_max", "max"),
        "downstream_err_mean": ("downstream_err", "mean"),
        "downstream_err_raw_mean": ("downstream_err_raw", "mean"),
    }
    aggs.update({k: v for k, v in optional.items() if v[0] in df.columns})
    return df.groupby("group_id", sort=True).agg(**aggs).reset_index()


def with_meta(panel: Panel, per_spectrum: pd.DataFrame, name: str) -> pd.DataFrame:
    """The per-spectrum metrics with the manifest's identifying columns in front and the candidate's name."""
    cols = [c for c in META_COLUMNS if c in panel.meta.columns]
    left = panel.meta[cols].reset_index(drop=True)
    right = per_spectrum.reset_index(drop=True).drop(columns=[c for c in cols if c in per_spectrum.columns])
    out = pd.concat([left, right], axis=1)
    out.insert(0, "candidate", name)
    return out
