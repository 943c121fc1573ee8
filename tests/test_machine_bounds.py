"""decide() never raises: a derived Act B spec that would be invalid, and numbers too large for a datetime, end
in a status (Error with a message, or no ETA) instead of a traceback that leaves the run stuck mid-phase."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from godrun.core.machine import GodRunView, Observed, StageObs, decide
from godrun.spec import RUN_PATH_MAX_LENGTH, GodRunSpec, GodRunStatus, Progress, Verdict

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _spec(training: dict | None = None, **over) -> GodRunSpec:
    body = {"image": "reg/godrun:1", "fallback": {"launchActB": True}, **over}
    if training:
        body["training"] = training
    return GodRunSpec.model_validate(body)


def _view(spec: GodRunSpec, status: GodRunStatus | None = None) -> GodRunView:
    return GodRunView(name="run", namespace="ns", generation=1, spec=spec, status=status or GodRunStatus())


def _long(prefix: str, total: int) -> str:
    return prefix + "/" + "d" * (total - len(prefix) - 1)


@pytest.mark.parametrize(
    "training",
    [
        {"log_dir": _long("logs", RUN_PATH_MAX_LENGTH - 2)},  # `_actb` pushes it over the limit
        {"log_dir": _long("logs", RUN_PATH_MAX_LENGTH - 26)},  # its audit log under it does
        {"checkpoint_dir": _long("checkpoints", RUN_PATH_MAX_LENGTH - 3)},
    ],
    ids=["log_dir", "log_dir-audit", "checkpoint_dir"],
)
def test_an_invalid_derived_act_b_spec_is_an_error_before_anything_starts(training: dict) -> None:
    spec = _spec(training)
    decision = decide(_view(spec), Observed(), T0)  # raised ValidationError before
    st = decision.status
    assert st.phase == "Error" and st.reason == "InvalidSpec"
    assert "Act B" in st.message
    assert not any(type(a).__name__ == "CreateJob" for a in decision.actions)


def _failed_verdict(best: str) -> Verdict:
    gates = [{"name": g, "passed": g != "roi", "checks": []} for g in ("aggregate", "tail", "roi", "downstream")]
    return Verdict.model_validate(
        {
            "verdict": "fail",
            "gates": gates,
            "failedGates": ["roi"],
            "checkpointsEvaluated": 1,
            "lineage": {"bestCheckpoint": best, "bestCheckpointSha256": "ab" * 32},
        }
    )


@pytest.mark.parametrize(
    "best", ["checkpoints/god_run/a\nb.pt", "checkpoints/god_run/" + "x" * 1100 + ".pt", "/abs/ckpt.pt"]
)
def test_a_best_checkpoint_the_child_cannot_take_ends_in_error(best: str) -> None:
    spec = _spec()
    view = _view(spec, GodRunStatus(phase="Evaluating", observed_generation=1))
    obs = Observed(
        train=StageObs(state="succeeded", exit_code=0),
        evaluate=StageObs(state="succeeded", exit_code=0),
        verdict=_failed_verdict(best),
    )
    decision = decide(view, obs, T0)  # raised inside _ensure_act_b before
    assert decision.status.phase == "Error" and "Act B" in decision.status.message
    assert not any(type(a).__name__ == "CreateActB" for a in decision.actions)
    # the run trained: an edit afterwards starts nothing (it is not an InvalidSpec, where nothing ran)
    edited = GodRunView(name="run", namespace="ns", generation=2, spec=spec, status=decision.status)
    again = decide(edited, Observed(), T0)
    assert again.status.phase == "Error" and again.status.reason == decision.status.reason
    assert not any(type(a).__name__ in ("CreateJob", "CreateActB") for a in again.actions)


@pytest.mark.parametrize("epochs", [10**11, 10**15, 2**62])
@pytest.mark.parametrize("seconds", [1.0, 1e9, 1e300])
def test_eta_of_huge_numbers_is_bounded(epochs: int, seconds: float) -> None:
    spec = _spec({"epochs": epochs}, fallback={"launchActB": False})
    view = _view(spec, GodRunStatus(phase="Training", observed_generation=1))
    obs = Observed(train=StageObs(state="active"), progress=Progress(epoch=1, epochs=epochs, epoch_seconds=seconds))
    st = decide(view, obs, T0).status  # OverflowError before
    assert st.phase == "Training" and st.progress.epoch == 1
    assert st.progress.eta is None or st.progress.eta.year < 9999
