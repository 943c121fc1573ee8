"""Kubernetes Job (and headless Service) manifests for the training and evaluation stages.

A Job runs the argv of its CreateJob action (see godrun/core/commands.py) wrapped by `launch_command`;
pods exit 2 on bad input, which the pod failure policy turns into an immediate Job failure. Plain dicts
in the API's camelCase, ready for `BatchV1Api.create_namespaced_job`. Pods follow the restricted Pod
Security Standard: non-root numeric UID, no privilege escalation, ALL capabilities dropped, seccomp
RuntimeDefault and a read-only root filesystem (writable: the run volume, /tmp, /dev/shm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from godrun.contract.files import K8S_TERMINATION_LOG as TERMINATION_LOG
from godrun.contract.files import TERMINATION_LOG_ENV
from godrun.contract.flags import flag_name
from godrun.contract.words import ANNOTATION_COMPLETION_INDEX as COMPLETION_INDEX_ANNOTATION
from godrun.contract.words import ConditionStatus, PodCondition, PodFailureAction, Stage
from godrun.contract.words import labels as run_labels
from godrun.core.commands import Rendezvous, launch_command, with_option
from godrun.core.machine import FAIL_JOB_EXIT_CODES, CreateJob, GodRunView, owner_reference
from godrun.core.names import run_label, service_name
from godrun.paths import RUN_VOLUME_ENV
from godrun.spec import GodRunSpec

TRAINER_METRICS_PORT = 9090
RENDEZVOUS_PORT = 29500
CONTAINER = {Stage.TRAIN: "trainer", Stage.EVALUATE: "evaluator"}


def labels(run: str, stage: Stage, generation: int, spec: GodRunSpec | None = None) -> dict[str, str]:
    """Labels of every object made for a run (+ generation, + the Kueue queue when the spec names one)."""
    queue = spec.resources.queue_name if spec is not None else None
    return run_labels(run=run_label(run), stage=stage, generation=generation, queue=queue)


def escape_expansion(argv: Sequence[str]) -> list[str]:
    """Kubernetes expands `$(VAR)` in command/args; `$$` keeps a spec string's `$` literal."""
    return [arg.replace("$", "$$") for arg in argv]


def pod_security_context(spec: GodRunSpec) -> dict[str, Any]:
    uid = spec.jobs.run_as_user
    ids = {} if uid is None else {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid}
    out: dict[str, Any] = {"runAsNonRoot": True, **ids}
    if uid is not None:  # chown the run volume only when its root is not already ours, not on every pod start
        out["fsGroupChangePolicy"] = "OnRootMismatch"
    out["seccompProfile"] = {"type": "RuntimeDefault"}
    return out


def container_security_context(spec: GodRunSpec) -> dict[str, Any]:
    uid = {} if spec.jobs.run_as_user is None else {"runAsUser": spec.jobs.run_as_user}
    return {
        "runAsNonRoot": True,
        **uid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def volumes(spec: GodRunSpec) -> list[dict[str, Any]]:
    data: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": spec.data.claim_name}} if spec.data.claim_name else {"emptyDir": {}}
    )
    return [
        {"name": "data", **data},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}},
        {"name": "tmp", "emptyDir": {}},
        *(dict(v) for v in spec.pod_overrides.volumes),
    ]


def volume_mounts(spec: GodRunSpec) -> list[dict[str, Any]]:
    return [
        {"name": "data", "mountPath": spec.data.mount_path},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        *(dict(m) for m in spec.pod_overrides.volume_mounts),
    ]


