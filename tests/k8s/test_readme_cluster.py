"""The README's cluster try-out on the real node ends Shipped: the run's Jobs completed under the real Job
controller and kubelet, `kubectl get gr` shows it with its columns, its outputs are on the volume the PV controller
bound, and the Helm release's controller replicas are Ready with one leader (tests/k8s/readme_cluster.py runs
the README's lines)."""

from __future__ import annotations

import json

import pytest

from k8s.readme_cluster import NS, RUN, ReadmeCluster, kubectl

pytestmark = pytest.mark.node


def test_readme_cluster_block_ends_shipped(readme_cluster: ReadmeCluster) -> None:
    gr = json.loads(kubectl("get", "gr", RUN, "-n", NS, "-o", "json").stdout)
    status = gr["status"]
    assert status["phase"] == "Shipped", status
    assert status["panel"]["verdict"] == "pass" and not status["panel"].get("failedGates"), status["panel"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Succeeded"] == "True" and conditions.get("Failed", "False") == "False"
    table = kubectl("get", "gr", "-n", NS).stdout.splitlines()
    header = table[0].split()
    assert header[:6] == ["NAME", "PHASE", "VERDICT", "PSNR", "SAM", "EPOCH"], table
    rows = [dict(zip(header, line.split(), strict=False)) for line in table[1:]]
    row = next(r for r in rows if r["NAME"] == RUN)
    assert row["PHASE"] == "Shipped" and row["VERDICT"] == "pass", table
    # a run shorter than the progress poll: its epochs come from the trainer's termination message
    assert int(row["EPOCH"]) == gr["spec"]["training"]["epochs"] == status["progress"]["epoch"], table
    assert float(row["PSNR"]) >= gr["spec"]["gates"]["psnrMeanMin"]


def test_the_run_used_the_volume_bound_by_the_pv_controller(readme_cluster: ReadmeCluster) -> None:
    pvc = json.loads(kubectl("get", "pvc", "godrun-workspace", "-n", NS, "-o", "json").stdout)
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == "godrun-workspace-pv"
    for rel in (
        "data/validation_panel.csv",
        "checkpoints/prod/Track_H_fold_02/mamba_tiny_uv_best.pt",
        "checkpoints/god_run/mamba_tiny_uv_best.pt",
        "logs/god_run/metrics.csv",
        "final_analytics/panel_eval/gates.json",
        "final_analytics/panel_eval/report.html",
    ):
        assert (readme_cluster.volume / rel).is_file(), f"{rel} not on the volume"
    gates = json.loads((readme_cluster.volume / "final_analytics/panel_eval/gates.json").read_text())
    assert gates["failed_gates"] == [] and gates["summary"]["verdict"] == "pass", gates["summary"]


def test_training_and_evaluation_ran_as_jobs_of_the_real_controllers(readme_cluster: ReadmeCluster) -> None:
    jobs = json.loads(kubectl("get", "jobs", "-n", NS, "-o", "json").stdout)["items"]
    stages = {
        j["metadata"]["labels"].get("godrun.io/stage"): j for j in jobs if j["metadata"]["labels"].get("godrun.io/run")
    }
    assert {"train", "evaluate"} <= set(stages), sorted(stages)
    for job in stages.values():
        conditions = {c["type"]: c["status"] for c in job["status"].get("conditions", [])}
        assert conditions.get("Complete") == "True", job["status"]
        assert job["metadata"]["ownerReferences"][0]["kind"] == "GodRun"
    pods = json.loads(kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {readme_cluster.node.name}


def test_controller_replicas_ready_and_one_leader(readme_cluster: ReadmeCluster) -> None:
    deploy = json.loads(kubectl("get", "deployment", "godrun", "-n", NS, "-o", "json").stdout)
    assert deploy["status"].get("readyReplicas") == deploy["spec"]["replicas"] == 2, deploy["status"]
    selector = "app.kubernetes.io/component=controller"
    pods = json.loads(kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json").stdout)["items"]
    lease = json.loads(kubectl("get", "lease", "godrun-controller", "-n", NS, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] in {p["metadata"]["name"] for p in pods}
