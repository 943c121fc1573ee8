"""The run's words: phases, reasons, condition types, stages, event types and the label/annotation keys.

Each word is spelled here once; every other module names it (`Phase.SHIPPED`, `Reason.BAD_INPUT`). The enums
are `StrEnum`s, so a member equals its string: a status written with them reads the same as before, and one
read back from the API (plain strings) compares equal. tests/test_vocabulary.py fails when one of these words
is typed as a literal anywhere else under godrun/.

Kubernetes' own words the controller reads (Job conditions, pod phases, pod waiting reasons) are here too, in
their own enums, because several of them are also the run's (a Job's `Failed`, a run's `Failed`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Phase(StrEnum):
    """`status.phase`."""

    PENDING = "Pending"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    SHIPPED = "Shipped"
    FAILED_ACT_B = "Failed-ActB"
    ERROR = "Error"


TERMINAL_PHASES: Final = frozenset({Phase.SHIPPED, Phase.FAILED_ACT_B, Phase.ERROR})


class ConditionType(StrEnum):
    """`status.conditions[].type`."""

    DATA_VERIFIED = "DataVerified"
    TRAINED = "Trained"
    EVALUATED = "Evaluated"
    GATES_PASSED = "GatesPassed"
    # Terminal, for `kubectl wait --for=condition=Succeeded|Failed` (Job/TrainJob style).
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    # Set only while they hold (and cleared to False afterwards).
    STALLED = "Stalled"
    SUSPENDED = "Suspended"


class ConditionStatus(StrEnum):
    """A condition's status (metav1.ConditionStatus: the run's conditions and the Kubernetes ones it reads)."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


STEP_CONDITIONS: Final = (
    ConditionType.DATA_VERIFIED,
    ConditionType.TRAINED,
    ConditionType.EVALUATED,
    ConditionType.GATES_PASSED,
)
TERMINAL_CONDITIONS: Final = (ConditionType.SUCCEEDED, ConditionType.FAILED)
CONDITION_TYPES: Final = STEP_CONDITIONS + TERMINAL_CONDITIONS


class Stage(StrEnum):
    """A run's two stages (each one Job, or one local process record)."""

    TRAIN = "train"
    EVALUATE = "evaluate"

    @property
    def noun(self) -> str:
        """The stage in status messages: `training Job ...`, `evaluation Job ...`."""
        return "training" if self is Stage.TRAIN else "evaluation"

    @property
    def condition(self) -> ConditionType:
        """The step condition the stage's outcome sets."""
        return ConditionType.TRAINED if self is Stage.TRAIN else ConditionType.EVALUATED


class FailureReason(StrEnum):
    """Why a failed stage failed, in the machine's own terms (each executor maps what it sees onto these).

    BadInput is decided from the exit code; JobRejected: the Job was refused before anything ran;
    StartTimeout: the stage's pods never started for spec.jobs.startTimeoutSeconds."""

    BAD_INPUT = "BadInput"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    JOB_FAILED = "JobFailed"
    JOB_REJECTED = "JobRejected"
    START_TIMEOUT = "StartTimeout"


class Reason(StrEnum):
    """`status.reason` and `status.conditions[].reason` (besides FailureReason and a stalled pod's reason)."""

    PENDING = "Pending"
    INVALID_SPEC = "InvalidSpec"
    SUSPENDED = "Suspended"
    SPEC_SUSPEND = "SpecSuspend"
    AWAITING_ADMISSION = "AwaitingAdmission"
    RUNNING = "Running"
    PODS_STARTED = "PodsStarted"
    NOT_REACHED = "NotReached"
    INTERRUPTED = "Interrupted"  # the local runner was stopped (Ctrl-C, SIGTERM)
    # training
    TRAIN_JOB_RUNNING = "TrainJobRunning"
    TRAIN_JOB_RECREATED = "TrainJobRecreated"
    POD_DISRUPTED = "PodDisrupted"
    TRAINING = "Training"
    TRAINING_SUCCEEDED = "TrainingSucceeded"
    TRAINER_VERIFIED_DATA = "TrainerVerifiedData"
    VERIFICATION_DISABLED = "VerificationDisabled"
    # evaluation
    EVAL_JOB_RUNNING = "EvalJobRunning"
    EVALUATING = "Evaluating"
    AWAITING_VERDICT = "AwaitingVerdict"
    VERDICT_UNREADABLE = "VerdictUnreadable"
    PANEL_EVALUATED = "PanelEvaluated"
    PANEL_VERIFIED = "PanelVerified"
    GATES_PASSED = "GatesPassed"
    ALL_GATES_PASSED = "AllGatesPassed"
    GATES_FAILED = "GatesFailed"
    ACT_B_INVALID = "ActBInvalid"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    """Reasons of the Events on a GodRun (the local runner logs them), besides a status reason on a transition."""

    NEW_GENERATION = "NewGeneration"
    SPEC_CHANGE_IGNORED = "SpecChangeIgnored"
    ACT_B_NAME_TAKEN = "ActBNameTaken"  # a GodRun named like the Act B child that this run did not create
    QUEUED = "Queued"
    TRAINING_STARTED = "TrainingStarted"
    EVALUATION_STARTED = "EvaluationStarted"
    SHIPPED = "Shipped"
    GATES_FAILED = "GatesFailed"
    PODS_NOT_STARTING = "PodsNotStarting"
    POD_DISRUPTED = "PodDisrupted"
    ARCHIVED = "Archived"
    ACT_B_LAUNCHED = "ActBLaunched"
    TRAIN_JOB_RECREATED = "TrainJobRecreated"
    ERROR = "Error"  # a transition into a phase without an Event of its own, and no reason
    # the local runner
    RETRYING = "Retrying"
    LEFTOVER_STOPPED = "LeftoverStopped"