def env(extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    base = [
        {"name": TERMINATION_LOG_ENV, "value": TERMINATION_LOG},
        {"name": "HOME", "value": "/tmp"},  # read-only root: caches and configs go to /tmp
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    return base + (extra or [])


def compute(spec: GodRunSpec, gpus: int) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, str] = {"memory": res.memory}
    if gpus > 0:
        limits[res.gpu_resource] = str(gpus)
        requests[res.gpu_resource] = str(gpus)
    return {"requests": requests, "limits": limits}


def pod_failure_policy(container: str, *, multi_node: bool = False) -> dict[str, Any]:
    """godrun.core.machine.attempt_failure_action as a Job's rules: exit 2 (bad input) fails the Job at once, a
    disrupted pod does not count against backoffLimit, anything else (a signal too) counts. A multi-node Job
    fails on a disruption too: the controller recreates it whole (see machine._may_recreate)."""
    disrupted = PodFailureAction.FAIL_JOB if multi_node else PodFailureAction.IGNORE
    return {
        "rules": [
            {
                "action": PodFailureAction.FAIL_JOB,
                "onExitCodes": {"containerName": container, "operator": "In", "values": list(FAIL_JOB_EXIT_CODES)},
            },
            {
                "action": disrupted,
                "onPodConditions": [{"type": PodCondition.DISRUPTION_TARGET, "status": ConditionStatus.TRUE}],
            },
        ]
    }


def _pod_spec(spec: GodRunSpec, container: dict[str, Any]) -> dict[str, Any]:
    over = spec.pod_overrides
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": over.automount_service_account_token,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(spec),
        "containers": [container],
        "volumes": volumes(spec),
    }
    if spec.resources.node_selector:
        pod["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.resources.tolerations]
    if over.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in over.image_pull_secrets]
    for key, value in (
        ("serviceAccountName", over.service_account_name),
        ("priorityClassName", over.priority_class_name),
        ("runtimeClassName", over.runtime_class_name),
        ("schedulerName", over.scheduler_name),
    ):
        if value:
            pod[key] = value
    if over.topology_spread_constraints:
        pod["topologySpreadConstraints"] = [dict(c) for c in over.topology_spread_constraints]
    if over.affinity is not None:
        pod["affinity"] = over.affinity.model_dump(by_alias=True, exclude_none=True)
    return pod


