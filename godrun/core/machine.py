"""The GodRun state machine: a pure function, shared by the Kubernetes and the local executor.

    decide(run, observed, now, polling) -> Decision(status, actions, requeue_after)

Phases: Pending/Training (train Job) -> Evaluating (evaluation Job) -> Shipped (all gates pass) or
Failed-ActB (a gate failed; the fallback archives and may start the Act B child run); Error when a stage
fails, the spec is invalid or the API refuses a Job. Shipped, Failed-ActB and Error are final: a later edit
of the spec (a new generation) starts nothing and changes nothing in the status but observedGeneration; a
new run is a new GodRun. The one exception is Error/InvalidSpec, where nothing ran: a corrected spec starts.
docs/design.md draws the whole picture.

`run` is what is declared (spec, generation) plus the status last written; `observed` is what the executor
sees right now for THIS generation's stages. Like a controller-runtime Reconcile it is level-triggered and
idempotent: calling it again with the same inputs gives the same status and only actions that are still
needed (a Job that exists is observed, so it is never created twice). The only memory it trusts in the
status is what cannot be observed any more: a stage recorded as finished (its Job may be TTL-deleted) and
a final phase of the current generation.

An executor implements `Executor` (observe / apply / write_status); `reconcile()` glues them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from godrun.contract import files
from godrun.contract.words import (
    ANNOTATION_INIT_CHECKPOINT_SHA256,
    ANNOTATION_PARENT_GENERATION,
    ConditionStatus,
    ConditionType,
    DeleteReason,
    EventReason,
    EventType,
    FailureReason,
    Phase,
    PodFailureAction,
    Reason,
    Stage,
    labels,
)
from godrun.core.commands import evaluator_argv, trainer_argv
from godrun.core.names import act_b_name, job_name, run_label
from godrun.errors import EXIT_BAD_INPUT
from godrun.spec import (
    API_GROUP,
    API_VERSION,
    CONDITION_TYPES,
    KIND,
    TERMINAL_CONDITIONS,
    TERMINAL_PHASES,
    Condition,
    GodRunSpec,
    GodRunStatus,
    Progress,
    Recipe,
    Verdict,
    format_validation_error,
)

StageState = Literal["absent", "active", "succeeded", "failed"]
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


@dataclass(frozen=True)
class Polling:
    """How often a run nobody will notify about is looked at again (seconds); one config for both executors."""

    progress_seconds: float = 30.0  # Pending/Training: the trainer's progress is polled
    verdict_seconds: float = 10.0  # a finished evaluation whose verdict is not readable yet


DEFAULT_POLLING = Polling()


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class GodRunView:
    """The declared run: identity, spec and the status as last written."""

    name: str
    namespace: str
    generation: int
    spec: GodRunSpec
    status: GodRunStatus = field(default_factory=GodRunStatus)
    uid: str | None = None
    resource_version: str | None = None  # for optimistic-concurrency status writes (Kubernetes)


@dataclass(frozen=True)
class StageObs:
    """One stage's Job (or local process) as observed now."""

    state: StageState = "absent"
    reason: str = ""  # a failed stage's FailureReason ("" reads as JobFailed)
    exit_code: int | None = None  # exit code of the last terminated container, when known
    message: str = ""  # termination message / Job condition message
    disrupted: bool = False  # a pod was disrupted (DisruptionTarget) while the Job goes on
    suspended: bool = False  # Job suspended (e.g. waiting for Kueue admission)
    failures: int | None = None  # failed attempts counted against backoffLimit (Job status.failed), when known
    # An active stage whose pods cannot start (ImagePullBackOff, Unschedulable, FailedCreate, ...): the
    # reason (CamelCase) and the pod's or Job's message; "" while they start or run.
    stalled: str = ""
    stalled_message: str = ""


@dataclass(frozen=True)
class Observed:
    """What the executor sees for the current generation of one run."""

    train: StageObs = field(default_factory=StageObs)
    evaluate: StageObs = field(default_factory=StageObs)
    progress: Progress | None = None  # from the trainer's metrics endpoint (None: not readable now)
    verdict: Verdict | None = None  # from the evaluation pod's termination message
    verdict_error: str | None = None  # the termination message exists but is not a Verdict
    act_b_exists: bool = False  # this run's Act B child exists (owned by this run)
    # A GodRun of the child's name that this run did not create (why, e.g. "no owner reference"); "" if none.
    act_b_foreign: str = ""
    stale_jobs: tuple[str, ...] = ()  # still-running Jobs of other generations of this run
    spec_error: str | None = None  # the spec passed the CRD schema but not GodRunSpec: nothing may run


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class CreateJob:
    """Start `stage` as `name` running `argv` (the Kubernetes executor may wrap it in torchrun)."""

    stage: Stage
    name: str
    generation: int
    argv: tuple[str, ...]


