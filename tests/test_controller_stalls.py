"""Pods that never start: the pod's reason becomes the Stalled condition (phase kept honest), an Event, and
after jobs.startTimeoutSeconds the run gives up (Error/StartTimeout, the Job deleted); a Suspended condition
for spec.suspend and Kueue's queueing."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from test_controller_machine import T0, Runner, cond, spec

from godrun.controller.observe import job_stage_obs
from godrun.core.machine import CreateJob, DeleteJob, EmitEvent, StageObs, condition, current_job_names

JOB = {"metadata": {"name": "r-train-g1", "creationTimestamp": "2025-03-01T12:00:00Z"}, "spec": {}, "status": {}}


def _pod(waiting: str | None = None, unschedulable: bool = False, phase: str = "Pending") -> dict:
    status: dict = {"phase": phase, "conditions": []}
    if waiting:
        status["containerStatuses"] = [{"name": "trainer", "state": {"waiting": {"reason": waiting, "message": "m"}}}]
    if unschedulable:
        msg = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}
        )
    return {"metadata": {"name": "r-train-g1-abc"}, "status": status}


@pytest.mark.parametrize(
    ("pods", "reason"),
    [
        ([_pod("ImagePullBackOff")], "ImagePullBackOff"),
        ([_pod("ErrImagePull")], "ErrImagePull"),
        ([_pod("CreateContainerConfigError")], "CreateContainerConfigError"),
        ([_pod(unschedulable=True)], "Unschedulable"),
        ([], "FailedCreate"),  # no pod 5 minutes after the Job started: quota or admission refused them
        ([_pod("ContainerCreating")], ""),
        ([_pod(phase="Running")], ""),
    ],
)
def test_pods_that_cannot_start_are_named(pods, reason):
    obs = job_stage_obs(JOB, pods, T0 + timedelta(minutes=5))
    assert (obs.state, obs.stalled) == ("active", reason)
    assert job_stage_obs(JOB, [], T0 + timedelta(seconds=5)).stalled == ""  # the Job controller has not run yet
    assert job_stage_obs(JOB | {"spec": {"suspend": True}}, [], T0 + timedelta(hours=1)).stalled == ""  # queued


def test_a_stalled_training_is_pending_with_the_pods_reason_then_gives_up():
    r = Runner(spec(jobs={"startTimeoutSeconds": 600}))
    r.step()
    r.set("train", StageObs("active", stalled="ImagePullBackOff", stalled_message="pod p: back-off pulling x"))
    d = r.step()
    assert (d.status.phase, d.status.reason) == ("Pending", "ImagePullBackOff")
    stalled = condition(d.status, "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "ImagePullBackOff") and "back-off pulling" in stalled.message
    assert [a.reason for a in d.actions if isinstance(a, EmitEvent) and a.type == "Warning"] == ["PodsNotStarting"]
    assert d.requeue_after
    r.now += timedelta(seconds=590)
    assert r.step().status.phase == "Pending"  # 595 s: still waiting
    d = r.step()  # 600 s
    assert (d.status.phase, d.status.reason) == ("Error", "StartTimeout")
    assert "ImagePullBackOff" in d.status.message and "600 s" in d.status.message
    assert [a.name for a in d.actions if isinstance(a, DeleteJob)] == [current_job_names(r.view)["train"]]
    assert cond(d.status, "Stalled") == "False" and cond(d.status, "Failed") == "True"
    assert not [a for a in d.actions if isinstance(a, CreateJob)]


def test_a_stall_that_clears_goes_back_to_training():
    r = Runner()
    r.step()
    r.set("train", StageObs("active", stalled="Unschedulable"))
    r.step()
    r.set("train", StageObs("active"))
    d = r.step()
    assert (d.status.phase, d.status.reason) == ("Training", "TrainJobRunning")
    assert (condition(d.status, "Stalled").status, condition(d.status, "Stalled").reason) == ("False", "PodsStarted")


def test_suspended_condition_for_spec_suspend_and_kueue():
    r = Runner()
    r.step()
    r.set("train", StageObs("active", suspended=True))
    assert condition(r.step().status, "Suspended").reason == "AwaitingAdmission"
    r.set("train", StageObs("active"))
    assert cond(r.step().status, "Suspended") == "False"
    r.view = r.view.__class__(**{**r.view.__dict__, "spec": spec(suspend=True)})
    d = r.step()
    assert (d.status.reason, condition(d.status, "Suspended").reason) == ("Suspended", "SpecSuspend")
    assert cond(d.status, "Suspended") == "True" and condition(d.status, "Suspended").last_transition_time > T0


def test_an_evicted_pod_and_the_gap_before_its_replacement_are_not_a_refused_pod_creation():
    """Eviction marks the pod DisruptionTarget and deletes it; the Job controller creates the replacement only
    once it has gone. Neither the terminating pod nor the moment without any pod is 'no pod since start'."""
    evicted = _pod(phase="Running") | {"metadata": {"name": "p", "deletionTimestamp": "2025-03-01T12:10:00Z"}}
    evicted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True"}]
    obs = job_stage_obs(JOB, [evicted], T0 + timedelta(minutes=10))
    assert (obs.stalled, obs.disrupted) == ("", True)
    gone = T0 + timedelta(minutes=10)
    assert job_stage_obs(JOB, [], gone + timedelta(seconds=2), pods_gone_at=gone).stalled == ""
    late = job_stage_obs(JOB, [], gone + timedelta(minutes=2), pods_gone_at=gone)
    assert late.stalled == "FailedCreate" and "lost its last one" in late.stalled_message


def test_the_pod_cache_knows_when_a_jobs_last_pod_went():
    from godrun.controller.cache import Store

    store = Store(index=lambda o: o["metadata"].get("job"))
    a, b = ({"metadata": {"namespace": "ns", "name": n, "job": "j"}} for n in ("a", "b"))
    store.upsert(a)
    store.upsert(b)
    assert store.emptied_at("j") is None
    store.delete(("ns", "a"))
    assert store.emptied_at("j") is None  # b is still there
    store.delete(("ns", "b"))
    gone = store.emptied_at("j")
    assert gone is not None and abs(gone - time.time()) < 5
    store.upsert(a)  # the replacement
    assert store.emptied_at("j") is None
