"""A run's life on the real node, after the README's block (tests/k8s/readme_cluster.py) left the release, the
CPU images and the filled volume: failed gates -> Failed-ActB with its Act B child; bad input (exit 2) -> the Job
fails through its podFailurePolicy, never retried, also when only rank 1 of a 2-pod Job reads it; an evicted
training pod (the API's Eviction, which marks it DisruptionTarget) and a deleted controller leader mid-training
-> the run resumes from its last checkpoint with no lost epoch and no twin Job; a deleted GodRun -> the garbage
collector removes its Jobs and pods.

Every run is the README's CPU GodRun (`kubectl kustomize manifests/run-cpu`) under another name, with its own
checkpoint, log and output folders, changed only where the scenario needs it."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from k8s.kubenode import KubeNode
from k8s.readme_cluster import (
    FINAL,
    NS,
    SMALL,
    ReadmeCluster,
    apply,
    cpu_godrun,
    delete_leader,
    epochs_done,
    epochs_trained_twice,
    events_of,
    get,
    host_path_pv,
    items,
    kubectl,
    phase_in,
    resumed_at,
    wait_for,
)

pytestmark = pytest.mark.node


def _shared_claim(volume: Path) -> str:
    """A ReadWriteMany claim on the README's volume folder (hostPath can be mounted by every pod of the node)."""
    pv = host_path_pv("godrun-shared-pv", volume, "ReadWriteMany", storage_class="")
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "godrun-shared"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": "godrun-shared-pv",
            "resources": {"requests": {"storage": "100Gi"}},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pv))
    kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(pvc))
    wait_for("the shared claim bound", lambda: get("godrun-shared", "pvc")["status"].get("phase") == "Bound", 60)
    return "godrun-shared"


@pytest.fixture(scope="module")
def runs(readme_cluster: ReadmeCluster) -> Future[dict[str, Any]]:
    """Every scenario's GodRun, applied at once (they run side by side; each test waits for its own); the
    disruption of the `disrupted` run, under way."""
    claim = _shared_claim(readme_cluster.volume)
    scenarios = {
        "gates-fail": cpu_godrun(
            "gates-fail",
            gates={"psnrMeanMin": 60.0},
            fallback={"launchActB": True, "actB": {"epochs": 1}},
            resources=SMALL,
        ),
        "bad-input": cpu_godrun(
            "bad-input", {"train_manifest": "data/spectra_for_fold/no_such_manifest.csv"}, resources=SMALL
        ),
        "disrupted": cpu_godrun("disrupted", {"epochs": 8}, resources=SMALL),
        "ddp": cpu_godrun("ddp", {"epochs": 2}, resources={**SMALL, "nodes": 2}, data={"claimName": claim}),
        "ddp-bad-rank1": _bad_rank_1(readme_cluster.volume, claim),
        # an image the node does not have (and no registry to pull it from)
        "no-image": cpu_godrun(
            "no-image", image="godrun.test/absent:0", resources=SMALL, jobs={"startTimeoutSeconds": 40}
        ),
    }
    for run in scenarios.values():
        apply(run)
    # the disruption must catch the run mid-training whatever test runs first: it runs beside the tests
    pool = ThreadPoolExecutor(max_workers=1)
    result = pool.submit(_disrupt, readme_cluster.node, readme_cluster.volume, "disrupted")
    pool.shutdown(wait=False)
    return result


def _bad_rank_1(volume: Path, claim: str) -> dict[str, Any]:
    """A 2-pod run whose rank 1 alone reads bad input: each rank mounts `inputs-<its completion index>` of the
    volume at `inputs/` (a podOverrides volumeMount with subPathExpr); only inputs-0 holds the manifest."""
    name = "ddp-bad-rank1"
    for rank in (0, 1):
        (volume / f"inputs-{rank}").mkdir(exist_ok=True)
    (volume / "inputs").mkdir(exist_ok=True)
    good = volume / "data/spectra_for_fold/manifest_train.csv"
    (volume / "inputs-0/manifest_train.csv").write_bytes(good.read_bytes())
    mount = {"name": "data", "mountPath": "/workspace/inputs", "subPathExpr": "inputs-$(JOB_COMPLETION_INDEX)"}
    return cpu_godrun(
        name,
        {"epochs": 2, "train_manifest": "inputs/manifest_train.csv"},
        resources={**SMALL, "nodes": 2},
        data={"claimName": claim},
        podOverrides={"volumeMounts": [mount]},
    )