@dataclass(frozen=True)
class DeleteJob:
    """Stop and delete a Job of a superseded generation."""

    name: str
    reason: str = DeleteReason.SUPERSEDED_GENERATION


@dataclass(frozen=True)
class CreateActB:
    """Create the Act B child GodRun (`body` is a complete GodRun manifest)."""

    name: str
    body: dict[str, Any]


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the GodRun (the local runner logs it)."""

    type: EventType
    reason: str
    message: str


Action = CreateJob | DeleteJob | CreateActB | EmitEvent


@dataclass(frozen=True)
class Decision:
    status: GodRunStatus
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None  # seconds until the run should be looked at again (polling)


class Executor(Protocol):
    """What decide() needs from a place that runs stages (Kubernetes Jobs or local processes)."""

    def observe(self, run: GodRunView) -> Observed: ...

    def apply(self, run: GodRunView, actions: Sequence[Action]) -> bool:
        """Carry out `actions` in order; False when one was refused (recorded for the next observe())."""
        ...

    def write_status(self, run: GodRunView, status: GodRunStatus) -> None: ...


def reconcile(
    executor: Executor,
    run: GodRunView,
    now: datetime,
    polling: Polling = DEFAULT_POLLING,
    *,
    spec_error: str | None = None,
) -> Decision:
    """observe -> decide -> apply actions -> write the status when it changed.

    `spec_error`: the run's spec could not be read (`run.spec` holds defaults); nothing is observed or started.
    When the executor refuses a Job (the API server finds it invalid), the run is observed and decided again at
    once so that the status written says why; what was applied before the refused Job is not applied twice.
    """
    observed = Observed(spec_error=spec_error) if spec_error is not None else executor.observe(run)
    decision = decide(run, observed, now, polling)
    if not executor.apply(run, decision.actions) and spec_error is None:
        creates = [i for i, a in enumerate(decision.actions) if isinstance(a, CreateJob)]
        applied = decision.actions[: creates[0]] if creates else decision.actions
        decision = decide(run, executor.observe(run), now, polling)
        executor.apply(run, [a for a in decision.actions if a not in applied])
    if decision.status != run.status:
        executor.write_status(run, decision.status)
    return decision


# --------------------------------------------------------------------------- the machine


def decide(run: GodRunView, observed: Observed, now: datetime, polling: Polling = DEFAULT_POLLING) -> Decision:
    """The new status and the actions that bring the world closer to `run.spec` (pure; see module doc)."""
    new_generation = run.status.observed_generation != run.generation
    if is_final(run.status):
        return _final(run, observed)
    st = _fresh_status(run, now) if new_generation else run.status.model_copy(deep=True)
    spec_error = observed.spec_error or derived_spec_error(run.spec)
    if spec_error is not None:
        return _invalid_spec(run, spec_error, st, new_generation, now)
    actions: list[Action] = [DeleteJob(name) for name in observed.stale_jobs]
    if new_generation and run.status.observed_generation > 0:
        msg = f"spec changed (generation {run.generation}): starting this generation's Jobs"
        actions.append(EmitEvent(EventType.NORMAL, EventReason.NEW_GENERATION, msg))

    if st.phase not in TERMINAL_PHASES and run.spec.suspend:
        _suspend(run, observed, st, actions, now)
    elif st.phase not in TERMINAL_PHASES and _train(run, observed, st, actions, now):
        _evaluate(run, observed, st, actions, now)
    if st.phase == Phase.FAILED_ACT_B:
        _ensure_act_b(run, observed, st, actions)
    if st.phase in TERMINAL_PHASES:
        settle_conditions(st, now)
        if st.completion_time is None:
            st.completion_time = now
    actions += _transition_events(run.status if not new_generation else GodRunStatus(), st)
    return Decision(st, tuple(actions), _requeue_after(st, polling))


def derived_spec_error(spec: GodRunSpec) -> str | None:
    """Why the Act B child derived from `spec` would be invalid (paths too long once suffixed), or None.

    Checked before anything starts, so a run never trains for hours to fail (or stick) at the fallback."""
    if not spec.fallback.launch_act_b:
        return None
    try:
        act_b_spec(spec, files.best_checkpoint(spec.training.checkpoint_dir, spec.training.model))
    except ValidationError as exc:
        return f"the Act B child this spec derives is invalid: {format_validation_error(exc)}"
    return None


def is_final(st: GodRunStatus) -> bool:
    """A run that ended is never started again, whatever its spec says later (InvalidSpec: nothing ran)."""
    return st.phase in TERMINAL_PHASES and st.reason != Reason.INVALID_SPEC and st.observed_generation > 0


def _final(run: GodRunView, observed: Observed) -> Decision:
    """A finished run: its verdict, conditions and Jobs stay (nothing is created or deleted for an edit); the
    edit is acknowledged (observedGeneration and one Event) and Act B is still ensured."""
    st = run.status.model_copy(deep=True)
    actions: list[Action] = []
    if st.observed_generation != run.generation:
        # The conditions still hold for the new generation (kubectl wait compares their observedGeneration).
        st.observed_generation = run.generation
        for cond in st.conditions:
            cond.observed_generation = run.generation
        msg = (
            f"the run ended ({st.phase}); spec changes (generation {run.generation}) start nothing: "
            "create a new GodRun for a new run"
        )
        actions.append(EmitEvent(EventType.NORMAL, EventReason.SPEC_CHANGE_IGNORED, msg))
    if st.phase == Phase.FAILED_ACT_B:
        _ensure_act_b(run, observed, st, actions)
    return Decision(st, tuple(actions))


def _invalid_spec(run: GodRunView, error: str, st: GodRunStatus, new_generation: bool, now: datetime) -> Decision:
    """Error/InvalidSpec for this generation: nothing is started, one Warning Event on the transition."""
    before = GodRunStatus() if new_generation else run.status
    st.phase, st.reason, st.message = Phase.ERROR, Reason.INVALID_SPEC, error[:1024]
    st.completion_time = st.completion_time if before.reason == Reason.INVALID_SPEC else now
    settle_conditions(st, now)
    return Decision(st, tuple(_transition_events(before, st)))


def _fresh_status(run: GodRunView, now: datetime) -> GodRunStatus:
    st = GodRunStatus(observed_generation=run.generation, start_time=now)
    st.progress.epochs = run.spec.training.epochs
    st.conditions = [
        Condition(
            type=t,
            status=ConditionStatus.UNKNOWN,
            reason=Reason.PENDING,
            last_transition_time=now,
            observed_generation=run.generation,
        )
        for t in CONDITION_TYPES
    ]
    return st


def current_job_names(run: GodRunView) -> dict[Stage, str]:
    """The Jobs this generation's stages run as (a recreated multi-node training Job has a restart suffix)."""
    same = run.status.observed_generation == run.generation
    return _stage_names(run, run.status.restarts if same else 0)


