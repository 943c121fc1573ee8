"""Pure reading of the API objects the controller caches: Jobs and Pods -> StageObs, GodRuns -> GodRunView.

No API calls and no kubernetes import: what a reconcile concludes from the objects in its caches. Progress
and verdict parsing, shared with the local executor, live in godrun/core/observe.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from godrun.contract.words import (
    ANNOTATION_COMPLETION_INDEX,
    LABEL_JOB_NAME,
    LABEL_JOB_NAME_LEGACY,
    LABEL_RUN,
    ConditionStatus,
    FailureReason,
    JobCondition,
    JobConditionReason,
    PodCondition,
    PodPhase,
    StallReason,
)
from godrun.controller.cache import Key
from godrun.core.machine import FAIL_JOB_EXIT_CODES, GodRunView, StageObs
from godrun.spec import API_GROUP, KIND, GodRunSpec, GodRunStatus, format_validation_error

Obj = dict[str, Any]
FINISHED_CONDITIONS = (
    JobCondition.COMPLETE,
    JobCondition.SUCCESS_CRITERIA_MET,
    JobCondition.FAILED,
    JobCondition.FAILURE_TARGET,
)
JOB_NAME_LABELS = (LABEL_JOB_NAME, LABEL_JOB_NAME_LEGACY)
# A Job condition's reason -> the machine's FailureReason (PodFailurePolicy is exit 2: the exit code says BadInput).
JOB_FAILURE_REASONS: dict[str, FailureReason] = {
    JobConditionReason.BACKOFF_LIMIT_EXCEEDED: FailureReason.RETRIES_EXHAUSTED,
    JobConditionReason.DEADLINE_EXCEEDED: FailureReason.DEADLINE_EXCEEDED,
}
_EXIT_IN_MESSAGE = re.compile(r"exit code (\d+)")


def job_stage_obs(
    job: Obj | None, pods: Sequence[Obj] = (), now: datetime | None = None, pods_gone_at: datetime | None = None
) -> StageObs:
    """A Job (raw API dict) and its pods -> StageObs (`now`: to tell a Job whose pods are refused;
    `pods_gone_at`: when the cache last saw the Job's last pod go, e.g. an evicted one before its replacement)."""
    if job is None:
        return StageObs()
    status, spec = job.get("status") or {}, job.get("spec") or {}
    conds = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == ConditionStatus.TRUE}
    exit_code, term_message = _last_termination(pods)
    disrupted = any(_pod_condition(p, PodCondition.DISRUPTION_TARGET) for p in pods)
    for failed in (JobCondition.FAILED, JobCondition.FAILURE_TARGET):
        if failed in conds:
            c = conds[failed]
            exit_code, term_message = _failure_termination(c, pods, exit_code, term_message)
            message = term_message or c.get("message") or ""
            reason = JOB_FAILURE_REASONS.get(c.get("reason") or "", FailureReason.JOB_FAILED)
            failures = int(status.get("failed") or 0) or None
            return StageObs("failed", reason=reason, exit_code=exit_code, message=message, failures=failures)
    if JobCondition.COMPLETE in conds or JobCondition.SUCCESS_CRITERIA_MET in conds:
        return StageObs("succeeded", exit_code=0, message=term_message)
    suspended = bool(spec.get("suspend")) or JobCondition.SUSPENDED in conds
    stalled, why = ("", "") if suspended else stalled_pods(job, pods, now, pods_gone_at)
    return StageObs("active", disrupted=disrupted, suspended=suspended, stalled=stalled, stalled_message=why)


# A container waiting for one of these reasons will not start by itself (restartPolicy Never: no CrashLoop).
STALLED_WAITING = frozenset(
    {
        StallReason.IMAGE_PULL_BACK_OFF,
        StallReason.ERR_IMAGE_PULL,
        StallReason.ERR_IMAGE_NEVER_PULL,
        StallReason.INVALID_IMAGE_NAME,
        StallReason.CREATE_CONTAINER_CONFIG_ERROR,
        StallReason.CREATE_CONTAINER_ERROR,
        StallReason.RUN_CONTAINER_ERROR,
    }
)
# A Job with no pod this long after it started: its pods are refused (quota, admission: FailedCreate events).
FAILED_CREATE_AFTER_SECONDS = 60.0