def test_failed_gates_archive_document_and_launch_act_b(
    readme_cluster: ReadmeCluster, runs: Future[dict[str, Any]]
) -> None:
    name = "gates-fail"
    status = wait_for("Failed-ActB", phase_in(name, FINAL))
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


def test_bad_input_fails_the_job_by_its_pod_failure_policy_without_retry(runs: Future[dict[str, Any]]) -> None:
    name = "bad-input"
    status = wait_for("Error", phase_in(name, FINAL))
    assert (status["phase"], status["reason"]) == ("Error", "BadInput"), status
    assert "no_such_manifest.csv" in status["message"], status["message"]
    (job,) = items("jobs", f"godrun.io/run={name}")
    failed = {c["type"]: c for c in job["status"]["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "PodFailurePolicy", failed
    pods = items("pods", f"job-name={job['metadata']['name']}")
    assert len(pods) == 1, "exit 2 is not retried"
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2


def test_bad_input_on_rank_1_of_two_is_never_retried_whichever_rank_ends_last(runs: Future[dict[str, Any]]) -> None:
    """Rank 1 exits 2; rank 0, waiting for it, then ends too (killed with 143 when the Job fails, or its own
    error): the run is BadInput from rank 1's exit, and the Indexed Job is not recreated."""
    name = "ddp-bad-rank1"
    status = wait_for("Error", phase_in(name, FINAL), 600)
    assert (status["phase"], status["reason"], status.get("restarts", 0)) == ("Error", "BadInput", 0), status
    (job,) = items("jobs", f"godrun.io/run={name}")

    def exits() -> dict[str, int | None] | None:
        """Exit code per rank once every pod still there has ended (rank 0 is stopped after the Job fails)."""
        codes = {}
        for p in items("pods", f"job-name={job['metadata']['name']}"):
            state = ((p["status"].get("containerStatuses") or [{}])[0]).get("state") or {}
            codes[p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]] = (
                state.get("terminated") or {}
            ).get("exitCode")
        return codes if None not in codes.values() else None

    codes = wait_for("the ranks ended", exits, 180)
    assert codes.get("1") == 2 and codes.get("0") != 2, codes
    assert len(items("jobs", f"godrun.io/run={name}")) == 1, "the Indexed Job was not recreated"


def test_pods_that_never_start_are_stalled_not_training_then_given_up(runs: Future[dict[str, Any]]) -> None:
    """The kubelet's own waiting reason reaches the run: a PodsNotStarting Warning naming it (the run is Stalled,
    not Training), then, after jobs.startTimeoutSeconds, Error/StartTimeout with the Job deleted. The scenarios
    run side by side, so this reads what the run recorded rather than catching it mid-way."""
    name = "no-image"
    final = wait_for("given up", phase_in(name, FINAL), 600)
    assert (final["phase"], final["reason"]) == ("Error", "StartTimeout"), final
    pulls = ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff")
    assert any(p in final["message"] for p in pulls) and "godrun.test/absent:0" in final["message"], final
    stalled = {c["type"]: c for c in final["conditions"]}["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("False", "StartTimeout")
    (warning,) = [e for e in events_of(name) if e["reason"] == "PodsNotStarting"]
    assert warning["type"] == "Warning" and any(p in warning["message"] for p in pulls), warning["message"]
    wait_for("its Job deleted", lambda: not items("jobs", f"godrun.io/run={name}"), 120)


def _disrupt(node: KubeNode, volume: Path, name: str) -> dict[str, Any]:
    """Evict `name`'s training pod after its 2nd epoch, then delete the controller leader; wait for the verdict."""
    from kubernetes import client

    wait_for("epoch 2 written", lambda: len(epochs_done(volume, name)) >= 2, 600, 0.5)
    (pod,) = [p for p in items("pods", f"godrun.io/run={name}") if p["status"].get("phase") == "Running"]
    core = client.CoreV1Api(node.api_client())
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod["metadata"]["name"], namespace=NS))
    core.create_namespaced_pod_eviction(pod["metadata"]["name"], NS, body)
    evicted_at = len(epochs_done(volume, name))

    def replacement() -> dict[str, Any] | None:
        running = [p for p in items("pods", f"godrun.io/run={name}") if p["status"].get("phase") == "Running"]
        return next((p for p in running if p["metadata"]["uid"] != pod["metadata"]["uid"]), None)

    second = wait_for("the replacement training pod", replacement, 300, 1.0)
    delete_leader()
    status = wait_for("the disrupted run's verdict", phase_in(name, FINAL), 900)
    return {"name": name, "status": status, "evicted": pod, "second": second, "evicted_at": evicted_at}