def _stage_names(run: GodRunView, restarts: int) -> dict[Stage, str]:
    return {
        Stage.TRAIN: job_name(run.name, Stage.TRAIN, run.generation, restarts),
        Stage.EVALUATE: job_name(run.name, Stage.EVALUATE, run.generation),
    }


def set_condition(
    st: GodRunStatus, type_: ConditionType, status: ConditionStatus, reason: str, message: str, now: datetime
) -> None:
    """Upsert a condition; lastTransitionTime moves only when the status value changes."""
    _upsert_condition(st, type_, status, reason, message, now)


def _upsert_condition(
    st: GodRunStatus, type_: str, status: ConditionStatus, reason: str, message: str, now: datetime
) -> None:
    """set_condition for any type, also one the machine does not own (settle_conditions closes them all)."""
    old = next((c for c in st.conditions if c.type == type_), None)
    cond = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=old.last_transition_time if old is not None and old.status == status else now,
        observed_generation=st.observed_generation,
    )
    if old is None:
        st.conditions.append(cond)
    else:
        st.conditions[st.conditions.index(old)] = cond


def settle_conditions(st: GodRunStatus, now: datetime) -> None:
    """A finished run: Succeeded/Failed say how (for `kubectl wait`), and no condition stays Unknown."""
    succeeded = st.phase == Phase.SHIPPED
    outcome = st.reason or st.phase.replace("-", "")
    set_condition(st, ConditionType.SUCCEEDED, TRUE if succeeded else FALSE, outcome, st.message, now)
    set_condition(st, ConditionType.FAILED, FALSE if succeeded else TRUE, outcome, st.message, now)
    for type_ in (ConditionType.STALLED, ConditionType.SUSPENDED):
        _clear(st, type_, outcome, f"the run ended ({st.phase})", now)
    for cond in list(st.conditions):
        if cond.status == ConditionStatus.UNKNOWN and cond.type not in TERMINAL_CONDITIONS:
            why = f"the run ended ({st.phase}) before this step"
            _upsert_condition(st, cond.type, FALSE, Reason.NOT_REACHED, why, now)


def condition(st: GodRunStatus, type_: ConditionType) -> Condition | None:
    return next((c for c in st.conditions if c.type == type_), None)


