"""Training progress for the local runner, read from the trainer's metrics.csv (one row per epoch)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from godrun.spec import Progress, Recipe


def _num(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def read_progress(workdir: Path, recipe: Recipe) -> Progress | None:
    """Progress after the last finished epoch, or None before the first one."""
    path = workdir / recipe.log_dir / "metrics.csv"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        return None
    if not rows:
        return None
    last = rows[-1]
    best = _num(last.get("best_epoch"))  # the trainer's own choice (godrun.gates.ranking), not re-derived here
    return Progress(
        epoch=int(float(last["epoch"])),
        epochs=recipe.epochs,
        best_epoch=None if best is None else int(best),
        psnr_mean=_num(last.get("panel_psnr_mean")),
        sam_mean=_num(last.get("panel_sam_mean")),
    )
