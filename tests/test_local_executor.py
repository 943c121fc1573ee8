"""The local executor reports a stage's end in the machine's own terms, and runs the launcher's command."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from godrun.core.machine import CreateJob, GodRunView, StageObs, decide, failure_reason
from godrun.core.names import job_name
from godrun.local.executor import LocalExecutor
from godrun.spec import GodRunSpec


def _finish(ex: LocalExecutor, run: GodRunView, timeout: float = 60.0) -> StageObs:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obs = ex.observe(run).train
        if obs.state not in ("active", "absent"):
            return obs
        time.sleep(0.05)
    raise AssertionError("the stage did not finish")


def _run(tmp_path: Path, code: str, backoff: int) -> tuple[StageObs, LocalExecutor, GodRunView]:
    spec = GodRunSpec.model_validate({"image": "local", "jobs": {"backoffLimit": backoff}})
    run = GodRunView("r", "local", 1, spec)
    ex = LocalExecutor(tmp_path, tmp_path / "status.json", echo=False)
    argv = ("python", "-c", code)
    assert ex.apply(run, [CreateJob("train", job_name("r", "train", 1), 1, argv)])
    return _finish(ex, run), ex, run


def test_a_stage_that_keeps_failing_is_retries_exhausted(tmp_path: Path):
    obs, ex, run = _run(tmp_path, "import sys; print('boom'); sys.exit(3)", backoff=1)
    assert (obs.state, obs.reason, obs.exit_code, obs.message) == ("failed", "RetriesExhausted", 3, "boom")
    events = (ex.run_dir(run) / "events.log").read_text()
    assert events.count("Retrying") == 1
    d = decide(run, ex.observe(run), datetime.now(UTC))
    assert (d.status.phase, d.status.reason) == ("Error", "RetriesExhausted")


def test_exit_2_is_bad_input_without_a_retry(tmp_path: Path):
    obs, ex, run = _run(tmp_path, "import sys; print('error: row 7'); sys.exit(2)", backoff=3)
    assert (obs.exit_code, failure_reason(obs), obs.message) == (2, "BadInput", "error: row 7")
    assert not (ex.run_dir(run) / "events.log").exists()


def test_the_stage_runs_this_python(tmp_path: Path):
    obs, _, _ = _run(tmp_path, "import sys; print(sys.executable); sys.exit(5)", backoff=0)
    assert Path(obs.message).resolve() == Path(sys.executable).resolve()
