"""The Prometheus harness: a real server scrapes a metrics endpoint on loopback and answers PromQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tools import require_tool

from godrun.testcluster import free_port
from k8s.prometheus import PrometheusServer, ScrapeTarget, promtool


@pytest.fixture(autouse=True)
def _prometheus_installed() -> None:
    require_tool("prometheus", "Debian package `prometheus`; `make test` installs it")


def test_scrape_and_query(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("godrun_panel_psnr_mean_decibels", "probe", ["namespace", "godrun"], registry=registry)
    gauge.labels("ns1", "r1").set(21.25)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n- name: probe\n  rules:\n  - alert: PsnrLow\n"
        "    expr: godrun_panel_psnr_mean_decibels < 30\n    labels: {severity: warning}\n"
    )
    assert promtool("check", "rules", str(rules)).returncode == 0
    try:
        target = ScrapeTarget("probe", f"127.0.0.1:{port}", {"namespace": "ignored"}, honor_labels=True)
        with PrometheusServer(tmp_path / "prom", [target], [rules]) as prom:
            [sample] = prom.wait_for('godrun_panel_psnr_mean_decibels{godrun="r1"}')
            assert float(sample["value"][1]) == 21.25
            assert (sample["metric"]["namespace"], sample["metric"]["job"]) == ("ns1", "probe")  # honor_labels
            assert set(prom.health().values()) == {"up"}
            code, body = prom.query("sum(godrun_panel_psnr_mean_decibels")
            assert code == 400 and body["errorType"] == "bad_data"
            with pytest.raises(RuntimeError, match="rejected"):
                prom.result("sum(godrun_panel_psnr_mean_decibels")
            alerts = prom.wait_for('ALERTS{alertname="PsnrLow"}')
            assert alerts[0]["metric"]["godrun"] == "r1"
    finally:
        server.shutdown()
        thread.join(5)


def _trainer_pod(name: str, port: int, phase: str = "Running", index: str | None = None) -> dict:
    """A training pod as the API serves it (labels of godrun/controller/jobs.py), its metrics port on loopback."""
    labels = {
        "app.kubernetes.io/name": "godrun",
        "app.kubernetes.io/managed-by": "godrun-controller",
        "godrun.io/stage": "train",
        "godrun.io/run": "r1",
        "godrun.io/generation": "3",
    }
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": index}
    return {
        "metadata": {"name": name, "namespace": "godrun", "uid": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "trainer", "ports": [{"name": "metrics", "containerPort": port}]}]},
        "status": {"podIP": "127.0.0.1", "phase": phase},
    }


def test_the_charts_pod_monitor_keeps_rank_0_and_labels_its_series_by_run(tmp_path: Path) -> None:
    """The PodMonitor as tests/k8s/monitors.py renders it: only running rank-0 training pods are scraped, and
    their series get the run's `godrun`, `generation` and `namespace`, the Operator's `job`, `pod` and `container`."""
    from k8s.monitors import KubernetesDiscovery, chart_monitors, pod_targets, scrape_config

    (monitor,) = [m for m in chart_monitors("godrun", "godrun") if m["kind"] == "PodMonitor"]
    registry = CollectorRegistry()
    Gauge("godrun_train_epoch", "probe", registry=registry).set(2)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    pods = [
        _trainer_pod("rank0", port, index="0"),
        _trainer_pod("rank1", port, index="1"),
        _trainer_pod("single", port),
        _trainer_pod("done", port, phase="Succeeded"),
    ]
    sd = KubernetesDiscovery(None, [monitor], tmp_path / "targets")
    sd.folder.mkdir()
    sd.file(monitor).write_text(json.dumps([t for pod in pods for t in pod_targets(pod)]))
    try:
        with PrometheusServer(tmp_path / "prom", [scrape_config(monitor, sd.file(monitor), "1s")]) as prom:
            series = prom.wait_for("godrun_train_epoch", lambda r: len(r) == 2)
    finally:
        server.shutdown()
        thread.join(5)
    labels = sorted((s["metric"] for s in series), key=lambda m: m["pod"])
    common = {"namespace": "godrun", "godrun": "r1", "generation": "3", "container": "trainer", "endpoint": "metrics"}
    assert [m["pod"] for m in labels] == ["rank0", "single"], labels
    for m in labels:
        assert m | common == m and m["job"] == "godrun/godrun-trainer" and m["instance"] == f"127.0.0.1:{port}", m
