"""What both executors read back from a running or finished stage: training progress and the verdict.

The Kubernetes executor reads progress from the trainer's Prometheus endpoint and the verdict from the
evaluation pod's termination message; the local executor reads the trainer's metrics.csv and the file the
evaluator wrote through GODRUN_TERMINATION_LOG. The parsing (and the rule for the best epoch) lives here once.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from godrun.contract.gauges import PROGRESS_FIELDS, PROGRESS_GAUGES
from godrun.contract.termination import read_gauges_message, read_verdict_message
from godrun.errors import InputError
from godrun.fsio import read_bytes
from godrun.spec import Progress, Recipe, Verdict

MAX_PROGRESS_BYTES = 64 << 20
_INT_FIELDS = ("epoch", "epochs", "best_epoch")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _progress(values: dict[str, float | None]) -> Progress:
    fields: dict[str, int | float] = {}
    for name, value in values.items():
        v = _finite(value)
        if v is None:
            continue
        if name not in _INT_FIELDS:
            fields[name] = v
        elif v >= 0:
            fields[name] = int(v)
    return Progress.model_validate(fields)


def parse_progress(text: str) -> Progress | None:
    """Progress from the trainer's Prometheus exposition (None when it carries none of the metrics)."""
    values: dict[str, float | None] = {}
    for family in text_string_to_metric_families(text):
        name = PROGRESS_GAUGES.get(family.name)
        if name and family.samples:
            values[name] = family.samples[0].value
    return _progress(values) if values else None


def final_progress(message: str) -> Progress | None:
    """Progress from a finished trainer's termination message (its last gauges); None when the message is not
    such a message (a log tail) or records no finished epoch."""
    gauges = read_gauges_message(message)
    if gauges is None:
        return None
    progress = _progress({PROGRESS_FIELDS[k]: v for k, v in gauges.model_dump().items() if k in PROGRESS_FIELDS})
    return progress if progress.epoch >= 1 else None


def _num(text: str | None) -> float | None:
    try:
        return _finite(float(text)) if text not in (None, "") else None
    except ValueError:
        return None


def read_progress_csv(path: Path, recipe: Recipe) -> Progress | None:
    """Progress after the last finished epoch of the trainer's metrics.csv, or None before the first one."""
    try:
        text = read_bytes(path, max_bytes=MAX_PROGRESS_BYTES).decode("utf-8", errors="replace")
        rows = [r for r in csv.DictReader(io.StringIO(text, newline="")) if r.get("epoch")]
    except (OSError, csv.Error, InputError):  # missing, not a regular file, a symlink: no progress to show
        return None
    if not rows:
        return None
    last = rows[-1]
    values = {
        "epoch": _num(last["epoch"]),
        "epochs": float(recipe.epochs),
        # the trainer's own choice (godrun.gates.ranking under the GodRun's gates), never re-derived here
        "best_epoch": _num(last.get("best_epoch")),
        "psnr_mean": _num(last.get("panel_psnr_mean")),
        "sam_mean": _num(last.get("panel_sam_mean")),
        "epoch_seconds": _num(last.get("seconds")),
    }
    return _progress(values)


def read_verdict_file(path: Path) -> tuple[Verdict | None, str | None]:
    """The verdict a stage wrote to its termination-log file; a missing or empty file is an error here."""
    try:
        verdict, error = read_verdict_message(read_bytes(path, max_bytes=1 << 20).decode("utf-8", errors="replace"))
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, InputError) as exc:
        return None, f"{path}: {exc}"
    return (verdict, error) if verdict is not None or error else (None, f"{path} is empty")
