"""The termination message: what a finished stage leaves for its executor (at most 4096 bytes, what Kubernetes
keeps of a container's /dev/termination-log; the local executor points GODRUN_TERMINATION_LOG at a file).

- the trainer (rank 0): its last gauges (`TrainGauges`) as Prometheus text, so that a run shorter than the
  progress poll still reports its epochs; the same text the live endpoint serves, without HELP lines.
- the evaluator: the compact `Verdict` JSON (by alias, no nulls), which becomes status.panel.

Each has one writer and one reader here. A reader never raises on what it cannot read: a log tail (the
pod's FallbackToLogsOnError), an empty file or a foreign text gives no value (and, for the verdict, the reason).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError

from godrun.contract.gauges import PREFIX, TrainGauges, gauge_name
from godrun.spec import Verdict, format_validation_error

LIMIT = 4096  # bytes
ERROR_LIMIT = 300  # characters of a reader's reason


# --------------------------------------------------------------------------- the trainer's message


def gauges_message(gauges: TrainGauges) -> str:
    """Every gauge as `# TYPE` and one sample line (NaN: no value yet), in the Prometheus text format."""
    lines = []
    for field, value in gauges.model_dump().items():
        name = gauge_name(field)
        lines += [f"# TYPE {name} gauge", f"{name} {'NaN' if value is None else repr(float(value))}"]
    return "\n".join(lines) + "\n"


def read_gauges_message(text: str) -> TrainGauges | None:
    """The gauges a trainer wrote with gauges_message; None for anything else (an empty or foreign text, a log
    tail). NaN reads as no value."""
    values: dict[str, float | None] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, number = line.partition(" ")
        field = name.removeprefix(PREFIX)
        if not name.startswith(PREFIX) or field not in TrainGauges.model_fields or field in values:
            return None
        try:
            value = float(number)
        except ValueError:
            return None
        values[field] = value if math.isfinite(value) else None
    return TrainGauges.model_validate(values) if values else None


# --------------------------------------------------------------------------- the evaluator's message


def verdict_message(verdict: Verdict, limit: int = LIMIT) -> str:
    """Verdict JSON by alias, no nulls, no spaces; guaranteed under `limit` bytes.

    It never lists checkpoints (only their count and the best one's path and hash), so its size does not grow with
    the number of checkpoints; only very long paths could push it over, and those are shortened first.
    """
    doc: dict[str, Any] = verdict.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = json.dumps(doc, separators=(",", ":"))
    lineage = doc.get("lineage", {})
    for key in ("report", "archive", "bestCheckpoint"):
        if len(text.encode()) < limit:
            break
        target = lineage if key == "bestCheckpoint" else doc
        if key in target:
            target[key] = "…" + str(target[key])[-120:]
            text = json.dumps(doc, separators=(",", ":"))
    if len(text.encode()) >= limit:  # last resort: drop the per-check detail, keep gate pass/fail
        doc["gates"] = [{"name": g["name"], "passed": g["passed"]} for g in doc.get("gates", [])]
        text = json.dumps(doc, separators=(",", ":"))
    return text


def read_verdict_message(message: str) -> tuple[Verdict | None, str | None]:
    """(verdict, None) from an evaluator's message, (None, reason) when it is not a Verdict, (None, None) if empty."""
    if not message.strip():
        return None, None
    try:
        return Verdict.model_validate_json(message), None
    except ValidationError as exc:
        return None, format_validation_error(exc)[:ERROR_LIMIT]
    except ValueError as exc:  # not JSON at all
        return None, str(exc)[:ERROR_LIMIT]
