"""The one checkpoint ranking both the trainer (best checkpoint, early stopping) and the evaluator use.

Rank by the number of gates passed, then by the composite panel score (higher is better), then by name,
so the order is total and reproducible. `rank_key` sorts ascending: the best candidate comes first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from godrun.spec import Verdict

RankKey = tuple[int, float, str]


def gates_passed(verdict: Verdict) -> int:
    return sum(g.passed for g in verdict.gates)


def composite_score(verdict: Verdict) -> float:
    """Panel score for ranking checkpoints that pass the same number of gates (higher is better).

    score = psnr_mean − 0.5·sam_mean + 10·tail_ratio + 10·roi_ratio − 0.5·min(spurious_peaks, 20)
    (PSNR in dB, SAM in degrees; a missing value counts as the worst: PSNR 0, SAM 90, ratios 0, 20 spurious).
    """
    psnr_mean = verdict.psnr_mean if verdict.psnr_mean is not None else 0.0
    sam_mean = verdict.sam_mean if verdict.sam_mean is not None else 90.0
    tail = verdict.tail_ratio or 0.0
    roi = verdict.roi_ratio or 0.0
    spurious = 20 if verdict.spurious_peaks is None else min(verdict.spurious_peaks, 20)
    return float(psnr_mean - 0.5 * sam_mean + 10.0 * tail + 10.0 * roi - 0.5 * spurious)


def rank_key(verdict: Verdict, name: str = "") -> RankKey:
    """Sort key, best first: more gates passed, then a higher composite score, then the name."""
    score = composite_score(verdict)
    return (-gates_passed(verdict), -score if math.isfinite(score) else math.inf, name)


def better(key: RankKey, than: RankKey | None) -> bool:
    """Whether `key` ranks strictly above `than` (anything beats None)."""
    return than is None or key < than