def _is_true(st: GodRunStatus, type_: ConditionType) -> bool:
    cond = condition(st, type_)
    return cond is not None and cond.status == TRUE


# --------------------------------------------------------------------------- failed attempts

# Exit codes that fail the Job at once, never retried: bad input (a retry would read the same input).
FAIL_JOB_EXIT_CODES: tuple[int, ...] = (EXIT_BAD_INPUT,)


def attempt_failure_action(exit_code: int, *, disrupted: bool = False) -> PodFailureAction:
    """What one failed attempt of a stage means: the one mapping both executors follow.

    Kubernetes podFailurePolicy semantics, rules in this order: an exit code in FAIL_JOB_EXIT_CODES fails
    the Job (FailJob); a disrupted attempt (the pod was evicted or preempted; locally: the runner stopped
    it) is not counted (Ignore: the trainer resumes from its last checkpoint); anything else, including a
    kill by a signal (the OOM killer's SIGKILL is exit code 137), counts against backoffLimit (Count).
    godrun.controller.jobs.pod_failure_policy writes the same rules into every Job.
    """
    if exit_code in FAIL_JOB_EXIT_CODES:
        return PodFailureAction.FAIL_JOB
    if disrupted:
        return PodFailureAction.IGNORE
    return PodFailureAction.COUNT


def failure_reason(obs: StageObs) -> FailureReason:
    """The FailureReason of a failed stage (exit 2 is bad input, whatever the executor saw)."""
    if obs.exit_code == EXIT_BAD_INPUT:
        return FailureReason.BAD_INPUT
    return FailureReason(obs.reason) if obs.reason in tuple(FailureReason) else FailureReason.JOB_FAILED


def _fail(st: GodRunStatus, stage: Stage, job: str, obs: StageObs, backoff_limit: int, now: datetime) -> None:
    reason = failure_reason(obs)
    code = f" (exit code {obs.exit_code})" if obs.exit_code is not None else ""
    tries = ""
    if obs.failures and reason == FailureReason.RETRIES_EXHAUSTED:
        tries = f" after {obs.failures} failed attempt{'s' if obs.failures != 1 else ''} (backoffLimit {backoff_limit})"
    detail = f": {obs.message.strip()[:512]}" if obs.message.strip() else ""
    st.phase, st.reason = Phase.ERROR, reason
    what = "was rejected" if reason == FailureReason.JOB_REJECTED else f"failed{code}, {reason}{tries}"
    st.message = f"{stage.noun} Job {job} {what}{detail}"
    set_condition(st, stage.condition, FALSE, reason, st.message, now)
    if reason == FailureReason.BAD_INPUT:
        set_condition(st, ConditionType.DATA_VERIFIED, FALSE, FailureReason.BAD_INPUT, st.message, now)


def _suspend(run: GodRunView, obs: Observed, st: GodRunStatus, actions: list[Action], now: datetime) -> None:
    """spec.suspend: delete the running stage's Job (not Job.spec.suspend, which Kueue owns for queued Jobs);
    clearing it creates the Job again and the trainer resumes from the last checkpoint on the run volume."""
    names = _stage_names(run, st.restarts)
    stages: tuple[tuple[Stage, StageObs], ...] = ((Stage.TRAIN, obs.train), (Stage.EVALUATE, obs.evaluate))
    for stage, stage_obs in stages:
        if stage_obs.state == "active":
            actions.append(DeleteJob(names[stage], reason=DeleteReason.SUSPENDED))
    st.phase, st.reason = Phase.PENDING, Reason.SUSPENDED
    st.message = "spec.suspend is true: no stage runs until it is set back to false"
    set_condition(st, ConditionType.SUSPENDED, TRUE, Reason.SPEC_SUSPEND, st.message, now)


