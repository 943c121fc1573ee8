"""A run's spec edited while it trains, and the controller around its runs, on the real node after the README's
block (tests/k8s/readme_cluster.py): `spec.image` changed mid-training -> a new generation whose Job replaces the
old one and resumes from the last checkpoint; `spec.suspend` true then false -> the Job deleted, then created
again, resuming; the controller leader deleted while a run is Evaluating -> no twin evaluate Job, the evaluation
ran once; the controller, as the chart's ServiceAccount, is never refused by the API; a shipped run's Events
and `kubectl get gr` columns; one replica reports itself leader.

The two runs are the README's CPU GodRun under other names (their own folders), applied at once."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from k8s.kubenode import KubeNode
from k8s.readme_cluster import (
    CONTROLLER_PODS,
    FINAL,
    NS,
    RUN,
    SMALL,
    ReadmeCluster,
    apply,
    cpu_godrun,
    delete_leader,
    epochs_done,
    epochs_trained_twice,
    events_of,
    get,
    items,
    kubectl,
    leader,
    patch_spec,
    phase_in,
    resumed_at,
    wait_for,
)

pytestmark = pytest.mark.node

EDITED, EDITED_EPOCHS = "edited", 16  # enough epochs that both edits land while it trains
EVAL_KILL = "eval-kill"
NEXT_IMAGE = "ghcr.io/godrun/godrun-trainer:0.1.1-cpu"  # the same image under a second tag: a new release
# An API refusal as the client logs it ("(403)", "status 403", "Forbidden"); not a timestamp's ",403" millis.
REFUSED = re.compile(r"\(403\)|\b(?:status|code|HTTP)[ =:]*403\b|[Ff]orbidden")


def _train_jobs(name: str) -> list[dict[str, Any]]:
    return items("jobs", f"godrun.io/run={name},godrun.io/stage=train")


def _running_pod(name: str, job: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        pods = items("pods", f"godrun.io/run={name},job-name={job}")
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)

    return check


def _edit(node: KubeNode, volume: Path, name: str) -> dict[str, Any]:
    """Change the image after epoch 2, suspend once the new generation resumed, then clear suspend."""
    out: dict[str, Any] = {}
    wait_for("epoch 2 written", lambda: len(epochs_done(volume, name)) >= 2, 600, 0.5)
    node.ctr("images", "tag", "--force", get(name)["spec"]["image"], NEXT_IMAGE)
    (first,) = [j["metadata"]["name"] for j in _train_jobs(name)]
    patch_spec(name, {"image": NEXT_IMAGE})

    def second_generation() -> str | None:
        names = [j["metadata"]["name"] for j in _train_jobs(name)]
        generation = (get(name).get("status") or {}).get("observedGeneration")
        return names[0] if generation == 2 and len(names) == 1 and names[0] != first else None

    second = wait_for("the new generation's training Job", second_generation, 120, 0.5)
    out["image"] = {"first": first, "second": second}
    pod = wait_for("its training pod", _running_pod(name, second), 120, 0.5)
    out["image"]["pod_image"] = pod["spec"]["containers"][0]["image"]
    wait_for("the new generation resumed", lambda: resumed_at(volume, name), 300, 0.5)

    patch_spec(name, {"suspend": True})
    wait_for("the run suspended", lambda: (get(name).get("status") or {}).get("reason") == "Suspended")
    wait_for("its Job and pods gone", lambda: not _train_jobs(name) and not items("pods", f"godrun.io/run={name}"))
    out["suspend"] = {"status": get(name)["status"], "epochs": epochs_done(volume, name)}
    patch_spec(name, {"suspend": False})
    out["status"] = wait_for("the edited run's verdict", phase_in(name, FINAL), 900)
    return out


def _kill_while_evaluating(name: str) -> dict[str, Any]:
    """Delete the controller leader once `name` is Evaluating; keep the deleted pod's log; wait for the verdict."""
    seen = wait_for("Evaluating", phase_in(name, {"Evaluating", *FINAL}), 600, 0.3)
    killed = leader()
    log = kubectl("logs", "-n", NS, killed, check=False).stdout
    delete_leader()
    status = wait_for("the verdict after the leader was deleted", phase_in(name, FINAL), 900)
    return {"phase_at_kill": seen["phase"], "killed": killed, "killed_log": log, "status": status}


