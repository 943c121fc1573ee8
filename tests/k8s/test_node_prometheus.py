"""A real Prometheus (Debian's) inside the node's network namespace scrapes the Helm release's controller pods and a
GodRun's training pod over the pod network, selected and labelled as a cluster's Prometheus does it: the chart's
ServiceMonitor and PodMonitor rendered into scrape configs as the Prometheus Operator renders them, their targets
the pods and EndpointSlices of the node's API server (tests/k8s/monitors.py; a poller writes them for Prometheus's
file discovery because Debian's build has no Kubernetes discovery). A new run of the README's CPU GodRun trains and
evaluates to Shipped while it scrapes; then every query of the Grafana dashboard returns data for that run, every
alert rule loads and evaluates without error, the panel PSNR and the final epoch Prometheus holds are the ones in
the GodRun's status, and the series come from the pods' addresses on the pod network.

`promtool check rules` itself runs in tests/test_deploy_monitoring.py (no cluster needed).
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest
from tools import require_tool

from k8s.kubenode import POD_CIDR
from k8s.monitors import KubernetesDiscovery, chart_monitors, scrape_config
from k8s.prometheus import RULES, PrometheusServer, concrete
from k8s.readme_cluster import FINAL, NS, ReadmeCluster, apply, cpu_godrun, items, phase_in, wait_for

pytestmark = pytest.mark.node

RELEASE = "godrun"  # the README's `helm install godrun ...`
RUN = "scraped"
EPOCHS = 3  # of the README's CPU recipe: the trainer lives long enough for several 1 s scrapes (5-11 with 2 epochs)
CONTROLLER_PODS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=controller"


def on_pod_network(instance: str) -> bool:
    host = instance.rsplit(":", 1)[0]
    return ipaddress.ip_address(host) in ipaddress.ip_network(POD_CIDR)


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    return require_tool("prometheus", "Debian package `prometheus`; `make test` installs it")


def test_prometheus_scrapes_the_pods_and_every_dashboard_query_returns_data(
    readme_cluster: ReadmeCluster, prometheus_bin: str, tmp_path: Path
) -> None:
    node, started = readme_cluster.node, time.monotonic()
    monitors = chart_monitors(RELEASE, NS)
    assert sorted(m["kind"] for m in monitors) == ["PodMonitor", "ServiceMonitor"], monitors
    discovery = KubernetesDiscovery(node.api_client(), monitors, tmp_path / "targets")
    configs = [scrape_config(m, discovery.file(m), interval="1s") for m in monitors]
    prom = PrometheusServer(
        tmp_path / "prometheus", configs, [RULES], binary=prometheus_bin, netns=node.netns, address=node.node_ip
    )
    with discovery, prom:
        controllers = {
            p["status"]["podIP"]: p["metadata"]["name"]
            for p in items("pods", CONTROLLER_PODS)
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        }
        prom.wait_for(f'up{{job="{RELEASE}"}} == 1', lambda r: len(r) == len(controllers), timeout=60)

        apply(cpu_godrun(RUN, {"epochs": EPOCHS}))
        status = wait_for(f"{RUN} final", phase_in(RUN, FINAL), timeout=900)
        assert status["phase"] == "Shipped", status
        sel = f'namespace="{NS}", godrun="{RUN}"'

        # the controller's series: from a controller pod's metrics port, the panel PSNR the status carries
        (psnr,) = prom.wait_for(f"godrun_panel_psnr_mean_decibels{{{sel}}}", timeout=30)
        labels = psnr["metric"]
        ip, port = labels["instance"].rsplit(":", 1)
        assert labels["job"] == RELEASE and on_pod_network(labels["instance"]), labels
        assert (port, labels["pod"]) == ("8080", controllers.get(ip)), (labels, controllers)  # controller.metricsPort
        assert float(psnr["value"][1]) == pytest.approx(status["panel"]["psnrMean"], rel=1e-12, abs=1e-12)
        prom.wait_for(f'godrun_run_phase{{{sel}, phase="Shipped"}} == 1', timeout=30)
        prom.wait_for(f"godrun_run_progress_epoch{{{sel}}} == {status['progress']['epoch']}", timeout=30)
        assert status["progress"]["epoch"] == EPOCHS, status["progress"]

        # the trainer's series: from the training pod (rank 0) on the pod network, labelled by the PodMonitor
        (pod,) = items("pods", f"godrun.io/run={RUN},godrun.io/stage=train")
        (epoch,) = prom.result(f"last_over_time(godrun_train_epoch{{{sel}}}[10m])")
        labels = epoch["metric"]
        assert labels["instance"] == f"{pod['status']['podIP']}:9090" and on_pod_network(labels["instance"]), labels
        assert (labels["job"], labels["pod"], labels["generation"]) == (
            f"{NS}/{RELEASE}-trainer",
            pod["metadata"]["name"],
            "1",
        ), labels
        # the trainer exits right after its last epoch, often before the next scrape: seen up to that one
        assert 1 <= float(epoch["value"][1]) <= EPOCHS, epoch

        # the trainer is gone: its panels are evaluated at the last instant it was scraped
        t_train, n_train = prom.last_sample_time(f"godrun_train_epoch{{{sel}}}")
        assert n_train >= 2, f"the trainer was scraped {n_train} time(s); rate() needs two"
        failures = prom.dashboard_failures(NS, RUN, lambda expr: t_train if "godrun_train_" in expr else None)
        assert not failures, "\n".join(failures)

        # the dashboard's variables (Grafana's label_values) find the run
        code, body = prom.api("label/namespace/values", [("match[]", "godrun_run_phase")])
        assert code == 200 and NS in body["data"], body
        match = concrete('godrun_run_phase{namespace=~"$namespace"}', NS, RUN)
        code, body = prom.api("label/godrun/values", [("match[]", match)])
        assert code == 200 and RUN in body["data"], body

        # every rule loaded and evaluates without error; no run alert fires for this shipped run
        rules = prom.evaluated_rules()
        assert all(r["health"] == "ok" for _, r in rules), [(r["name"], r.get("lastError")) for _, r in rules]
        firing = [
            (r["name"], a["labels"])
            for _, r in rules
            for a in r.get("alerts", [])
            if a["labels"].get("godrun") == RUN and a["state"] == "firing"
        ]
        assert not firing, firing
        assert discovery.error is None, discovery.error
    print(f"\nprometheus test: {time.monotonic() - started:.0f} s; trainer scraped {n_train} times", flush=True)
