"""Helpers for the deployment tests (tests/test_deploy_*.py): paths, tool lookup, YAML loading and
an independent checker of the Kubernetes Pod Security Standards' restricted profile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "helm" / "godrun"
CRD_FILE = MANIFESTS / "crd" / "godruns.godrun.io.yaml"
DASHBOARD_FILE = MANIFESTS / "monitoring" / "dashboard.json"
RULES_FILE = MANIFESTS / "monitoring" / "rules.yaml"

# docs/design.md section 7 and godrun/controller/README.md (controller), godrun/trainer/telemetry.py (trainer).
CONTROLLER_METRICS = frozenset(
    {
        "godrun_panel_psnr_mean_decibels",
        "godrun_panel_psnr_std_decibels",
        "godrun_panel_sam_mean_degrees",
        "godrun_panel_tail_pass_ratio",
        "godrun_panel_roi_pass_ratio",
        "godrun_panel_spurious_peaks",
        "godrun_gate_passed",
        "godrun_run_phase",
        "godrun_reconcile_duration_seconds",
        "godrun_reconcile_errors_total",
        "godrun_run_progress_epoch",
        "godrun_run_progress_epochs",
        "godrun_run_progress_psnr_mean_decibels",
        "godrun_run_progress_sam_mean_degrees",
        "godrun_controller_leader",
        "godrun_runs_finished_total",
        "godrun_run_held",
        "godrun_run_stalled",
        "godrun_run_progress_last_update_timestamp_seconds",
    }
)
TRAINER_METRICS = frozenset(
    {
        "godrun_train_epoch",
        "godrun_train_epochs",
        "godrun_train_loss",
        "godrun_train_panel_psnr_mean_decibels",
        "godrun_train_panel_sam_mean_degrees",
        "godrun_train_best_epoch",
        "godrun_train_spectra_total",
        "godrun_train_epoch_seconds",
        "godrun_train_lr",
    }
)
HISTOGRAMS = frozenset({"godrun_reconcile_duration_seconds"})


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def manifest_files() -> list[Path]:
    return sorted(MANIFESTS.rglob("*.yaml")) + sorted(MANIFESTS.rglob("*.yml"))


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


# --------------------------------------------------------------------------- Pod Security (restricted)

_ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for a Pod or an object with a pod template (CronJob included)."""
    kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
    if kind == "Pod":
        yield f"Pod/{name}", obj["spec"]
    elif kind in _POD_TEMPLATE_KINDS:
        yield f"{kind}/{name}", obj["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield f"CronJob/{name}", obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Violations of the restricted Pod Security Standard (baseline checks included)."""
    bad: list[str] = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            bad.append(f"{flag} is set")
    psc = pod.get("securityContext") or {}
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            bad.append(f"volume {vol['name']}: type {sorted(kinds - _ALLOWED_VOLUMES)} not allowed")
    for sysctl in psc.get("sysctls") or []:
        bad.append(f"sysctl {sysctl.get('name')} set")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    if not containers:
        bad.append("no containers")
    for c in containers:
        bad += [f"container {c['name']}: {v}" for v in _container_violations(c, psc)]
    return bad


def _container_violations(c: dict[str, Any], psc: dict[str, Any]) -> list[str]:
    bad: list[str] = []
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        bad.append("privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        bad.append("allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        bad.append("capabilities.drop must include ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        bad.append(f"capabilities.add {caps.get('add')}")
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        bad.append("runAsNonRoot must be true (pod or container)")
    if sc.get("runAsUser", psc.get("runAsUser")) == 0:
        bad.append("runAsUser 0")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        bad.append(f"seccompProfile.type must be RuntimeDefault or Localhost, got {seccomp}")
    if sc.get("procMount", "Default") != "Default":
        bad.append("procMount")
    for port in c.get("ports") or []:
        if port.get("hostPort"):
            bad.append(f"hostPort {port['hostPort']}")
    return bad