@pytest.fixture(scope="module")
def scenarios(readme_cluster: ReadmeCluster) -> dict[str, Future]:
    """Both runs applied at once; each scenario runs beside the tests (it must catch its run at the right moment)."""
    apply(cpu_godrun(EDITED, {"epochs": EDITED_EPOCHS}, resources=SMALL))
    apply(cpu_godrun(EVAL_KILL, {"epochs": 2}, resources=SMALL))
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        EDITED: pool.submit(_edit, readme_cluster.node, readme_cluster.volume, EDITED),
        EVAL_KILL: pool.submit(_kill_while_evaluating, EVAL_KILL),
    }
    pool.shutdown(wait=False)
    return futures


@pytest.fixture(scope="module")
def edited(scenarios: dict[str, Future]) -> dict[str, Any]:
    return scenarios[EDITED].result(timeout=1500)


@pytest.fixture(scope="module")
def eval_kill(scenarios: dict[str, Future]) -> dict[str, Any]:
    return scenarios[EVAL_KILL].result(timeout=1500)


def test_image_edit_mid_training_starts_a_new_generation_that_resumes(
    readme_cluster: ReadmeCluster, edited: dict[str, Any]
) -> None:
    image = edited["image"]
    assert (image["first"], image["second"]) == (f"{EDITED}-train-g1", f"{EDITED}-train-g2"), image
    assert image["pod_image"] == NEXT_IMAGE
    assert "NewGeneration" in {e["reason"] for e in events_of(EDITED)}
    assert edited["status"]["phase"] == "Shipped", edited["status"]
    epochs = epochs_done(readme_cluster.volume, EDITED)
    assert epochs == list(range(1, EDITED_EPOCHS + 1)), f"every epoch once, in order: {epochs}"
    assert not epochs_trained_twice(readme_cluster.volume, EDITED), "the old generation's pod stopped when deleted"


def test_suspend_deletes_the_job_and_clearing_it_resumes_from_the_checkpoint(
    readme_cluster: ReadmeCluster, edited: dict[str, Any]
) -> None:
    suspended = edited["suspend"]
    assert suspended["status"]["phase"] == "Pending", suspended["status"]
    assert 2 <= len(suspended["epochs"]) < EDITED_EPOCHS, f"suspended mid-training: {suspended['epochs']}"
    assert len(resumed_at(readme_cluster.volume, EDITED)) == 2, "both later generations resumed"
    status = edited["status"]
    assert status["phase"] == "Shipped" and status["observedGeneration"] == 4, status
    jobs = sorted(j["metadata"]["name"] for j in items("jobs", f"godrun.io/run={EDITED}"))
    assert jobs == [f"{EDITED}-evaluate-g4", f"{EDITED}-train-g4"], jobs


def test_controller_leader_deleted_while_evaluating_leaves_no_twin_evaluation(eval_kill: dict[str, Any]) -> None:
    assert eval_kill["phase_at_kill"] == "Evaluating", eval_kill
    status = eval_kill["status"]
    assert status["phase"] == "Shipped" and status["observedGeneration"] == 1, status
    (job,) = items("jobs", f"godrun.io/run={EVAL_KILL},godrun.io/stage=evaluate")
    assert job["metadata"]["name"] == f"{EVAL_KILL}-evaluate-g1"
    assert job["status"].get("succeeded") == 1 and job["status"].get("failed", 0) == 0, job["status"]
    assert len(items("pods", f"job-name={job['metadata']['name']}")) == 1, "the evaluation ran once"
    shipped = [e for e in events_of(EVAL_KILL) if e["reason"] == "Shipped"]
    assert sum(e.get("count") or 1 for e in shipped) == 1, "the run shipped more than once"
    runs = [r["metadata"]["name"] for r in items("godruns", f"godrun.io/run={EVAL_KILL}")]
    assert not any(r.endswith("-actb") for r in runs), "no Act B child for a shipped run"