@pytest.fixture(scope="module")
def disrupted(runs: Future[dict[str, Any]]) -> dict[str, Any]:
    return runs.result(timeout=1200)


def test_evicted_training_resumes_from_the_last_checkpoint_with_no_lost_epoch(
    readme_cluster: ReadmeCluster, disrupted: dict[str, Any]
) -> None:
    name, status = disrupted["name"], disrupted["status"]
    assert status["phase"] == "Shipped", status
    epochs = epochs_done(readme_cluster.volume, name)
    assert epochs == list(range(1, 9)), f"every epoch once, in order: {epochs}"
    assert not epochs_trained_twice(readme_cluster.volume, name), "the evicted pod stopped on its SIGTERM"
    (job,) = items("jobs", f"godrun.io/run={name},godrun.io/stage=train")
    assert job["status"].get("failed", 0) == 0, "the disruption is ignored by the pod failure policy"
    (resumed,) = resumed_at(readme_cluster.volume, name)
    # the evicted pod stopped on its SIGTERM (at most the epoch under way was finished), it did not train on
    # through the grace period
    assert resumed <= disrupted["evicted_at"] + 1, (resumed, disrupted["evicted_at"])
    assert "PodDisrupted" in {e["reason"] for e in events_of(name)}, "the controller saw the DisruptionTarget"


def test_controller_leader_deleted_mid_training_leaves_no_twin_jobs(disrupted: dict[str, Any]) -> None:
    name = disrupted["name"]
    jobs = items("jobs", f"godrun.io/run={name}")
    stages = sorted(j["metadata"]["labels"]["godrun.io/stage"] for j in jobs)
    assert stages == ["evaluate", "train"], [j["metadata"]["name"] for j in jobs]


def test_two_node_ddp_rendezvous_through_the_headless_service_ships(
    readme_cluster: ReadmeCluster, runs: Future[dict[str, Any]]
) -> None:
    """An Indexed Job of 2 pods (both on the one node) whose torchrun ranks meet over gloo at rank 0's DNS name
    under the Job's headless Service (CoreDNS, the pod network), on a ReadWriteMany claim of the same volume."""
    name = "ddp"
    status = wait_for("the DDP run's verdict", phase_in(name, FINAL), 900)
    assert status["phase"] == "Shipped", status
    (job,) = items("jobs", f"godrun.io/run={name},godrun.io/stage=train")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert job["status"].get("succeeded") == 2 and job["status"].get("failed", 0) == 0, job["status"]
    pods = items("pods", f"job-name={job['metadata']['name']}")
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1"]
    audit = (readme_cluster.volume / "logs" / name / "auditing_manifest.log").read_text()
    assert "world_size: 2" in audit.splitlines(), audit[-2000:]
    assert epochs_done(readme_cluster.volume, name) == [1, 2]