def _train(run: GodRunView, obs: Observed, st: GodRunStatus, actions: list[Action], now: datetime) -> bool:
    """Drive the training stage; True once it has finished successfully."""
    name = _stage_names(run, st.restarts)[Stage.TRAIN]
    st.jobs.train = name
    if obs.progress is not None:
        st.progress = _next_progress(st.progress, obs.progress, run.spec.training, now)
    if _is_true(st, ConditionType.TRAINED):
        return True  # recorded earlier; the Job may have been deleted by its TTL since
    t = obs.train
    if t.state == "succeeded":
        set_condition(st, ConditionType.TRAINED, TRUE, Reason.TRAINING_SUCCEEDED, f"training Job {name} succeeded", now)
        _data_checked_by_trainer(run, st, now)
        return True
    if t.state == "failed" and _may_recreate(run.spec, st, t):
        st.restarts += 1
        new = job_name(run.name, Stage.TRAIN, run.generation, st.restarts)
        actions.append(CreateJob(Stage.TRAIN, new, run.generation, tuple(trainer_argv(run.spec))))
        limit = run.spec.jobs.backoff_limit
        msg = f"training Job {name} failed; recreated whole as {new} (restart {st.restarts}/{limit})"
        actions.append(EmitEvent(EventType.WARNING, EventReason.TRAIN_JOB_RECREATED, msg))
        st.jobs.train = new
        st.phase, st.reason, st.message = Phase.TRAINING, Reason.TRAIN_JOB_RECREATED, msg
        set_condition(st, ConditionType.TRAINED, FALSE, Reason.TRAINING, msg, now)
        return False
    if t.state == "failed":
        _fail(st, Stage.TRAIN, name, t, run.spec.jobs.backoff_limit, now)
        return False
    if t.state == "absent":
        actions.append(CreateJob(Stage.TRAIN, name, run.generation, tuple(trainer_argv(run.spec))))
        # The status a created Job will have once observed, so the next reconcile has nothing to write
        # (the creation itself is reported by the TrainingStarted Event).
        st.phase, st.reason = Phase.TRAINING, Reason.TRAIN_JOB_RUNNING
        st.message = _progress_message(name, st.progress, False)
    elif t.suspended:
        st.phase, st.reason = Phase.PENDING, Reason.AWAITING_ADMISSION
        st.message = f"training Job {name} is suspended (queued)"
        set_condition(st, ConditionType.SUSPENDED, TRUE, Reason.AWAITING_ADMISSION, st.message, now)
    elif t.stalled:
        if _stalled(run, Stage.TRAIN, name, t, st, actions, now):
            return False
    else:
        st.phase, st.reason = Phase.TRAINING, (Reason.POD_DISRUPTED if t.disrupted else Reason.TRAIN_JOB_RUNNING)
        st.message = _progress_message(name, st.progress, t.disrupted)
    if not t.suspended:
        _clear(st, ConditionType.SUSPENDED, Reason.RUNNING, f"training Job {name} runs", now)
    if not t.stalled:
        _clear(st, ConditionType.STALLED, Reason.PODS_STARTED, f"the pods of training Job {name} started", now)
    set_condition(st, ConditionType.TRAINED, FALSE, Reason.TRAINING, f"training Job {name} has not finished", now)
    if st.progress.epoch >= 1:
        _data_checked_by_trainer(run, st, now)
    return False


VERIFIED_DATA = (
    "the trainer re-hashed every spectrum and clean reference of the training and panel manifests, found no "
    "overlap with the panel by group_id, spectrum_id or content hash, and the ROI bounds inside the grid"
)
UNVERIFIED_DATA = (
    "spec.data.verify is false: the trainer found no overlap with the panel by group_id, spectrum_id or the "
    "manifests' content hashes, but did not re-hash the files"
)


def _data_checked_by_trainer(run: GodRunView, st: GodRunStatus, now: datetime) -> None:
    """DataVerified says what the trainer (which refuses bad data with exit 2) actually checked."""
    if _is_true(st, ConditionType.DATA_VERIFIED):
        return
    if run.spec.data.verify:
        set_condition(st, ConditionType.DATA_VERIFIED, TRUE, Reason.TRAINER_VERIFIED_DATA, VERIFIED_DATA, now)
    else:
        set_condition(st, ConditionType.DATA_VERIFIED, FALSE, Reason.VERIFICATION_DISABLED, UNVERIFIED_DATA, now)


def _clear(st: GodRunStatus, type_: ConditionType, reason: str, message: str, now: datetime) -> None:
    """Set a condition that is True back to False (conditions that never held are not added)."""
    if _is_true(st, type_):
        set_condition(st, type_, FALSE, reason, message, now)


def _stalled(
    run: GodRunView, stage: Stage, name: str, obs: StageObs, st: GodRunStatus, actions: list[Action], now: datetime
) -> bool:
    """A stage whose pods cannot start: Stalled=True with the pod's reason (the phase stays honest: Pending
    while training has not begun, Evaluating otherwise); after spec.jobs.startTimeoutSeconds of it the run gives
    up: its Job is deleted and the run ends Error/StartTimeout. True when the run gave up."""
    detail = f"{obs.stalled}: {obs.stalled_message.strip()[:512]}" if obs.stalled_message.strip() else obs.stalled
    msg = f"{stage.noun} Job {name} cannot start its pods ({detail})"
    set_condition(st, ConditionType.STALLED, TRUE, obs.stalled, msg, now)
    since = condition(st, ConditionType.STALLED)
    limit = run.spec.jobs.start_timeout_seconds
    if since is not None and (now - since.last_transition_time).total_seconds() >= limit:
        actions.append(DeleteJob(name, reason=DeleteReason.START_TIMEOUT))
        give_up = StageObs(
            "failed", reason=FailureReason.START_TIMEOUT, message=f"{msg} for {limit} s (jobs.startTimeoutSeconds)"
        )
        _fail(st, stage, name, give_up, run.spec.jobs.backoff_limit, now)
        set_condition(st, ConditionType.STALLED, FALSE, FailureReason.START_TIMEOUT, st.message, now)
        return True
    started = stage == Stage.EVALUATE or st.progress.epoch > 0
    st.phase = Phase.EVALUATING if stage == Stage.EVALUATE else (Phase.TRAINING if started else Phase.PENDING)
    st.reason, st.message = obs.stalled, msg
    return False


