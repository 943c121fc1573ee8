"""The controller against the real API server, with the node stand-in running its Jobs (faults stand in
for the stages: exit codes and termination messages exactly as the trainer/evaluator would leave them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from run_support import godrun_body

from godrun.controller.kube import KubeApi, KubeExecutor
from godrun.controller.loop import Controller, LoopConfig
from godrun.core.machine import Polling
from godrun.core.metrics import ControllerMetrics
from godrun.spec import Verdict
from k8s.node import Fault

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "godruns.godrun.io.yaml"
G, V, P = "godrun.io", "v1alpha1", "godruns"


@pytest.fixture(scope="session")
def godrun_crd(k8s_cluster) -> None:
    k8s_cluster.apply_crd(CRD)


def start_controller(cluster, namespace: str) -> Controller:
    api = KubeApi.from_client(cluster.api_client())
    cfg = LoopConfig(namespace=namespace, workers=1, resync_seconds=3, watch_timeout_seconds=10, polling=Polling(1, 1))
    ctrl = Controller(api, KubeExecutor(api, progress="off", identity="test"), ControllerMetrics(), cfg)
    ctrl.start()
    return ctrl


@pytest.fixture
def controller(k8s_cluster, k8s_namespace, godrun_crd) -> Iterator[Controller]:
    ctrl = start_controller(k8s_cluster, k8s_namespace)
    yield ctrl
    ctrl.shutdown()


def create_run(cluster, ns: str, name: str, **spec) -> dict:
    body = godrun_body(name, **spec)
    return client.CustomObjectsApi(cluster.api_client()).create_namespaced_custom_object(G, V, ns, P, body)


def wait_phase(cluster, ns: str, name: str, phases: set[str], timeout: float = 90.0) -> dict:
    custom = client.CustomObjectsApi(cluster.api_client())
    deadline = time.monotonic() + timeout
    obj: dict = {}
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(G, V, ns, P, name)
        if (obj.get("status") or {}).get("phase") in phases:
            return obj
        time.sleep(0.3)
    raise TimeoutError(f"{name} never reached {phases}; status {obj.get('status')}")


def jobs_of(cluster, ns: str, run: str) -> list:
    batch = client.BatchV1Api(cluster.api_client())
    return batch.list_namespaced_job(ns, label_selector=f"godrun.io/run={run}").items


def verdict_json(passed: bool) -> str:
    gates = [{"name": g, "passed": passed or g != "roi"} for g in ("aggregate", "tail", "roi", "downstream")]
    v = Verdict.model_validate(
        {
            "verdict": "pass" if passed else "fail",
            "psnrMean": 21.5,
            "samMean": 7.0,
            "gates": gates,
            "failedGates": [] if passed else ["roi"],
            "lineage": {"bestCheckpoint": "checkpoints/god_run/mamba_tiny_uv_best.pt"},
        }
    )
    return v.model_dump_json(by_alias=True, exclude_none=True)


def test_run_ships_with_owned_jobs_conditions_and_events(k8s_cluster, k8s_namespace, k8s_node, controller):
    k8s_node.add_fault(Fault(job="ship-train-g1", attempt=None, exit_code=0))
    k8s_node.add_fault(Fault(job="ship-evaluate-g1", attempt=None, exit_code=0, message=verdict_json(True)))
    run = create_run(k8s_cluster, k8s_namespace, "ship")
    obj = wait_phase(k8s_cluster, k8s_namespace, "ship", {"Shipped", "Error", "Failed-ActB"})
    st = obj["status"]
    assert st["phase"] == "Shipped", st
    assert st["panel"]["psnrMean"] == 21.5 and st["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in st["conditions"]}["GatesPassed"] == "True"
    jobs = jobs_of(k8s_cluster, k8s_namespace, "ship")
    assert sorted(j.metadata.name for j in jobs) == ["ship-evaluate-g1", "ship-train-g1"]
    for j in jobs:
        (ref,) = j.metadata.owner_references
        assert (ref.kind, ref.uid, ref.controller) == ("GodRun", run["metadata"]["uid"], True)
    time.sleep(2)  # a few more resyncs: still no twins
    assert len(jobs_of(k8s_cluster, k8s_namespace, "ship")) == 2
    events = client.CoreV1Api(k8s_cluster.api_client()).list_namespaced_event(k8s_namespace).items
    reasons = {e.reason for e in events if e.involved_object.name == "ship"}
    assert {"TrainingStarted", "EvaluationStarted", "Shipped"} <= reasons


def test_exit_2_is_error_without_retry(k8s_cluster, k8s_namespace, k8s_node, controller):
    k8s_node.add_fault(Fault(job="bad-train-g1", attempt=None, exit_code=2, message="manifest_train.csv: row 3"))
    create_run(k8s_cluster, k8s_namespace, "bad", jobs={"backoffLimit": 4})
    st = wait_phase(k8s_cluster, k8s_namespace, "bad", {"Error", "Shipped", "Failed-ActB"})["status"]
    assert (st["phase"], st["reason"]) == ("Error", "BadInput"), st
    assert len(k8s_node.pod_runs("bad-train-g1")) == 1, "exit 2 must not be retried"


def test_failed_gates_launch_act_b_child(k8s_cluster, k8s_namespace, k8s_node, controller):
    k8s_node.add_fault(Fault(job="fb-train-g1", attempt=None, exit_code=0))
    k8s_node.add_fault(Fault(job="fb-evaluate-g1", attempt=None, exit_code=0, message=verdict_json(False)))
    k8s_node.add_fault(Fault(job="fb-actb-*", attempt=None, hang=True))
    parent = create_run(k8s_cluster, k8s_namespace, "fb", fallback={"launchActB": True})
    st = wait_phase(k8s_cluster, k8s_namespace, "fb", {"Failed-ActB", "Error", "Shipped"})["status"]
    assert st["phase"] == "Failed-ActB" and st["actB"] == "fb-actb", st
    child = client.CustomObjectsApi(k8s_cluster.api_client()).get_namespaced_custom_object(
        G, V, k8s_namespace, P, "fb-actb"
    )
    assert child["metadata"]["ownerReferences"][0]["uid"] == parent["metadata"]["uid"]
    assert child["spec"]["training"]["init_checkpoint"] == "checkpoints/god_run/mamba_tiny_uv_best.pt"
    assert child["spec"]["training"]["calibrator_head"] is True
    wait_phase(k8s_cluster, k8s_namespace, "fb-actb", {"Training"})


def test_restart_finds_jobs_and_spec_change_starts_new_generation(k8s_cluster, k8s_namespace, k8s_node, godrun_crd):
    k8s_node.add_fault(Fault(job="rs-train-*", attempt=None, hang=True))
    ctrl = start_controller(k8s_cluster, k8s_namespace)
    try:
        create_run(k8s_cluster, k8s_namespace, "rs")
        wait_phase(k8s_cluster, k8s_namespace, "rs", {"Training"})
    finally:
        ctrl.shutdown()
    ctrl = start_controller(k8s_cluster, k8s_namespace)  # a fresh process: only the API objects remain
    try:
        time.sleep(3)
        assert [j.metadata.name for j in jobs_of(k8s_cluster, k8s_namespace, "rs")] == ["rs-train-g1"]
        custom = client.CustomObjectsApi(k8s_cluster.api_client())
        # spec.training is immutable (a new recipe is a new GodRun); the image is not
        custom.patch_namespaced_custom_object(G, V, k8s_namespace, P, "rs", {"spec": {"image": "godrun:next"}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = sorted(j.metadata.name for j in jobs_of(k8s_cluster, k8s_namespace, "rs"))
            st = custom.get_namespaced_custom_object(G, V, k8s_namespace, P, "rs").get("status") or {}
            if names == ["rs-train-g2"] and st.get("observedGeneration") == 2:
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"jobs {names}, status {st}")
    finally:
        ctrl.shutdown()


def test_crd_rejects_cross_field_violations_with_field_messages(k8s_cluster, k8s_namespace, godrun_crd):
    with pytest.raises(ApiException) as err:
        create_run(k8s_cluster, k8s_namespace, "cel", training={"lr": 1e-4, "lr_min": 1e-3})
    assert err.value.status == 422 and "lr_min must be <= lr" in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:
        create_run(k8s_cluster, k8s_namespace, "img", image="")
    assert err.value.status == 422
