"""The node stand-in against the real apiserver: the status it writes must pass the server's Job/Pod validation."""

from __future__ import annotations

from kubernetes import client

from k8s.node import Fault, NodeStandIn

POLICY = {
    "rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
}


def job_body(
    name: str,
    command: list[str],
    *,
    backoff_limit: int = 2,
    policy: dict | None = POLICY,
    deadline: int | None = None,
    env: dict[str, str] | None = None,
) -> client.V1Job:
    container = {
        "name": "main",
        "image": "godrun/trainer:test",
        "command": command,
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "volumeMounts": [{"name": "run", "mountPath": "/workspace"}],
        "workingDir": "/workspace",
    }
    spec = {
        "backoffLimit": backoff_limit,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": [{"name": "run", "persistentVolumeClaim": {"claimName": "run"}}],
            }
        },
    }
    if policy:
        spec["podFailurePolicy"] = policy
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    return client.V1Job.from_dict({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})


def run_job(node: NodeStandIn, ns: str, body: client.V1Job, timeout: float = 60) -> dict:
    node.batch.create_namespaced_job(ns, body)
    return node.wait_for_job(ns, body.metadata.name, timeout)


def conditions(status: dict) -> list[tuple[str, str]]:
    return [(c["type"], c["reason"]) for c in status["conditions"]]


def pods_of(node: NodeStandIn, ns: str, job: str) -> list[dict]:
    """The Job's pods from the apiserver, in attempt order (creationTimestamp has only second resolution)."""
    pods = node.core.list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={job}")
    attempt = {run.name: run.attempt for run in node.pod_runs(job)}
    found = [node.api_client.sanitize_for_serialization(p) for p in pods.items]
    assert sorted(p["metadata"]["name"] for p in found) == sorted(attempt), "apiserver and stand-in disagree"
    return sorted(found, key=lambda p: attempt[p["metadata"]["name"]])


def test_success_writes_pod_and_job_status_like_the_controllers(k8s_node: NodeStandIn, k8s_namespace: str) -> None:
    code = "import os; open(os.environ['GODRUN_TERMINATION_LOG'], 'w').write('{\"verdict\": \"ok\"}'); print('hi')"
    status = run_job(k8s_node, k8s_namespace, job_body("hello", ["python", "-c", code]))
    assert conditions(status) == [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")]
    assert status["succeeded"] == 1 and status.get("failed", 0) == 0 and status.get("active", 0) == 0
    assert status["completionTime"] == status["conditions"][1]["lastTransitionTime"] >= status["startTime"]
    [pod] = pods_of(k8s_node, k8s_namespace, "hello")
    job = k8s_node.batch.read_namespaced_job("hello", k8s_namespace)
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Job", "hello", job.metadata.uid, True)
    assert pod["metadata"]["name"].startswith("hello-")
    assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == job.metadata.uid
    assert pod["metadata"]["labels"]["job-name"] == "hello"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Succeeded"
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (
        0,
        "Completed",
        '{"verdict": "ok"}',
    )
    [run] = k8s_node.pod_runs("hello")
    assert run.output.read_text().strip() == "hi"


def test_exit_2_fails_the_job_without_retry(k8s_node: NodeStandIn, k8s_namespace: str) -> None:
    status = run_job(k8s_node, k8s_namespace, job_body("bad-input", ["python", "-c", "raise SystemExit(2)"]))
    assert conditions(status) == [("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")]
    assert "failed with exit code 2 matching FailJob rule at index 0" in status["conditions"][1]["message"]
    assert status["failed"] == 1 and "completionTime" not in status
    [pod] = pods_of(k8s_node, k8s_namespace, "bad-input")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 2


def test_other_failures_retry_up_to_backoff_limit(k8s_node: NodeStandIn, k8s_namespace: str) -> None:
    status = run_job(k8s_node, k8s_namespace, job_body("flaky", ["python", "-c", "raise SystemExit(3)"]))
    assert conditions(status) == [("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
    assert status["failed"] == 3  # backoffLimit 2: the third failure exceeds it
    assert len(pods_of(k8s_node, k8s_namespace, "flaky")) == 3


def test_retry_then_success_and_volume_persists(k8s_node: NodeStandIn, k8s_namespace: str) -> None:
    """A forced exit 1 counts against backoffLimit; the retry writes into the claim's folder (mount rewrite)."""
    k8s_node.add_fault(Fault(job="retry-ok", attempt=0, exit_code=1, message="boom"))
    code = "import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(); p.write_text('written')"
    status = run_job(k8s_node, k8s_namespace, job_body("retry-ok", ["python", "-c", code, "/workspace/out/x.txt"]))
    assert conditions(status)[-1] == ("Complete", "CompletionsReached")
    assert (status["failed"], status["succeeded"]) == (1, 1)
    first, second = pods_of(k8s_node, k8s_namespace, "retry-ok")
    assert first["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "boom"
    assert second["status"]["phase"] == "Succeeded"
    assert (k8s_node.volume_dir(k8s_namespace, "run") / "out" / "x.txt").read_text() == "written"


def test_disruption_is_ignored_and_the_pod_replaced(k8s_node: NodeStandIn, k8s_namespace: str) -> None:
    k8s_node.add_fault(Fault(job="disrupted", attempt=0, disrupt_after=0.5))
    code = "import sys, time; time.sleep(float(sys.argv[1]))"
    status = run_job(k8s_node, k8s_namespace, job_body("disrupted", ["python", "-c", code, "1.5"]))
    assert conditions(status)[-1] == ("Complete", "CompletionsReached")
    assert status.get("failed", 0) == 0  # Ignore: not counted against backoffLimit
    first, second = pods_of(k8s_node, k8s_namespace, "disrupted")
    disruption = [c for c in first["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert disruption and disruption[0]["status"] == "True"
    assert first["status"]["phase"] == "Failed" and second["status"]["phase"] == "Succeeded"


def test_hung_pod_hits_the_active_deadline(k8s_node: NodeStandIn, k8s_namespace: str) -> None:
    k8s_node.add_fault(Fault(job="hung", attempt=None, hang=True))
    status = run_job(k8s_node, k8s_namespace, job_body("hung", ["python", "-c", "print('never')"], deadline=2))
    assert conditions(status) == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]
    [pod] = pods_of(k8s_node, k8s_namespace, "hung")
    assert pod["status"]["phase"] == "Failed"
    [run] = k8s_node.pod_runs("hung")
    assert run.output.read_text() == ""  # stopped before it could print