class DeleteReason(StrEnum):
    """Why a Job is deleted (logged with the deletion)."""

    SUPERSEDED_GENERATION = "SupersededGeneration"
    SUSPENDED = "Suspended"
    START_TIMEOUT = "StartTimeout"


# --------------------------------------------------------------------------- Kubernetes' words the run reads


class JobCondition(StrEnum):
    """batch/v1 Job condition types."""

    COMPLETE = "Complete"
    SUCCESS_CRITERIA_MET = "SuccessCriteriaMet"
    FAILED = "Failed"
    FAILURE_TARGET = "FailureTarget"
    SUSPENDED = "Suspended"


class JobConditionReason(StrEnum):
    """batch/v1 Job condition reasons the controller maps onto FailureReason."""

    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    POD_FAILURE_POLICY = "PodFailurePolicy"


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"


class PodFailureAction(StrEnum):
    """What one failed attempt of a stage means (a Job's podFailurePolicy actions; the local runner's too)."""

    FAIL_JOB = "FailJob"
    IGNORE = "Ignore"
    COUNT = "Count"


class PodCondition(StrEnum):
    DISRUPTION_TARGET = "DisruptionTarget"
    POD_SCHEDULED = "PodScheduled"


class StallReason(StrEnum):
    """Why a stage's pods cannot start (passed on as the run's reason and its Stalled condition's)."""

    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    ERR_IMAGE_PULL = "ErrImagePull"
    ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
    INVALID_IMAGE_NAME = "InvalidImageName"
    CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
    CREATE_CONTAINER_ERROR = "CreateContainerError"
    RUN_CONTAINER_ERROR = "RunContainerError"
    UNSCHEDULABLE = "Unschedulable"
    FAILED_CREATE = "FailedCreate"


# --------------------------------------------------------------------------- labels and annotations

APP_NAME: Final = "godrun"
MANAGER: Final = "godrun-controller"
ACT_B: Final = "B"

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_RUN: Final = "godrun.io/run"
LABEL_STAGE: Final = "godrun.io/stage"
LABEL_GENERATION: Final = "godrun.io/generation"
LABEL_PARENT: Final = "godrun.io/parent"
LABEL_ACT: Final = "godrun.io/act"
ANNOTATION_PARENT_GENERATION: Final = "godrun.io/parent-generation"
ANNOTATION_INIT_CHECKPOINT_SHA256: Final = "godrun.io/init-checkpoint-sha256"
LABEL_QUEUE: Final = "kueue.x-k8s.io/queue-name"
LABEL_JOB_NAME: Final = "batch.kubernetes.io/job-name"
LABEL_JOB_NAME_LEGACY: Final = "job-name"
ANNOTATION_COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"

LABEL_KEYS: Final = (
    LABEL_NAME,
    LABEL_MANAGED_BY,
    LABEL_COMPONENT,
    LABEL_PART_OF,
    LABEL_RUN,
    LABEL_STAGE,
    LABEL_GENERATION,
    LABEL_PARENT,
    LABEL_ACT,
    ANNOTATION_PARENT_GENERATION,
    ANNOTATION_INIT_CHECKPOINT_SHA256,
    LABEL_QUEUE,
    LABEL_JOB_NAME,
    ANNOTATION_COMPLETION_INDEX,
)
# The label selector of everything the controller made.
MANAGED_SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGER}"


def labels(
    *,
    run: str | None = None,
    stage: Stage | None = None,
    generation: int | None = None,
    parent: str | None = None,
    queue: str | None = None,
    managed: bool = True,
) -> dict[str, str]:
    """The labels of an object made for a run: a stage's Job, pod and Service (`run`, `stage`, `generation`,
    `queue`), an Act B child GodRun (`parent`), or only a selector (`managed=False` leaves out the app labels).

    `run` and `parent` are label values already (godrun.core.names.run_label); keys are plain `str`."""
    out: dict[str, str] = {}
    if managed:
        out |= {LABEL_NAME: APP_NAME, LABEL_MANAGED_BY: MANAGER}
        if stage is not None:
            out[LABEL_COMPONENT] = str(stage)
    if run is not None:
        out[LABEL_RUN] = run
    if stage is not None:
        out[LABEL_STAGE] = str(stage)
    if generation is not None:
        out[LABEL_GENERATION] = str(generation)
    if parent is not None:
        out |= {LABEL_PARENT: parent, LABEL_ACT: ACT_B}
    if queue:
        out[LABEL_QUEUE] = queue
    return out
