"""Everything the evaluator writes: CSVs, gates.json, hashes.json (its termination message:
godrun.contract.termination).

All writes are atomic (temp file + rename): a reader never sees half a file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from godrun.contract import files
from godrun.errors import InputError
from godrun.evaluator.panel import Candidate, Evaluation, Panel, evaluate_candidates, group_summary, with_meta
from godrun.fsio import (
    atomic_path,
    atomic_paths,
    atomic_write_json,
    code_version,
    read_bytes,
    remove_stale_temps,
    sha256_bytes,
    sha256_file,
)
from godrun.spec import Gates, Lineage, Verdict

FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def _defused(value: object) -> object:
    """A text cell a spreadsheet would run as a formula (=, +, -, @ first) gets a leading quote."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_LEADS) else value


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text cell defused (numbers, negative ones included, are left as numbers)."""
    text = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)]
    return df.assign(**{c: df[c].map(_defused) for c in text}) if text else df


def _to_csv(path: Path, df: pd.DataFrame) -> None:
    csv_safe(df).to_csv(path, index=False, float_format="%.6g")


def write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        _to_csv(tmp, df)


def ranking_rows(evals: Sequence[Evaluation]) -> list[dict[str, Any]]:
    """One row per candidate, best first: what gates.json and the report list."""
    rows = []
    for rank, ev in enumerate(evals, start=1):
        v = ev.verdict
        rows.append(
            {
                "rank": rank,
                "checkpoint": ev.name,
                "sha256": ev.sha256,
                "verdict": v.verdict,
                "gates_passed": ev.gates_passed,
                "failed_gates": list(v.failed_gates),
                "composite_score": ev.score,
                "psnr_mean": v.psnr_mean,
                "psnr_std": v.psnr_std,
                "sam_mean": v.sam_mean,
                "tail_ratio": v.tail_ratio,
                "roi_ratio": v.roi_ratio,
                "spurious_peaks": v.spurious_peaks,
                "seconds": round(ev.seconds, 3),
                **{k: val for k, val in ev.info.items() if isinstance(val, str | int | float | bool) or val is None},
            }
        )
    return rows


def gates_document(verdict: Verdict, gates: Gates, evals: Sequence[Evaluation]) -> dict[str, Any]:
    return {
        "verdict": verdict.verdict,
        "candidate": evals[0].name if evals else None,
        "failed_gates": list(verdict.failed_gates),
        "gates": [g.model_dump(by_alias=False) for g in verdict.gates],
        "summary": verdict.model_dump(by_alias=True, exclude_none=True, exclude={"gates", "lineage"}),
        "thresholds": gates.model_dump(by_alias=True),
        "ranking": ranking_rows(evals),
        "lineage": verdict.lineage.model_dump(by_alias=True),
    }


def write_gates_json(path: Path, verdict: Verdict, gates: Gates, evals: Sequence[Evaluation]) -> None:
    atomic_write_json(path, gates_document(verdict, gates, evals))


def write_hashes_json(path: Path, hashes: dict[str, Any]) -> None:
    atomic_write_json(path, hashes)


@dataclass
class Result:
    verdict: Verdict
    evaluations: list[Evaluation]
    ranking: list[dict[str, Any]]
    report: Path
    hashes: dict[str, Any]


def lineage_for(best: Evaluation, panel_sha: str, root_dir: Path | None, panel: Panel | None = None) -> Lineage:
    """Hashes tying the verdict to its inputs: panel, training manifest (when known), init checkpoint, code."""
    info = best.info
    data_hashes = info.get("data_hashes") or {}
    manifest_sha = next(
        (v for k, v in data_hashes.items() if "train" in str(k) and isinstance(v, str) and len(v) == 64), None
    )
    if manifest_sha is None and root_dir is not None and files.training_manifest(root_dir).is_file():
        manifest_sha = sha256_file(files.training_manifest(root_dir))
    init = info.get("init_checkpoint")
    init_sha = sha256_file(init) if init and Path(init).is_file() else data_hashes.get("init_checkpoint")
    meta_bytes = panel.metadata_bytes if panel is not None else None
    return Lineage(
        panel_sha256=panel_sha,
        wavelength_grid_sha256=panel.grid_sha256 if panel is not None else None,
        metadata_sha256=sha256_bytes(meta_bytes) if meta_bytes is not None else None,
        manifest_sha256=manifest_sha,
        init_checkpoint_sha256=init_sha if isinstance(init_sha, str) else None,
        code_version=code_version(),
        best_checkpoint=best.name,
        best_checkpoint_sha256=best.sha256,
        scan_backend=info.get("scan_backend"),
    )


def training_history(checkpoint_dir: Path) -> pd.DataFrame | None:
    """The trainer's metrics.csv for these checkpoints (logs/<checkpoint dir name>/), when there is a readable one."""
    path = files.metrics_csv(files.seed_log_dir(checkpoint_dir))
    if not path.is_file():
        return None
    try:
        history = pd.read_csv(io.BytesIO(read_bytes(path, max_bytes=64 << 20)))  # confined, regular file only
    except (OSError, ValueError, pd.errors.ParserError, InputError):
        return None  # the curves are a picture in the report, never a reason to fail the evaluation
    return history if "epoch" in history.columns else None