def stalled_pods(
    job: Obj, pods: Sequence[Obj], now: datetime | None, pods_gone_at: datetime | None = None
) -> tuple[str, str]:
    """(reason, message) when the active Job's pods cannot start, else ("", "").

    "No pod" counts from the Job's start or from when its last pod went, whichever is later, and a pod still
    terminating counts as a pod: the Job controller replaces an evicted pod only once it has gone."""
    for pod in pods:
        st = pod.get("status") or {}
        if st.get("phase") not in (None, PodPhase.PENDING):
            continue
        for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STALLED_WAITING:
                return waiting["reason"], f"pod {pod['metadata'].get('name')}: {waiting.get('message') or ''}"
        for c in st.get("conditions") or []:
            scheduled = c.get("type") == PodCondition.POD_SCHEDULED and c.get("status") == ConditionStatus.FALSE
            if scheduled and c.get("reason") == StallReason.UNSCHEDULABLE:
                return StallReason.UNSCHEDULABLE, f"pod {pod['metadata'].get('name')}: {c.get('message') or ''}"
    started = _time((job.get("status") or {}).get("startTime") or (job.get("metadata") or {}).get("creationTimestamp"))
    if started is not None and pods_gone_at is not None:
        started = max(started, pods_gone_at)
    if not pods and now is not None and started is not None:
        waited = (now - started).total_seconds()
        if waited >= FAILED_CREATE_AFTER_SECONDS:
            name = (job.get("metadata") or {}).get("name")
            return StallReason.FAILED_CREATE, (
                f"no pod of Job {name} exists {waited:.0f} s after it started or lost its last one: the Job "
                "controller's pod creation is refused (a ResourceQuota or an admission webhook; "
                f"`kubectl describe job {name}` shows its FailedCreate events)"
            )
    return "", ""


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def job_finished(job: Obj) -> bool:
    conds = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in FINISHED_CONDITIONS and c.get("status") == ConditionStatus.TRUE for c in conds)


def _pod_condition(pod: Obj, type_: str) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == type_ and c.get("status") == ConditionStatus.TRUE for c in conds)


def terminated(pod: Obj) -> Obj | None:
    """The pod's container termination record (current state, else the last one), if any."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if isinstance(term, dict) and term:
            return term
    return None


def _pod_time(pod: Obj) -> str:
    term = terminated(pod) or {}
    return term.get("finishedAt") or (pod.get("metadata") or {}).get("creationTimestamp") or ""


def _last_termination(pods: Sequence[Obj]) -> tuple[int | None, str]:
    """Exit code and termination message of the most recently finished pod."""
    finished = [p for p in pods if terminated(p)]
    if not finished:
        return None, ""
    term = terminated(max(finished, key=_pod_time)) or {}
    return term.get("exitCode"), term.get("message") or ""


def _failure_termination(cond: Obj, pods: Sequence[Obj], code: int | None, message: str) -> tuple[int | None, str]:
    """Why a Job failed, from the Job's own failure and every pod, not from whichever pod ended last.

    A multi-node Job whose rank 1 exits 2 fails by its pod failure policy, and the other ranks are then killed
    (exit 143): the newest termination is a signal, but the Job's condition (reason PodFailurePolicy, message
    "... failed with exit code 2 matching FailJob rule ...") and rank 1's own record both say bad input.
    """
    for pod in pods:  # a pod that exited with a never-retried code decides, whichever ended last
        term = terminated(pod) or {}
        if term.get("exitCode") in FAIL_JOB_EXIT_CODES:
            return term["exitCode"], term.get("message") or ""
    if cond.get("reason") == JobConditionReason.POD_FAILURE_POLICY and (
        m := _EXIT_IN_MESSAGE.search(cond.get("message") or "")
    ):
        return int(m.group(1)), ""
    if code is None and (m := _EXIT_IN_MESSAGE.search(cond.get("message") or "")):
        return int(m.group(1)), message
    return code, message


def succeeded_pod_message(pods: Sequence[Obj]) -> str:
    """Termination message of the newest pod that exited 0 (the evaluator's verdict)."""
    ok = [p for p in pods if (terminated(p) or {}).get("exitCode") == 0]
    return ((terminated(max(ok, key=_pod_time)) or {}).get("message") or "") if ok else ""


def completion_index(pod: Obj) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_COMPLETION_INDEX)


