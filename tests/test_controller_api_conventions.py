"""API conventions of the state machine: terminal conditions, suspend, whole-Job multi-node recovery, progress."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from test_controller_machine import Runner, cond, spec, verdict

from godrun.core.machine import CreateJob, DeleteJob, StageObs
from godrun.core.names import job_name
from godrun.spec import REASON_PATTERN, Progress


def _finish(r: Runner, passed: bool | None) -> None:
    """Drive a run to Shipped (True), Failed-ActB (False) or Error (None: training exits 2)."""
    r.step()
    if passed is None:
        r.set("train", StageObs("failed", reason="PodFailurePolicy", exit_code=2, message="error: bad row 7"))
        r.step()
        return
    r.set("train", StageObs("succeeded", exit_code=0))
    r.step()
    r.set("evaluate", StageObs("succeeded", exit_code=0))
    r.cluster.verdict = verdict(passed)
    r.step()


@pytest.mark.parametrize(
    ("passed", "phase", "succeeded", "failed", "reason"),
    [
        (True, "Shipped", "True", "False", "GatesPassed"),
        (False, "Failed-ActB", "False", "True", "GatesFailed"),
        (None, "Error", "False", "True", "BadInput"),
    ],
)
def test_terminal_conditions_for_kubectl_wait(passed, phase, succeeded, failed, reason):
    r = Runner()
    _finish(r, passed)
    st = r.view.status
    assert st.phase == phase
    assert (cond(st, "Succeeded"), cond(st, "Failed")) == (succeeded, failed)
    terminal = [c for c in st.conditions if c.type in ("Succeeded", "Failed")]
    assert {c.reason for c in terminal} == {reason}
    assert all(c.status != "Unknown" for c in st.conditions), st.conditions
    for c in st.conditions:
        assert c.observed_generation == 1 and c.last_transition_time is not None
        assert c.reason and __import__("re").match(REASON_PATTERN, c.reason), c.reason


def test_terminal_conditions_are_unknown_while_running_and_kept_by_a_later_edit():
    r = Runner()
    r.step()
    assert (cond(r.view.status, "Succeeded"), cond(r.view.status, "Failed")) == ("Unknown", "Unknown")
    _finish(r, True)
    r.change_spec(spec(image="reg/godrun:2"))
    d = r.step()  # a verdict is final: the edit is only acknowledged
    assert d.status.phase == "Shipped" and cond(d.status, "Succeeded") == "True"
    assert all(c.observed_generation == 2 for c in d.status.conditions)


def test_suspend_deletes_the_running_job_and_resume_recreates_it():
    r = Runner()
    r.step()
    train = job_name("god-run", "train", 1)
    r.view = replace(r.view, spec=spec(suspend=True), generation=2)
    r.cluster.generations[train] = 2  # same Job, seen from generation 2 for the fake
    r.cluster.jobs[job_name("god-run", "train", 2)] = r.cluster.jobs.pop(train)
    r.cluster.generations[job_name("god-run", "train", 2)] = r.cluster.generations.pop(train)
    d = r.step()
    assert [a.name for a in d.actions if isinstance(a, DeleteJob)] == [job_name("god-run", "train", 2)]
    assert (d.status.phase, d.status.reason) == ("Pending", "Suspended")
    assert not [a for a in d.actions if isinstance(a, CreateJob)]
    d = r.step()  # nothing runs while suspended
    assert not [a for a in d.actions if isinstance(a, CreateJob | DeleteJob)]
    r.view = replace(r.view, spec=spec(suspend=False), generation=3)
    d = r.step()
    (create,) = [a for a in d.actions if isinstance(a, CreateJob)]
    assert create.stage == "train" and d.status.phase == "Training"


def _multi_node(**jobs) -> Runner:
    return Runner(spec(resources={"nodes": 2}, data={"claimName": "rwx"}, jobs={"backoffLimit": 2, **jobs}))


def test_multi_node_failure_recreates_the_whole_job_counting_restarts():
    r = _multi_node()
    r.step()
    for restart in (1, 2):
        r.set("train", StageObs("failed", reason="RetriesExhausted", exit_code=1))
        d = r.step()
        (create,) = [a for a in d.actions if isinstance(a, CreateJob)]
        assert create.name == job_name("god-run", "train", 1, restart) == d.status.jobs.train
        assert (d.status.phase, d.status.reason, d.status.restarts) == ("Training", "TrainJobRecreated", restart)
    r.set("train", StageObs("failed", reason="RetriesExhausted", exit_code=1))
    d = r.step()
    assert (d.status.phase, d.status.reason, d.status.restarts) == ("Error", "RetriesExhausted", 2)


def test_multi_node_bad_input_is_not_recreated():
    r = _multi_node()
    r.step()
    r.set("train", StageObs("failed", reason="PodFailurePolicy", exit_code=2))
    d = r.step()
    assert (d.status.phase, d.status.reason, d.status.restarts) == ("Error", "BadInput", 0)


def test_single_node_failure_is_left_to_the_job_backoff_limit():
    r = Runner()
    r.step()
    r.set("train", StageObs("failed", reason="RetriesExhausted", exit_code=1))
    assert r.step().status.phase == "Error"


def test_progress_last_update_time_and_eta():
    r = Runner(spec(training={"epochs": 10}))
    r.step()
    r.cluster.progress = Progress(epoch=2, psnr_mean=19.0, sam_mean=8.0, epoch_seconds=60.0)
    d = r.step()
    p = d.status.progress
    assert p.last_update_time == r.now and p.eta == r.now + timedelta(seconds=8 * 60)
    first = r.now
    d = r.step()  # the same progress again: nothing moves, so no status write
    assert d.status.progress.last_update_time == first and d.status == r.view.status
    r.cluster.progress = Progress(epoch=3, psnr_mean=19.5, sam_mean=7.9, epoch_seconds=30.0)
    p = r.step().status.progress
    assert p.last_update_time == r.now and p.eta == r.now + timedelta(seconds=7 * 30)


def test_no_psnr_in_the_message_before_the_first_epoch():
    r = Runner()
    r.step()
    r.cluster.progress = Progress(epoch=0)
    assert "PSNR" not in r.step().status.message