def evaluate_and_write(
    panel: Panel,
    candidates: Iterable[Candidate],
    gates: Gates,
    *,
    output_dir: Path,
    checkpoint_hashes: dict[str, str] | None = None,
    extra_hashes: dict[str, Any] | None = None,
    root_dir: Path | None = None,
    history: pd.DataFrame | None = None,
) -> Result:
    """Evaluate and rank the candidates, then write every output file; return the run's verdict.

    `history`: the training run's metrics.csv (one row per epoch), drawn as learning curves in the report.
    """
    from godrun.evaluator.report import render

    evals = evaluate_candidates(panel, candidates, gates)
    best = evals[0]
    report_path = Path(output_dir) / files.REPORT_HTML
    verdict = best.verdict.model_copy(
        update={
            "checkpoints_evaluated": len(evals),
            "report": str(report_path),
            "lineage": lineage_for(best, panel.manifest_sha256, root_dir, panel),
        }
    )
    ranking = ranking_rows(evals)
    training = verdict.lineage.manifest_sha256
    hashes = {
        "panel_manifest": {"path": str(panel.manifest), "sha256": panel.manifest_sha256},
        "training_manifest": {"sha256": training} if training else None,
        "code_version": verdict.lineage.code_version,
        "init_checkpoint": verdict.lineage.init_checkpoint_sha256,
        "checkpoints": dict(checkpoint_hashes or {}),
        "best_checkpoint": {"path": best.name, "sha256": best.sha256},
        **(extra_hashes or {}),
    }
    groups = group_summary(panel, best.per_spectrum, gates)
    # Everything is computed (the report rendered too) before the first file is written: a failure on the
    # way leaves the output folder as it was, never with some outputs new and others old.
    page = render(panel, best, verdict, gates, groups, ranking, hashes, history=history)
    out = Path(output_dir)
    remove_stale_temps(out)  # what a killed evaluator left half-written
    texts = {
        files.GATES_JSON: json.dumps(gates_document(verdict, gates, evals), indent=2, default=str) + "\n",
        files.HASHES_JSON: json.dumps(hashes, indent=2, default=str) + "\n",
        files.REPORT_HTML: page,
    }
    tables = {
        files.PER_SPECTRUM_CSV: with_meta(panel, best.per_spectrum, best.name),
        files.PER_GROUP_CSV: groups,
    }
    names = [*tables, *texts]
    # all or nothing: every file is written to its temp first (a full disk fails here, renaming none)
    with atomic_paths([out / n for n in names]) as tmps:
        for name, tmp in zip(names, tmps, strict=True):
            if name in tables:
                _to_csv(tmp, tables[name])
            else:
                tmp.write_text(texts[name], encoding="utf-8")
    return Result(verdict, evals, ranking, report_path, hashes)