def view_from_object(obj: Obj) -> tuple[GodRunView, str | None]:
    """A GodRun as the API returns it -> (GodRunView, None), or (a view with a default spec, the error) when
    GodRunSpec refuses a spec the CRD schema let through."""
    meta = obj["metadata"]
    error = None
    try:
        spec = GodRunSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        # Only the name and generation of an unreadable spec are used (decide() starts nothing for it).
        spec, error = GodRunSpec.model_construct(image=""), format_validation_error(exc, prefix="spec.")
    try:
        status = GodRunStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = GodRunStatus()  # unreadable status: recompute from observation (names are deterministic)
    view = GodRunView(
        name=meta["name"],
        namespace=meta["namespace"],
        generation=int(meta.get("generation") or 1),
        spec=spec,
        status=status,
        uid=meta.get("uid"),
        resource_version=meta.get("resourceVersion"),
    )
    return view, error


def status_body(status: GodRunStatus) -> Obj:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def run_index(job: Obj) -> Key | None:
    """Jobs by (namespace, godrun.io/run label): the cached form of the per-run label selector."""
    meta = job.get("metadata") or {}
    label = (meta.get("labels") or {}).get(LABEL_RUN)
    return (meta.get("namespace", ""), label) if label else None


def job_name_index(pod: Obj) -> Key | None:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    job = next((labels[k] for k in JOB_NAME_LABELS if labels.get(k)), None)
    return (meta.get("namespace", ""), job) if job else None


def owned_by(obj: Obj, run: GodRunView) -> bool:
    """Whether a Job carrying the run's label belongs to this run.

    With owner references, only the run's UID counts (a deleted and re-created GodRun of the same name must
    not adopt its predecessor's Jobs). A Job without any owner reference is adopted: the label and the
    deterministic name say it was made for this run, e.g. by a controller that did not know the UID yet
    (local tools, a run observed before its UID was set); adopting it avoids creating a twin beside it.
    """
    refs = obj["metadata"].get("ownerReferences") or []
    if not refs:
        return True
    if run.uid is None:
        return any(r.get("kind") == KIND and r.get("name") == run.name for r in refs)
    return any(r.get("uid") == run.uid for r in refs)


def foreign_act_b(child: Obj | None, run: GodRunView) -> str:
    """Why the GodRun `child` (named like the run's Act B child) is not the run's own, or "" when it is (or
    there is none). Unlike Jobs, a child without owner references is not adopted: it is a user's GodRun, and
    taking it for Act B would let its verdict stand for this run's fallback."""
    if child is None:
        return ""
    refs = (child.get("metadata") or {}).get("ownerReferences") or []
    ours = [r for r in refs if r.get("kind") == KIND and r.get("apiVersion", "").startswith(f"{API_GROUP}/")]
    if run.uid is not None and any(r.get("uid") == run.uid for r in ours):
        return ""
    if run.uid is None and any(r.get("name") == run.name for r in ours):
        return ""
    if not refs:
        return "it has no owner reference"
    owners = ", ".join(f"{r.get('kind')} {r.get('name')} uid {r.get('uid')}" for r in refs[:3])
    return f"it is owned by {owners}, not by this run (uid {run.uid})"


def owner_key(obj: Obj) -> Key | None:
    """The GodRun that owns `obj`, from its owner references."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(f"{API_GROUP}/"):
            return meta.get("namespace", ""), ref["name"]
    return None


def slim(kind: str, obj: Obj) -> Obj:
    """What the cache keeps of an object: no managedFields, no pod spec, no Job pod template (memory)."""
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    if kind == "pods":
        out.pop("spec", None)
    elif kind == "jobs" and isinstance(out.get("spec"), dict):
        out["spec"] = {k: v for k, v in out["spec"].items() if k != "template"}
    return out
