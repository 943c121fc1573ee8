"""A run's life on the real node, after the README's block (tests/k8s/readme_cluster.py) left the release, the
CPU images and the filled volume: failed gates -> Failed-ActB with its Act B child; bad input (exit 2) -> the Job
fails through its podFailurePolicy, never retried; an evicted training pod (the API's Eviction, which marks it
DisruptionTarget) and a deleted controller leader mid-training -> the run resumes from its last checkpoint with
no lost epoch and no twin Job; a deleted GodRun -> the garbage collector removes its Jobs and pods.

Every run is the README's CPU GodRun (`kubectl kustomize manifests/run-cpu`) under another name, with its own
checkpoint, log and output folders, changed only where the scenario needs it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from k8s.readme_cluster import NS, ReadmeCluster, apply, cpu_godrun, get, items, kubectl, phase_in, wait_for

pytestmark = pytest.mark.node


def epochs_done(volume: Path, name: str) -> list[int]:
    path = volume / "logs" / name / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_failed_gates_archive_document_and_launch_act_b(readme_cluster: ReadmeCluster) -> None:
    name = "gates-fail"
    apply(cpu_godrun(name, gates={"psnrMeanMin": 60.0}, fallback={"launchActB": True, "actB": {"epochs": 1}}))
    status = wait_for("Failed-ActB", phase_in(name, {"Failed-ActB", "Shipped", "Error"}))
    assert status["phase"] == "Failed-ActB", status
    assert status["panel"]["verdict"] == "fail" and "aggregate" in status["panel"]["failedGates"], status["panel"]
    assert status["actB"] == f"{name}-actb"
    child = get(f"{name}-actb")
    assert child["metadata"]["ownerReferences"][0]["uid"] == get(name)["metadata"]["uid"]
    assert child["spec"]["training"]["calibrator_head"] is True
    assert child["spec"]["training"]["init_checkpoint"] == f"checkpoints/{name}/mamba_tiny_uv_best.pt"
    assert (readme_cluster.volume / f"final_analytics/{name}.md").is_file(), "failure document"
    assert status.get("archive") and (readme_cluster.volume / status["archive"]).is_dir(), status.get("archive")
    wait_for("the Act B child's training Job", lambda: items("jobs", f"godrun.io/run={name}-actb"))

    # The GodRun deleted: the garbage collector removes its child run, their Jobs and their pods.
    kubectl("delete", "gr", name, "-n", NS, "--wait=false")
    for kind in ("godruns", "jobs", "pods"):
        for run in (name, f"{name}-actb"):
            wait_for(f"{kind} of {run} collected", lambda k=kind, r=run: not items(k, f"godrun.io/run={r}"), 120)
    assert kubectl("get", "gr", f"{name}-actb", "-n", NS, check=False).returncode != 0


def test_bad_input_fails_the_job_by_its_pod_failure_policy_without_retry(readme_cluster: ReadmeCluster) -> None:
    name = "bad-input"
    apply(cpu_godrun(name, {"train_manifest": "data/spectra_for_fold/no_such_manifest.csv"}))
    status = wait_for("Error", phase_in(name, {"Error", "Shipped", "Failed-ActB"}))
    assert (status["phase"], status["reason"]) == ("Error", "BadInput"), status
    assert "no_such_manifest.csv" in status["message"], status["message"]
    (job,) = items("jobs", f"godrun.io/run={name}")
    failed = {c["type"]: c for c in job["status"]["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "PodFailurePolicy", failed
    pods = items("pods", f"job-name={job['metadata']['name']}")
    assert len(pods) == 1, "exit 2 is not retried"
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2


@pytest.fixture(scope="module")
def disrupted(readme_cluster: ReadmeCluster) -> dict[str, Any]:
    """A longer run whose training pod is evicted after its 2nd epoch and whose leader is deleted after that."""
    from kubernetes import client

    name = "disrupted"
    apply(cpu_godrun(name, {"epochs": 8}))
    volume = readme_cluster.volume
    wait_for("epoch 2 written", lambda: len(epochs_done(volume, name)) >= 2, 600, 1.0)
    (pod,) = [p for p in items("pods", f"godrun.io/run={name}") if p["status"].get("phase") == "Running"]
    core = client.CoreV1Api(readme_cluster.node.api_client())
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod["metadata"]["name"], namespace=NS))
    core.create_namespaced_pod_eviction(pod["metadata"]["name"], NS, body)
    evicted_at = len(epochs_done(volume, name))

    def replacement() -> dict[str, Any] | None:
        running = [p for p in items("pods", f"godrun.io/run={name}") if p["status"].get("phase") == "Running"]
        return next((p for p in running if p["metadata"]["uid"] != pod["metadata"]["uid"]), None)

    second = wait_for("the replacement training pod", replacement, 300, 1.0)
    leader = get("godrun-controller", "lease")["spec"]["holderIdentity"]
    kubectl("delete", "pod", leader, "-n", NS, "--wait=false")
    wait_for("a new leader", lambda: get("godrun-controller", "lease")["spec"]["holderIdentity"] != leader, 120)
    status = wait_for("the disrupted run's verdict", phase_in(name, {"Shipped", "Failed-ActB", "Error"}), 900)
    return {"name": name, "status": status, "evicted": pod, "second": second, "evicted_at": evicted_at}


def test_evicted_training_resumes_from_the_last_checkpoint_with_no_lost_epoch(
    readme_cluster: ReadmeCluster, disrupted: dict[str, Any]
) -> None:
    name, status = disrupted["name"], disrupted["status"]
    assert status["phase"] == "Shipped", status
    epochs = epochs_done(readme_cluster.volume, name)
    assert epochs == list(range(1, 9)), f"every epoch once, in order: {epochs}"
    (job,) = items("jobs", f"godrun.io/run={name},godrun.io/stage=train")
    assert job["status"].get("failed", 0) == 0, "the disruption is ignored by the pod failure policy"
    log = (readme_cluster.volume / "logs" / name / "train.log").read_text()
    assert "resum" in log.lower(), "the second pod resumed from a checkpoint"


def test_controller_leader_deleted_mid_training_leaves_no_twin_jobs(disrupted: dict[str, Any]) -> None:
    name = disrupted["name"]
    jobs = items("jobs", f"godrun.io/run={name}")
    stages = sorted(j["metadata"]["labels"]["godrun.io/stage"] for j in jobs)
    assert stages == ["evaluate", "train"], [j["metadata"]["name"] for j in jobs]
