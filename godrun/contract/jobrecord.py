"""The local executor's job record (`job.json`): what Kubernetes keeps in a Job's status, for a stage that
runs as a process on this machine (godrun/local/executor.py reads and writes it, confined and atomically).

A record without `exit_code` is a Job still going (or stopped with its runner: started again). Once the Job
is over, `exit_code` and `reason` are set together: 0 and "Completed", or the failed attempt's exit code and
the machine's FailureReason, stored as decided then and never re-derived from the exit code.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from godrun.errors import InputError
from godrun.spec import format_validation_error

COMPLETED = "Completed"  # the reason of a Job that succeeded
STOPPED = "stopped by the runner"  # last_exit of an attempt the runner stopped (not a failure)


class JobRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str]
    attempts: int = Field(0, ge=0)  # attempts started
    failures: int = Field(0, ge=0)  # failed attempts counted against backoffLimit
    created: str | None = None  # when the Job was first started (ISO 8601, UTC)
    created_ts: float | None = None  # the same, Unix seconds: older metrics.csv files are not this Job's
    started: str | None = None  # when the current attempt started
    pid: int | None = Field(None, gt=0)  # the current attempt's process group, with its start time (reuse check)
    start_ticks: int | None = None
    last_exit: int | Literal["stopped by the runner"] | None = None  # how the last attempt ended
    exit_code: int | None = None  # set when the Job is over
    reason: str | None = Field(None, min_length=1)  # set with exit_code

    @model_validator(mode="after")
    def _over_together(self) -> JobRecord:
        if (self.exit_code is None) != (self.reason is None):
            raise ValueError("exit_code and reason are set together, when the Job is over")
        if self.exit_code is not None and (self.exit_code == 0) != (self.reason == COMPLETED):
            raise ValueError(f"exit code 0 and reason {COMPLETED!r} go together")
        return self

    def changed(self, **updates: object) -> JobRecord:
        """A copy with `updates`, validated (model_copy would not check that exit_code and reason go together)."""
        return JobRecord.model_validate(self.model_dump() | updates)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)

    @classmethod
    def from_json(cls, data: bytes | str, where: str) -> JobRecord:
        """The record in `data`; anything else is an InputError naming `where` (no silent fresh start)."""
        try:
            return cls.model_validate(json.loads(data))
        except ValidationError as exc:
            why = "; ".join(format_validation_error(exc).splitlines())
            raise InputError(
                f"{where}: not a job record ({why}); remove the run's .godrun folder to start over"
            ) from exc
        except ValueError as exc:  # not JSON, not UTF-8
            raise InputError(
                f"{where}: not a job record ({exc}); remove the run's .godrun folder to start over"
            ) from exc