def _may_recreate(spec: GodRunSpec, st: GodRunStatus, obs: StageObs) -> bool:
    """Multi-node training recovers by recreating the whole Indexed Job (its Job has backoffLimit 0: a lone
    replacement pod cannot rejoin the static rendezvous), counted here against jobs.backoffLimit."""
    retriable = failure_reason(obs) not in (
        FailureReason.BAD_INPUT,
        FailureReason.DEADLINE_EXCEEDED,
        FailureReason.JOB_REJECTED,
        FailureReason.START_TIMEOUT,
    )
    return spec.resources.nodes > 1 and retriable and st.restarts < spec.jobs.backoff_limit


MAX_ETA_SECONDS = 100 * 365 * 86400.0


def _next_progress(before: Progress, seen: Progress, recipe: Recipe, now: datetime) -> Progress:
    """The observed progress with epochs filled in, lastUpdateTime moved when it changed, and an ETA."""
    new = seen if seen.epochs else seen.model_copy(update={"epochs": recipe.epochs})
    keys = ("epoch", "best_epoch", "psnr_mean", "sam_mean", "epoch_seconds")
    changed = any(getattr(new, k) != getattr(before, k) for k in keys) or before.last_update_time is None
    updated = now if changed else before.last_update_time
    eta = None
    if new.epoch_seconds is not None and new.epoch >= 1 and updated is not None:
        left = max(new.epochs - new.epoch, 0) * new.epoch_seconds
        if left <= MAX_ETA_SECONDS:  # beyond it (a huge epochs) no ETA: a datetime cannot hold one
            eta = updated + timedelta(seconds=round(left))
    return new.model_copy(update={"last_update_time": updated, "eta": eta})


def _progress_message(job: str, p: Progress, disrupted: bool) -> str:
    head = (
        f"training Job {job}: a pod was disrupted; resuming from the last checkpoint"
        if disrupted
        else f"training Job {job}"
    )
    if p.psnr_mean is None:
        return f"{head}, epoch {p.epoch}/{p.epochs}"
    return f"{head}, epoch {p.epoch}/{p.epochs}, panel PSNR {p.psnr_mean:.2f} dB, SAM {p.sam_mean or 0.0:.2f} deg"


def _evaluate(run: GodRunView, obs: Observed, st: GodRunStatus, actions: list[Action], now: datetime) -> None:
    name = _stage_names(run, st.restarts)[Stage.EVALUATE]
    st.jobs.evaluate = name
    e = obs.evaluate
    if e.state == "failed":
        _fail(st, Stage.EVALUATE, name, e, run.spec.jobs.backoff_limit, now)
        return
    if e.state == "succeeded" and obs.verdict is not None:
        _record_verdict(run, obs.verdict, st, now)
        return
    if e.state == "succeeded" and obs.verdict_error:
        st.phase, st.reason = Phase.ERROR, Reason.VERDICT_UNREADABLE
        st.message = (
            f"evaluation Job {name} succeeded but its termination message is not a verdict: {obs.verdict_error}"
        )
        set_condition(st, ConditionType.EVALUATED, FALSE, st.reason, st.message, now)
        return
    if e.state == "absent":
        actions.append(CreateJob(Stage.EVALUATE, name, run.generation, tuple(evaluator_argv(run.spec, run.name))))
        st.phase, st.reason, st.message = Phase.EVALUATING, Reason.EVAL_JOB_RUNNING, f"evaluation Job {name} is running"
    elif e.state == "succeeded":
        st.phase, st.reason = Phase.EVALUATING, Reason.AWAITING_VERDICT
        st.message = f"reading the verdict of Job {name}"
    elif e.suspended:
        st.phase, st.reason = Phase.EVALUATING, Reason.AWAITING_ADMISSION
        st.message = f"evaluation Job {name} is suspended (queued)"
        set_condition(st, ConditionType.SUSPENDED, TRUE, Reason.AWAITING_ADMISSION, st.message, now)
    elif e.stalled:
        if _stalled(run, Stage.EVALUATE, name, e, st, actions, now):
            return
    else:
        st.phase, st.reason, st.message = Phase.EVALUATING, Reason.EVAL_JOB_RUNNING, f"evaluation Job {name} is running"
    if not e.suspended:
        _clear(st, ConditionType.SUSPENDED, Reason.RUNNING, f"evaluation Job {name} runs", now)
    if not e.stalled:
        _clear(st, ConditionType.STALLED, Reason.PODS_STARTED, f"the pods of evaluation Job {name} started", now)
    set_condition(st, ConditionType.EVALUATED, FALSE, Reason.EVALUATING, f"evaluation Job {name} has not finished", now)


