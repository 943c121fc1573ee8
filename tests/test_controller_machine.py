"""Every transition of the GodRun state machine, driven through a fake executor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from godrun.core.machine import (
    CreateActB,
    CreateJob,
    DeleteJob,
    EmitEvent,
    GodRunView,
    Observed,
    Polling,
    StageObs,
    condition,
    current_job_names,
    decide,
    reconcile,
)
from godrun.core.names import job_name
from godrun.spec import GodRunSpec, GodRunStatus, Progress, Verdict

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def spec(**over) -> GodRunSpec:
    return GodRunSpec.model_validate({"image": "reg/godrun:1", **over})


def verdict(passed: bool, **over) -> Verdict:
    gates = [
        {"name": g, "passed": passed or g != "roi", "checks": []} for g in ("aggregate", "tail", "roi", "downstream")
    ]
    body = {
        "verdict": "pass" if passed else "fail",
        "psnrMean": 22.4,
        "psnrStd": 2.0,
        "samMean": 6.7,
        "gates": gates,
        "failedGates": [] if passed else ["roi"],
        "checkpointsEvaluated": 3,
        "lineage": {"bestCheckpoint": "checkpoints/god_run/ep_017.pt", "bestCheckpointSha256": "ab" * 32},
        "archive": None if passed else "artifacts/god_run_failed_20250301",
    }
    return Verdict.model_validate(body | over)


@dataclass
class FakeCluster:
    """A toy executor: Jobs are dict entries; the test moves them between states."""

    jobs: dict[str, StageObs] = field(default_factory=dict)
    created: list[CreateJob] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    children: dict[str, dict] = field(default_factory=dict)
    events: list[EmitEvent] = field(default_factory=list)
    statuses: list[GodRunStatus] = field(default_factory=list)
    progress: Progress | None = None
    verdict: Verdict | None = None
    generations: dict[str, int] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)  # Job name -> the API's refusal

    def observe(self, run: GodRunView) -> Observed:
        stale = tuple(n for n, g in self.generations.items() if g != run.generation and self.jobs[n].state == "active")
        return Observed(
            train=self.jobs.get(current_job_names(run)["train"], StageObs()),
            evaluate=self.jobs.get(current_job_names(run)["evaluate"], StageObs()),
            progress=self.progress,
            verdict=self.verdict,
            act_b_exists=f"{run.name}-actb" in self.children,
            stale_jobs=stale,
        )

    def apply(self, run: GodRunView, actions: Sequence) -> bool:
        for a in actions:
            if isinstance(a, CreateJob) and a.name in self.refuse:
                self.jobs[a.name] = StageObs("failed", reason="JobRejected", message=self.refuse[a.name])
                return False
            if isinstance(a, CreateJob):
                assert a.name not in self.jobs, f"twin Job {a.name}"
                self.jobs[a.name] = StageObs("active")
                self.generations[a.name] = a.generation
                self.created.append(a)
            elif isinstance(a, DeleteJob):
                self.jobs.pop(a.name)
                self.generations.pop(a.name)
                self.deleted.append(a.name)
            elif isinstance(a, CreateActB):
                self.children[a.name] = a.body
            elif isinstance(a, EmitEvent):
                self.events.append(a)
        return True

    def write_status(self, run: GodRunView, status: GodRunStatus) -> None:
        self.statuses.append(status)


class Runner:
    """Holds the GodRun as the API server would (spec, generation, last written status)."""

    def __init__(self, s: GodRunSpec | None = None, name: str = "god-run") -> None:
        self.cluster = FakeCluster()
        self.view = GodRunView(name, "lab", 1, s or spec(), uid="uid-1")
        self.now = T0

    def step(self, status: GodRunStatus | None = None, **kw):
        self.now += timedelta(seconds=5)
        view = self.view if status is None else replace(self.view, status=status)
        d = reconcile(self.cluster, view, self.now, **kw)
        self.view = replace(self.view, status=d.status)
        return d

    def set(self, stage: str, obs: StageObs) -> None:
        self.cluster.jobs[current_job_names(self.view)[stage]] = obs

    def change_spec(self, s: GodRunSpec) -> None:
        self.view = replace(self.view, spec=s, generation=self.view.generation + 1)


def cond(status: GodRunStatus, type_: str) -> str:
    c = condition(status, type_)
    return c.status if c else "missing"


def test_pending_to_training_creates_the_train_job_once():
    r = Runner()
    d = r.step()
    assert d.status.phase == "Training" and d.status.observed_generation == 1
    (create,) = [a for a in d.actions if isinstance(a, CreateJob)]
    assert create.stage == "train" and create.name == job_name("god-run", "train", 1)
    assert create.argv[:3] == ("python", "-m", "godrun.trainer")
    assert "--init_checkpoint" in create.argv
    assert {c.type for c in d.status.conditions} == {
        "DataVerified",
        "Trained",
        "Evaluated",
        "GatesPassed",
        "Succeeded",
        "Failed",
    }
    assert any(isinstance(a, EmitEvent) and a.reason == "TrainingStarted" for a in d.actions)
    d2 = r.step()
    assert not [a for a in d2.actions if isinstance(a, CreateJob)], "second reconcile must not create again"
    assert not [a for a in d2.actions if isinstance(a, EmitEvent)], "no transition, no event"
    assert d2.status.reason == "TrainJobRunning"


def test_progress_is_copied_into_status_and_data_verified_after_an_epoch():
    r = Runner()
    r.step()
    r.cluster.progress = Progress(epoch=3, best_epoch=2, psnr_mean=19.5, sam_mean=8.1)
    d = r.step()
    assert d.status.progress.epoch == 3 and d.status.progress.best_epoch == 2
    assert d.status.progress.psnr_mean == 19.5 and d.status.progress.epochs == 400
    assert "19.50 dB" in d.status.message
    assert cond(d.status, "DataVerified") == "True"
    assert d.requeue_after and d.requeue_after > 0
    r.cluster.progress = None  # endpoint unreachable for a moment: keep what we had
    assert r.step().status.progress.epoch == 3


@pytest.mark.parametrize(
    ("verify", "status", "reason"), [(True, "True", "TrainerVerifiedData"), (False, "False", "VerificationDisabled")]
)
def test_data_verified_says_what_the_trainer_checked(verify, status, reason):
    r = Runner(spec(data={"verify": verify}))
    d = r.step()
    argv = next(a for a in d.actions if isinstance(a, CreateJob)).argv
    assert ("--verify-data" if verify else "--no-verify-data") in argv
    assert "--psnr-mean-min" in argv  # the trainer ranks by the GodRun's gates
    r.set("train", StageObs("succeeded", exit_code=0))
    d = r.step()
    verified = condition(d.status, "DataVerified")
    assert (verified.status, verified.reason) == (status, reason)
    assert ("re-hashed" in verified.message) is verify and "group_id" in verified.message
    r.cluster.verdict = verdict(True)
    r.set("evaluate", StageObs("succeeded", exit_code=0))
    assert cond(r.step().status, "DataVerified") == status  # accepting the panel does not vouch for training data


@pytest.mark.parametrize("phase_steps", [0, 1, 2, 3])
def test_restart_at_each_phase_finds_its_jobs_no_twins(phase_steps):
    """A restarted controller has only the API objects; even a stale status must not cause twins."""
    r = Runner()
    r.step()  # Training
    stale_status = GodRunStatus()  # as if the status write after creating the Job had been lost
    if phase_steps >= 1:
        r.set("train", StageObs("succeeded"))
        r.step()  # Evaluating
    if phase_steps >= 2:
        r.set("evaluate", StageObs("succeeded"))
        r.cluster.verdict = verdict(True)
        r.step()  # Shipped
    if phase_steps == 3:
        stale_status = r.view.status  # restart with the final status: nothing to do
    before = len(r.cluster.created)
    d = r.step(status=stale_status)  # FakeCluster.apply asserts there is no twin
    assert len(r.cluster.created) == before
    assert d.status.phase == ["Training", "Evaluating", "Shipped", "Shipped"][phase_steps]


def test_training_exit_2_is_error_without_retry():
    r = Runner()
    r.step()
    r.set("train", StageObs("failed", reason="JobFailed", exit_code=2, message="manifest_train.csv: row 7"))
    d = r.step()
    assert d.status.phase == "Error" and d.status.reason == "BadInput"
    assert "row 7" in d.status.message and "exit code 2" in d.status.message
    assert cond(d.status, "Trained") == "False" and cond(d.status, "DataVerified") == "False"
    assert not [a for a in d.actions if isinstance(a, CreateJob)]
    assert any(isinstance(a, EmitEvent) and a.type == "Warning" for a in d.actions)
    assert d.status.completion_time is not None
    d2 = r.step()  # Error is final for this generation: no new Jobs, no new events
    assert not d2.actions and d2.status == d.status


@pytest.mark.parametrize(
    ("reason", "exit_code", "expected"),
    [
        ("RetriesExhausted", 1, "RetriesExhausted"),
        ("DeadlineExceeded", None, "DeadlineExceeded"),
        ("", 137, "JobFailed"),
        ("JobFailed", -9, "JobFailed"),
        ("BackoffLimitExceeded", 1, "JobFailed"),  # not the machine's term: the executor must translate
    ],
)
def test_other_training_failures(reason, exit_code, expected):
    r = Runner()
    r.step()
    r.set("train", StageObs("failed", reason=reason, exit_code=exit_code))
    d = r.step()
    assert (d.status.phase, d.status.reason) == ("Error", expected)
    # not refuted, only never reached (a finished run leaves no condition Unknown)
    dv = next(c for c in d.status.conditions if c.type == "DataVerified")
    assert (dv.status, dv.reason) == ("False", "NotReached")


def test_pod_disruption_stays_training():
    r = Runner()
    r.step()
    r.set("train", StageObs("active", disrupted=True))
    d = r.step()
    assert d.status.phase == "Training" and d.status.reason == "PodDisrupted"
    assert any(isinstance(a, EmitEvent) and a.reason == "PodDisrupted" for a in d.actions)
    assert not [a for a in d.actions if isinstance(a, CreateJob)]


def test_suspended_job_is_pending():
    r = Runner()
    r.step()
    r.set("train", StageObs("active", suspended=True))
    assert r.step().status.phase == "Pending"


def test_train_succeeded_creates_eval_job_with_gates_and_fallback_flags():
    s = spec(panel={"expectedHash": "0" * 64}, gates={"psnrMeanMin": 19.5})
    r = Runner(s)
    r.step()
    r.set("train", StageObs("succeeded"))
    d = r.step()
    assert d.status.phase == "Evaluating" and cond(d.status, "Trained") == "True"
    (create,) = [a for a in d.actions if isinstance(a, CreateJob)]
    assert create.stage == "evaluate" and create.name == job_name("god-run", "evaluate", 1)
    argv = list(create.argv)
    assert argv[argv.index("--expected-hash") + 1] == "0" * 64
    assert argv[argv.index("--psnr-mean-min") + 1] == "19.5"
    assert "--archive-on-fail" in argv and argv[argv.index("--run-name") + 1] == "god-run"
    assert any(isinstance(a, EmitEvent) and a.reason == "EvaluationStarted" for a in d.actions)
    # the training Job disappears (TTL): the recorded Trained condition keeps us from retraining
    del r.cluster.jobs[job_name("god-run", "train", 1)]
    d = r.step()
    assert d.status.phase == "Evaluating" and not [a for a in d.actions if isinstance(a, CreateJob)]


def _to_verdict(r: Runner, v: Verdict | None, **obs):
    r.step()
    r.set("train", StageObs("succeeded"))
    r.step()
    r.set("evaluate", StageObs("succeeded"))
    r.cluster.verdict = v
    return r.step()


def test_verdict_pass_ships():
    r = Runner()
    d = _to_verdict(r, verdict(True))
    assert d.status.phase == "Shipped" and d.status.reason == "GatesPassed"
    assert cond(d.status, "GatesPassed") == "True" and cond(d.status, "Evaluated") == "True"
    assert d.status.panel.psnr_mean == 22.4
    assert d.status.lineage.best_checkpoint == "checkpoints/god_run/ep_017.pt"
    assert any(isinstance(a, EmitEvent) and a.reason == "Shipped" for a in d.actions)
    assert not [a for a in d.actions if isinstance(a, CreateActB)]


def test_verdict_fail_is_failed_actb_with_archive_but_no_child_by_default():
    r = Runner()
    d = _to_verdict(r, verdict(False))
    assert d.status.phase == "Failed-ActB" and cond(d.status, "GatesPassed") == "False"
    assert "roi" in d.status.message
    assert d.status.archive == "artifacts/god_run_failed_20250301"
    reasons = [a.reason for a in d.actions if isinstance(a, EmitEvent)]
    assert "GatesFailed" in reasons and "Archived" in reasons
    assert not [a for a in d.actions if isinstance(a, CreateActB)]


def test_verdict_fail_launches_act_b_child_once():
    r = Runner(spec(fallback={"launchActB": True, "actB": {"epochs": 50, "dipWeight": 3.0}}))
    d = _to_verdict(r, verdict(False))
    (child,) = [a for a in d.actions if isinstance(a, CreateActB)]
    assert child.name == "god-run-actb" and d.status.act_b == "god-run-actb"
    body = child.body
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("GodRun", "god-run", "uid-1", True)
    child_spec = GodRunSpec.model_validate(body["spec"])
    t = child_spec.training
    assert t.init_checkpoint == "checkpoints/god_run/ep_017.pt"
    assert t.calibrator_head and t.epochs == 50 and t.dip_weight == 3.0 and t.derivative_weight == 0.15
    assert t.checkpoint_dir != r.view.spec.training.checkpoint_dir, "Act B must not overwrite the parent's checkpoints"
    assert child_spec.panel.output_dir != r.view.spec.panel.output_dir
    assert child_spec.fallback.launch_act_b is False
    assert body["metadata"]["annotations"]["godrun.io/init-checkpoint-sha256"] == "ab" * 32
    again = r.step()
    assert not [a for a in again.actions if isinstance(a, CreateActB)]


def test_eval_exit_2_hash_mismatch_is_error():
    r = Runner()
    r.step()
    r.set("train", StageObs("succeeded"))
    r.step()
    r.set("evaluate", StageObs("failed", reason="JobFailed", exit_code=2, message="panel sha256 mismatch"))
    d = r.step()
    assert (d.status.phase, d.status.reason) == ("Error", "BadInput")
    assert cond(d.status, "Evaluated") == "False" and cond(d.status, "DataVerified") == "False"


def test_succeeded_without_verdict_waits_then_unreadable_is_error():
    r = Runner()
    d = _to_verdict(r, None)
    assert (d.status.phase, d.status.reason) == ("Evaluating", "AwaitingVerdict") and d.requeue_after
    d = decide(r.view, replace(r.cluster.observe(r.view), verdict_error="not JSON"), r.now)
    assert (d.status.phase, d.status.reason) == ("Error", "VerdictUnreadable")


@pytest.mark.parametrize("passed", [True, False])
@pytest.mark.parametrize(
    "edit",
    [{"image": "reg/godrun:2"}, {"jobs": {"ttlSecondsAfterFinished": 60}}, {"suspend": True}],
    ids=["image", "ttl", "suspend"],
)
def test_a_verdict_is_final_later_edits_start_nothing(passed, edit):
    """A finished run stays finished: no new Job, the verdict, conditions and counters untouched."""
    r = Runner(spec(fallback={"launchActB": True}))
    _to_verdict(r, verdict(passed))
    done, created = r.view.status, len(r.cluster.created)
    r.change_spec(spec(fallback={"launchActB": True}, **edit))
    d = r.step()
    assert len(r.cluster.created) == created and not [a for a in d.actions if isinstance(a, CreateJob | DeleteJob)]
    assert (d.status.phase, d.status.reason, d.status.panel) == (done.phase, done.reason, done.panel)
    assert d.status.observed_generation == 2 and {c.observed_generation for c in d.status.conditions} == {2}
    assert [(c.type, c.status, c.reason, c.last_transition_time) for c in d.status.conditions] == [
        (c.type, c.status, c.reason, c.last_transition_time) for c in done.conditions
    ]
    assert [a.reason for a in d.actions if isinstance(a, EmitEvent)] == ["SpecChangeIgnored"]
    assert len(r.cluster.children) == (0 if passed else 1)  # Act B once, not again
    assert r.step().actions == ()


def test_an_error_is_final_too_but_a_corrected_invalid_spec_starts():
    r = Runner()
    r.step()
    r.set("train", StageObs("failed", exit_code=2))
    assert r.step().status.reason == "BadInput"
    r.change_spec(spec(image="reg/godrun:2"))
    d = r.step()
    assert (d.status.phase, d.status.reason, len(r.cluster.created)) == ("Error", "BadInput", 1)


def test_spec_change_while_training_deletes_old_generation_job():
    r = Runner()
    r.step()
    r.change_spec(spec(training={"epochs": 10}))
    d = r.step()
    assert r.cluster.deleted == [job_name("god-run", "train", 1)]
    assert [a.name for a in d.actions if isinstance(a, CreateJob)] == [job_name("god-run", "train", 2)]
    assert d.status.progress.epochs == 10


def test_condition_transition_time_moves_only_on_change():
    r = Runner()
    r.step()
    t1 = condition(r.view.status, "Trained").last_transition_time
    r.step()
    assert condition(r.view.status, "Trained").last_transition_time == t1
    r.set("train", StageObs("succeeded"))
    r.step()
    assert condition(r.view.status, "Trained").last_transition_time > t1


def test_decide_is_pure_and_deterministic():
    r = Runner()
    obs = Observed(train=StageObs("active"), progress=Progress(epoch=1))
    before = r.view.status.model_copy(deep=True)
    a, b = decide(r.view, obs, T0), decide(r.view, obs, T0)
    assert a == b and r.view.status == before


def test_a_created_job_seen_running_needs_no_second_status_write():
    """The status written with CreateJob is the one the running Job gives: one status write per stage start."""
    r = Runner()
    r.step()  # creates the training Job
    writes = len(r.cluster.statuses)
    r.step()  # the Job is now observed active
    assert len(r.cluster.statuses) == writes
    r.set("train", StageObs("succeeded"))
    r.step()  # Trained, evaluation Job created
    writes = len(r.cluster.statuses)
    r.step()  # evaluation Job observed active
    assert len(r.cluster.statuses) == writes


def test_invalid_spec_is_error_without_any_job_and_one_event():
    r = Runner()
    error = "spec.training.lr_min: must not exceed lr"
    d = r.step(spec_error=error)
    assert (d.status.phase, d.status.reason, d.status.message) == ("Error", "InvalidSpec", error)
    assert d.status.observed_generation == 1 and d.status.completion_time is not None
    assert [a for a in d.actions] == [EmitEvent("Warning", "InvalidSpec", error)]
    assert r.cluster.created == [] and len(r.cluster.statuses) == 1
    d2 = r.step(spec_error=error)
    assert d2.actions == () and d2.status == d.status and len(r.cluster.statuses) == 1, "nothing new to say"
    r.change_spec(spec())  # fixed: the new generation starts training
    assert r.step().status.phase == "Training" and len(r.cluster.created) == 1


def test_invalid_spec_after_training_started_stops_nothing_but_reports():
    r = Runner()
    r.step()
    r.change_spec(spec())
    d = r.step(spec_error="spec.image: required")
    assert (d.status.phase, d.status.reason) == ("Error", "InvalidSpec") and d.status.observed_generation == 2
    assert not [a for a in d.actions if isinstance(a, CreateJob | DeleteJob)]


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_job_the_api_refuses_is_error_job_rejected_in_the_same_reconcile(stage):
    r = Runner()
    refusal = "spec.template.spec.containers[0].resources: Invalid value"
    r.cluster.refuse[job_name("god-run", stage, 1)] = refusal
    if stage == "evaluate":
        r.step()
        r.set("train", StageObs("succeeded", exit_code=0))
    d = r.step()
    assert (d.status.phase, d.status.reason) == ("Error", "JobRejected")
    assert refusal in d.status.message and "rejected" in d.status.message
    cond_type = "Trained" if stage == "train" else "Evaluated"
    assert cond(d.status, cond_type) == "False"
    assert condition(d.status, "DataVerified").reason != "BadInput"  # never reached or True: not refuted
    assert r.cluster.statuses[-1] == d.status and not any(s.phase == "Evaluating" for s in r.cluster.statuses)
    assert [e.reason for e in r.cluster.events if e.type == "Warning"] == ["JobRejected"]
    d2 = r.step()
    assert d2.actions == () and d2.status == d.status


def test_a_refused_job_of_a_new_generation_announces_the_generation_once():
    r = Runner()
    r.step()
    r.change_spec(spec(training={"epochs": 5}))
    r.cluster.refuse[job_name("god-run", "train", 2)] = "invalid"
    d = r.step()
    assert (d.status.phase, d.status.reason, d.status.observed_generation) == ("Error", "JobRejected", 2)
    assert [e.reason for e in r.cluster.events].count("NewGeneration") == 1
    assert r.cluster.deleted == [job_name("god-run", "train", 1)]


def test_poll_intervals_come_from_one_config():
    r = Runner()
    assert r.step(polling=Polling(progress_seconds=7, verdict_seconds=3)).requeue_after == 7
    assert r.step().requeue_after == Polling().progress_seconds
    r.set("train", StageObs("succeeded", exit_code=0))
    r.step()
    r.set("evaluate", StageObs("succeeded", exit_code=0))
    d = r.step(polling=Polling(progress_seconds=7, verdict_seconds=3))
    assert (d.status.reason, d.requeue_after) == ("AwaitingVerdict", 3)