def test_shipped_run_shows_its_columns_conditions_and_events(readme_cluster: ReadmeCluster) -> None:
    status = get(RUN)["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["GatesPassed"] == conditions["Trained"] == conditions["Evaluated"] == "True", conditions
    header, *rows = kubectl("get", "gr", RUN, "-n", NS).stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "VERDICT", "PSNR", "SAM", "EPOCH", "AGE"], header
    row = rows[0].split()
    assert float(row[3]) == pytest.approx(status["panel"]["psnrMean"], rel=1e-3), rows
    assert float(row[4]) == pytest.approx(status["panel"]["samMean"], rel=1e-3), rows
    assert row[5] == str(status["progress"]["epoch"]), rows
    wide = kubectl("get", "gr", RUN, "-n", NS, "-o", "wide").stdout
    assert "REASON" in wide.splitlines()[0] and status["reason"] in wide, wide
    reasons = [e["reason"] for e in events_of(RUN)]
    assert {"TrainingStarted", "EvaluationStarted", "Shipped"} <= set(reasons), reasons
    assert reasons.count("Shipped") == 1, reasons
    described = kubectl("describe", "gr", RUN, "-n", NS).stdout
    assert all(r in described[described.index("Events:") :] for r in ("TrainingStarted", "Shipped")), described


def _metrics(pod: str) -> str:
    return kubectl("get", "--raw", f"/api/v1/namespaces/{NS}/pods/{pod}:8080/proxy/metrics").stdout


def _leader_gauge(text: str) -> float | None:
    found = re.search(r"^godrun_controller_leader(?:\{\})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def test_one_replica_reports_itself_leader_after_a_takeover(eval_kill: dict[str, Any]) -> None:
    kubectl("rollout", "status", "deployment/godrun", "-n", NS, "--timeout=180s")
    pods = [p["metadata"]["name"] for p in items("pods", CONTROLLER_PODS) if not p["metadata"].get("deletionTimestamp")]
    gauges = {pod: _leader_gauge(_metrics(pod)) for pod in pods}
    assert len(gauges) == 2 and set(gauges.values()) == {0.0, 1.0}, gauges
    holder = leader()
    assert gauges[holder] == 1.0 and holder != eval_kill["killed"], (holder, gauges)


def test_the_controller_runs_as_the_charts_service_account_and_is_never_refused(
    edited: dict[str, Any], eval_kill: dict[str, Any]
) -> None:
    pods = items("pods", CONTROLLER_PODS)
    (account,) = {p["spec"]["serviceAccountName"] for p in pods}
    logs = [eval_kill["killed_log"]] + [kubectl("logs", "-n", NS, p["metadata"]["name"]).stdout for p in pods]
    refused = [line for log in logs for line in log.splitlines() if REFUSED.search(line)]
    assert not refused, refused[:5]
    user = f"system:serviceaccount:{NS}:{account}"

    def can(verb: str, resource: str, *extra: str, namespace: str = NS) -> str:
        argv = ("auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={user}")
        return kubectl(*argv, check=False).stdout.strip()

    assert can("create", "jobs.batch") == "yes" and can("update", "godruns.godrun.io", "--subresource=status") == "yes"
    assert can("get", "secrets") == "no", "the chart's Role grants no secrets"
    assert can("list", "godruns.godrun.io", namespace="default") == "no", "the namespaced Role stays in its namespace"
    print(json.dumps({"account": account, "log_lines": sum(len(log.splitlines()) for log in logs)}))


def test_users_bound_to_the_built_in_edit_and_view_roles_may_create_and_read_godruns(
    readme_cluster: ReadmeCluster,
) -> None:
    """The chart's ClusterRoles are aggregated (by the controller manager's aggregation controller) into `edit`
    and `view`: a user with the namespace's ordinary edit RoleBinding creates GodRuns, a viewer only reads."""
    for who, role in (("editor", "edit"), ("viewer", "view")):
        kubectl("create", "rolebinding", f"godrun-test-{who}", f"--clusterrole={role}", f"--user={who}", "-n", NS)

    def can(who: str, verb: str) -> str:
        return kubectl("auth", "can-i", verb, "godruns.godrun.io", "-n", NS, f"--as={who}", check=False).stdout.strip()

    wait_for("edit aggregates godrun-edit", lambda: can("editor", "create") == "yes", 60, 1.0)
    assert can("editor", "patch") == "yes" and can("viewer", "list") == "yes"
    assert can("viewer", "create") == "no" and can("viewer", "delete") == "no"