def _record_verdict(run: GodRunView, verdict: Verdict, st: GodRunStatus, now: datetime) -> None:
    st.panel = verdict
    st.lineage = verdict.lineage
    set_condition(
        st,
        ConditionType.EVALUATED,
        TRUE,
        Reason.PANEL_EVALUATED,
        f"{verdict.checkpoints_evaluated} checkpoint(s) ranked",
        now,
    )
    if not _is_true(st, ConditionType.DATA_VERIFIED) and run.spec.data.verify:
        set_condition(
            st,
            ConditionType.DATA_VERIFIED,
            TRUE,
            Reason.PANEL_VERIFIED,
            "the evaluator checked every panel spectrum and reference against the panel manifest's sha256 columns",
            now,
        )
    summary = _verdict_summary(verdict)
    if verdict.verdict == "pass":
        st.phase, st.reason, st.message = Phase.SHIPPED, Reason.GATES_PASSED, f"all four gates passed: {summary}"
        set_condition(st, ConditionType.GATES_PASSED, TRUE, Reason.ALL_GATES_PASSED, summary, now)
        return
    failed = ", ".join(verdict.failed_gates) or "unknown"
    st.phase, st.reason, st.message = Phase.FAILED_ACT_B, Reason.GATES_FAILED, f"failed gates: {failed}; {summary}"
    set_condition(st, ConditionType.GATES_PASSED, FALSE, Reason.GATES_FAILED, f"failed gates: {failed}", now)
    st.archive = verdict.archive


def _verdict_summary(v: Verdict) -> str:
    def num(x: float | None, unit: str) -> str:
        return "n/a" if x is None else f"{x:.2f}{unit}"

    return f"PSNR {num(v.psnr_mean, ' dB')} (std {num(v.psnr_std, ' dB')}), SAM {num(v.sam_mean, ' deg')}"


# --------------------------------------------------------------------------- Act B


def _ensure_act_b(run: GodRunView, obs: Observed, st: GodRunStatus, actions: list[Action]) -> None:
    if not run.spec.fallback.launch_act_b:
        return
    child = act_b_name(run.name)
    if obs.act_b_foreign:  # never adopted, never overwritten: reported until it is gone
        _report_foreign_act_b(child, obs.act_b_foreign, st, actions)
        return
    if obs.act_b_exists or st.act_b:  # never recreate a child someone deleted on purpose
        st.act_b = st.act_b or child
        return
    try:
        body = act_b_manifest(run, st)
    except ValidationError as exc:  # e.g. a best checkpoint whose file name the spec refuses
        # Not InvalidSpec: this run trained, so it is final like any other ending (is_final).
        st.phase, st.reason = Phase.ERROR, Reason.ACT_B_INVALID
        st.message = f"cannot create the Act B child: {format_validation_error(exc)}"[:1024]
        return
    actions.append(CreateActB(child, body))
    st.act_b = child
    st.message = _without_act_b_note(st.message)


ACT_B_TAKEN = "Act B not launched"


def _report_foreign_act_b(child: str, why: str, st: GodRunStatus, actions: list[Action]) -> None:
    """A GodRun named like this run's Act B child that this run did not create: not taken for the child (its
    verdict, its training are someone else's); said in the message and one Warning Event, while it exists.
    Deleting it lets the next reconcile create this run's own child (unless one was created before)."""
    note = f"{ACT_B_TAKEN}: a GodRun {child} exists that this run did not create ({why}); delete or rename it"
    if note not in st.message:
        base = _without_act_b_note(st.message)
        st.message = (f"{base}; {note}" if base else note)[:1024]
        actions.append(EmitEvent(EventType.WARNING, EventReason.ACT_B_NAME_TAKEN, note))


def _without_act_b_note(message: str) -> str:
    return "" if message.startswith(ACT_B_TAKEN) else message.split(f"; {ACT_B_TAKEN}")[0]


def _suffix(path: str, suffix: str) -> str:
    return path.rstrip("/") + suffix