def _container(
    spec: GodRunSpec, stage: Stage, command: list[str], gpus: int, extra_env: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "name": CONTAINER[stage],
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": command,
        "workingDir": spec.data.mount_path,
        "env": env(
            [
                {"name": RUN_VOLUME_ENV, "value": spec.data.mount_path},
                *(extra_env or []),
                *(e.model_dump(by_alias=True, exclude_none=True) for e in spec.pod_overrides.env),
            ]
        ),
        "resources": compute(spec, gpus),
        "securityContext": container_security_context(spec),
        "volumeMounts": volume_mounts(spec),
        "terminationMessagePath": TERMINATION_LOG,
        # a crash's log tail becomes its message; the verdict is read only from pods that exited 0
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _job(
    run: GodRunView, stage: Stage, name: str, generation: int, pod: dict[str, Any], deadline: int
) -> dict[str, Any]:
    spec = run.spec
    lab = labels(run.name, stage, generation, spec)
    multi_node = stage == Stage.TRAIN and spec.resources.nodes > 1
    template_meta: dict[str, Any] = {"labels": spec.pod_overrides.labels | lab}
    if spec.pod_overrides.annotations:
        template_meta["annotations"] = dict(spec.pod_overrides.annotations)
    job_spec: dict[str, Any] = {
        # multi-node: the controller recreates the whole Job instead (status.restarts)
        "backoffLimit": 0 if multi_node else spec.jobs.backoff_limit,
        "activeDeadlineSeconds": deadline,
        "podFailurePolicy": pod_failure_policy(CONTAINER[stage], multi_node=multi_node),
        "template": {"metadata": template_meta, "spec": pod},
    }
    if spec.jobs.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.jobs.ttl_seconds_after_finished
    meta: dict[str, Any] = {"name": name, "namespace": run.namespace, "labels": spec.jobs.labels | lab}
    if spec.jobs.annotations:
        meta["annotations"] = dict(spec.jobs.annotations)
    if run.uid:
        meta["ownerReferences"] = [owner_reference(run)]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def train_command(spec: GodRunSpec, job: str, namespace: str, argv: Sequence[str]) -> list[str]:
    """The trainer `argv` serving metrics on the port the pod declares, under the launcher its resources need
    (spec strings escaped against `$(VAR)` expansion; the launcher's own `$(JOB_COMPLETION_INDEX)` is not)."""
    argv = escape_expansion(with_option(argv, flag_name("metrics_port"), str(TRAINER_METRICS_PORT)))
    master = Rendezvous(f"{job}-0.{service_name(job)}.{namespace}.svc", RENDEZVOUS_PORT)
    return launch_command(argv, gpus=spec.resources.gpus, nodes=spec.resources.nodes, rendezvous=master)


def train_job(run: GodRunView, name: str, generation: int, argv: Sequence[str]) -> dict[str, Any]:
    spec = run.spec
    nodes = spec.resources.nodes
    index_env = None
    if nodes > 1:  # declared explicitly so that $(JOB_COMPLETION_INDEX) in the command expands
        ref = {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}
        index_env = [{"name": "JOB_COMPLETION_INDEX", "valueFrom": ref}]
    command = train_command(spec, name, run.namespace, argv)
    container = _container(spec, Stage.TRAIN, command, spec.resources.gpus, index_env)
    container["ports"] = [{"name": "metrics", "containerPort": TRAINER_METRICS_PORT, "protocol": "TCP"}]
    if nodes > 1:
        container["ports"].append({"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"})
    pod = _pod_spec(spec, container)
    job = _job(run, Stage.TRAIN, name, generation, pod, spec.jobs.train_deadline_seconds)
    if nodes > 1:
        pod["subdomain"] = service_name(name)
        job["spec"] |= {"completionMode": "Indexed", "completions": nodes, "parallelism": nodes}
    return job


def evaluate_job(run: GodRunView, name: str, generation: int, argv: Sequence[str]) -> dict[str, Any]:
    spec = run.spec
    gpus = min(spec.resources.gpus, 1)
    container = _container(spec, Stage.EVALUATE, launch_command(escape_expansion(argv), gpus=gpus), gpus)
    return _job(run, Stage.EVALUATE, name, generation, _pod_spec(spec, container), spec.jobs.evaluate_deadline_seconds)


def shared_volume_problem(spec: GodRunSpec, claim: dict[str, Any] | None) -> str | None:
    """Why the run volume cannot serve a multi-node Job (None when it can): every node mounts the one claim,
    so it must be ReadWriteMany (a ReadWriteOnce claim fails with Multi-Attach on the second node)."""
    if spec.resources.nodes <= 1:
        return None
    name = spec.data.claim_name
    if claim is None:
        return f"spec.data.claimName: PersistentVolumeClaim {name!r} not found (nodes > 1 needs a ReadWriteMany claim)"
    modes = (claim.get("spec") or {}).get("accessModes") or []
    if "ReadWriteMany" not in modes:
        return (
            f"spec.data.claimName: PersistentVolumeClaim {name!r} has access modes {modes}; "
            f"nodes > 1 mounts it on {spec.resources.nodes} nodes and needs ReadWriteMany"
        )
    return None


def headless_service(run: GodRunView, job: str, generation: int) -> dict[str, Any]:
    """The Service giving multi-node training pods stable DNS names (`<job>-<index>.<service>`)."""
    lab = labels(run.name, Stage.TRAIN, generation)
    meta: dict[str, Any] = {"name": service_name(job), "namespace": run.namespace, "labels": lab}
    if run.uid:
        meta["ownerReferences"] = [owner_reference(run)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": run_labels(run=run_label(run.name), stage=Stage.TRAIN, generation=generation, managed=False),
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }


def job_for(run: GodRunView, action: CreateJob) -> dict[str, Any]:
    """The Job of a CreateJob action: its argv under the stage's launcher."""
    if action.stage == Stage.TRAIN:
        return train_job(run, action.name, action.generation, action.argv)
    return evaluate_job(run, action.name, action.generation, action.argv)