def act_b_spec(spec: GodRunSpec, best_checkpoint: str) -> GodRunSpec:
    """The Act B recipe: the parent's, with spec.fallback.actB applied, warm-started from `best_checkpoint`.

    The child writes to its own checkpoint/log/output folders so it never overwrites the parent's artefacts
    (its warm start lives in the parent's checkpoint folder) and it does not launch an Act B of its own.
    """
    act = spec.fallback.act_b
    log_dir = _suffix(spec.training.log_dir, "_actb")
    recipe = spec.training.model_dump() | {
        "calibrator_head": act.calibrator_head,
        "freeze_backbone": act.freeze_backbone,
        "dip_weight": act.dip_weight,
        "derivative_weight": act.derivative_weight,
        "curvature_weight_roi": act.curvature_weight_roi,
        "epochs": act.epochs or spec.training.epochs,
        "init_checkpoint": best_checkpoint,
        "checkpoint_dir": _suffix(spec.training.checkpoint_dir, "_actb"),
        "log_dir": log_dir,
        "audit_log": files.audit_log(log_dir),
    }
    body = spec.model_dump(by_alias=True)
    body["training"] = recipe
    body["panel"]["outputDir"] = _suffix(spec.panel.output_dir, "_actb")
    body["fallback"]["launchActB"] = False
    return GodRunSpec.model_validate(body)


def act_b_manifest(run: GodRunView, st: GodRunStatus) -> dict[str, Any]:
    """The child GodRun `<name>-actb`, owned by the parent (garbage-collected with it)."""
    training = run.spec.training
    best = st.lineage.best_checkpoint or files.best_checkpoint(training.checkpoint_dir, training.model)
    meta: dict[str, Any] = {
        "name": act_b_name(run.name),
        "namespace": run.namespace,
        "labels": labels(parent=run_label(run.name)),
        "annotations": {ANNOTATION_PARENT_GENERATION: str(run.generation)},
    }
    if st.lineage.best_checkpoint_sha256:
        meta["annotations"][ANNOTATION_INIT_CHECKPOINT_SHA256] = st.lineage.best_checkpoint_sha256
    if run.uid:
        meta["ownerReferences"] = [owner_reference(run)]
    spec = act_b_spec(run.spec, best)
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": meta, "spec": _spec_body(spec)}


def _spec_body(spec: GodRunSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True)


def owner_reference(run: GodRunView) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": run.name,
        "uid": run.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


# --------------------------------------------------------------------------- events and polling


_PHASE_EVENTS: dict[Phase, tuple[EventType, str]] = {
    Phase.PENDING: (EventType.NORMAL, EventReason.QUEUED),
    Phase.TRAINING: (EventType.NORMAL, EventReason.TRAINING_STARTED),
    Phase.EVALUATING: (EventType.NORMAL, EventReason.EVALUATION_STARTED),
    Phase.SHIPPED: (EventType.NORMAL, EventReason.SHIPPED),
    Phase.FAILED_ACT_B: (EventType.WARNING, EventReason.GATES_FAILED),
}


def _transition_events(before: GodRunStatus, after: GodRunStatus) -> list[Action]:
    """One Event per phase transition (plus disruption, archive and Act B notices)."""
    events: list[Action] = []
    stalled = _is_true(after, ConditionType.STALLED) and not _is_true(before, ConditionType.STALLED)
    if stalled:  # says why the phase moved back to Pending, instead of a Queued
        events.append(EmitEvent(EventType.WARNING, EventReason.PODS_NOT_STARTING, after.message))
    elif after.phase != before.phase:
        type_, reason = _PHASE_EVENTS.get(after.phase, (EventType.WARNING, after.reason or EventReason.ERROR))
        events.append(EmitEvent(type_, reason, after.message or f"phase {after.phase}"))
    if after.reason == Reason.POD_DISRUPTED and before.reason != Reason.POD_DISRUPTED:
        events.append(EmitEvent(EventType.WARNING, EventReason.POD_DISRUPTED, after.message))
    if after.archive and not before.archive:
        events.append(EmitEvent(EventType.NORMAL, EventReason.ARCHIVED, f"artefacts archived under {after.archive}"))
    if after.act_b and not before.act_b:
        events.append(EmitEvent(EventType.NORMAL, EventReason.ACT_B_LAUNCHED, f"created Act B GodRun {after.act_b}"))
    return events


def _requeue_after(st: GodRunStatus, polling: Polling) -> float | None:
    if st.phase in (Phase.TRAINING, Phase.PENDING):
        return polling.progress_seconds
    if st.phase == Phase.EVALUATING and st.reason == Reason.AWAITING_VERDICT:
        return polling.verdict_seconds
    return None
