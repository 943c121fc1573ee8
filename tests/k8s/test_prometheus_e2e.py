"""A real Prometheus scrapes `godrun controller` (a subprocess) and the training process while a tiny GodRun
runs through the node stand-in to Shipped; then every PromQL expression of the Grafana dashboard and of the
alert rules runs against it: each must parse, the dashboard's must return data, the rules must load and
evaluate without error, and the panel PSNR Prometheus holds must be the one in the GodRun's status.

`promtool check rules` itself runs in tests/test_deploy_monitoring.py (no cluster needed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from run_support import LENIENT_GATES, TRAINER_PORT, godrun_body, python_with_port, stop_process, tiny_training
from tools import require_tool

from k8s.cluster import Cluster
from k8s.node import NodeStandIn
from k8s.prometheus import PrometheusServer, ScrapeTarget, free_port

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "crd" / "godruns.godrun.io.yaml"
DASHBOARD = ROOT / "manifests" / "monitoring" / "dashboard.json"
RULES = ROOT / "manifests" / "monitoring" / "rules.yaml"
G, V, P = "godrun.io", "v1alpha1", "godruns"
RUN = "prom"
CLAIM = "workspace"
FINAL = {"Shipped", "Failed-ActB", "Error"}
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    return require_tool("prometheus", "Debian package `prometheus`; `make test` installs it")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class ControllerProcess:
    """`godrun controller` as its own process, as in a cluster (no leader election: one replica)."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.metrics_port, self.health_port, self.log = free_port(), free_port(), log
        argv = [
            sys.executable,
            "-m",
            "godrun",
            "controller",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            "--no-leader-elect",
            "--workers=2",
            "--resync-seconds=5",
            "--progress-seconds=1",
            "--progress-source=direct",
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with log.open("wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"controller exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"controller not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        stop_process(self.popen)


def wait_final(custom: client.CustomObjectsApi, ns: str, node: NodeStandIn, ctrl: ControllerProcess) -> dict:
    deadline, obj = time.monotonic() + 300, {}
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(G, V, ns, P, RUN)
        if (obj.get("status") or {}).get("phase") in FINAL:
            return obj
        assert not node.errors, node.errors
        assert ctrl.popen.poll() is None, ctrl.tail()
        time.sleep(0.5)
    raise TimeoutError(f"{RUN} not final; status {obj.get('status')}\ncontroller:\n{ctrl.tail()}")


# --------------------------------------------------------------------------- PromQL of the manifests


def dashboard_targets() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in groups for r in g["rules"]]


def concrete(expr: str, namespace: str, godrun: str) -> str:
    """Grafana template variables -> values (the dashboard's multi-value vars are used with =~)."""
    for var, value in GRAFANA_RANGES.items():
        expr = expr.replace(var, value)
    for name, value in (("namespace", namespace), ("godrun", godrun)):
        value = value.replace(".", r"\\.")  # a regex-escaped dot inside a PromQL string (DNS names: [a-z0-9.-])
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unreplaced template variable in {expr}"
    return expr


def last_sample_time(prom: PrometheusServer, selector: str) -> tuple[float, int]:
    """Timestamp of the newest sample of `selector` in the last 10 minutes, and how many samples there are."""
    (series,) = prom.result(f"{selector}[10m]")
    values = series["values"]
    return float(values[-1][0]), len(values)


# --------------------------------------------------------------------------- the test


@pytest.fixture
def workspace(small_corpus: Path, tmp_path: Path) -> Path:
    work = tmp_path / "workspace"
    shutil.copytree(small_corpus / "data", work / "data")
    return work


@pytest.fixture
def controller_process(k8s_cluster: Cluster, k8s_namespace: str, tmp_path: Path) -> Iterator[ControllerProcess]:
    k8s_cluster.apply_crd(CRD)
    ctrl = ControllerProcess(k8s_cluster.kubeconfig, k8s_namespace, tmp_path / "controller.log")
    try:
        ctrl.wait_ready()
        yield ctrl
    finally:
        ctrl.stop()


def test_prometheus_scrapes_a_run_and_every_dashboard_and_rule_query_works(
    prometheus_bin: str, k8s_cluster: Cluster, k8s_namespace: str, controller_process, workspace: Path, tmp_path
) -> None:
    ns, ctrl = k8s_namespace, controller_process
    trainer_port, skipped = TRAINER_PORT, {}
    python = None
    if not port_is_free(TRAINER_PORT):  # a shared machine: keep the run, lose only the controller's progress view
        trainer_port = free_port()
        python = str(python_with_port(tmp_path, trainer_port))
        skipped["Training progress (controller view)"] = f"port {TRAINER_PORT} busy on this host: trainer moved"
    targets = [
        # as the chart's ServiceMonitor: target namespace = the controller's, honor_labels keeps the run's
        ScrapeTarget("godrun-controller", f"127.0.0.1:{ctrl.metrics_port}", {"namespace": "godrun-system"}, True),
        # as the chart's PodMonitor: the pod's namespace, `godrun` and `generation` from the pod labels;
        # scraped four times a second, and 10 epochs (a few seconds on a quiet machine, where 3 epochs took
        # 1.2 s and were sometimes scraped once or never), so that a fast run leaves the samples rate() needs
        ScrapeTarget(
            "godrun-trainer",
            f"127.0.0.1:{trainer_port}",
            {"namespace": ns, "godrun": RUN, "generation": "1"},
            interval="250ms",
        ),
    ]
    custom = client.CustomObjectsApi(k8s_cluster.api_client())
    node = NodeStandIn(k8s_cluster.api_client(), ns, tmp_path / "node", python=python, volume_dirs={CLAIM: workspace})
    with PrometheusServer(tmp_path / "prometheus", targets, [RULES], binary=prometheus_bin) as prom, node:
        custom.create_namespaced_custom_object(
            G, V, ns, P, godrun_body(RUN, data={"claimName": CLAIM}, training=tiny_training(10), gates=LENIENT_GATES)
        )
        obj = wait_final(custom, ns, node, ctrl)
        status = obj["status"]
        assert status["phase"] == "Shipped", json.dumps(status, indent=1)[:3000]
        sel = f'namespace="{ns}", godrun="{RUN}"'

        # the panel PSNR Prometheus scraped is the one the status carries
        psnr = prom.wait_for(f"godrun_panel_psnr_mean_decibels{{{sel}}}", timeout=20)
        assert len(psnr) == 1 and psnr[0]["metric"]["job"] == "godrun-controller", psnr
        assert float(psnr[0]["value"][1]) == pytest.approx(status["panel"]["psnrMean"], rel=1e-12, abs=1e-12)
        prom.wait_for(f'godrun_run_phase{{{sel}, phase="Shipped"}} == 1', timeout=20)

        # the trainer is gone: its panels are evaluated at the last instant it was scraped
        t_train, n_train = last_sample_time(prom, f"godrun_train_epoch{{{sel}}}")
        assert n_train >= 2, f"the trainer was scraped {n_train} time(s); rate() needs two"

        failures: list[str] = []
        for title, raw in dashboard_targets():
            if title in skipped:
                continue
            expr = concrete(raw, ns, RUN)
            at = t_train if "godrun_train_" in expr else None
            code, body = prom.query(expr, at)
            if code != 200 or body.get("status") != "success":
                failures.append(f"{title}: does not run (HTTP {code}: {body.get('error')}): {expr}")
            elif not body["data"]["result"]:
                failures.append(f"{title}: no data{' at the last trainer scrape' if at else ''}: {expr}")
        for alert, expr in rule_exprs():
            code, body = prom.query(expr)
            if code != 200 or body.get("status") != "success":
                failures.append(f"rule {alert}: does not run (HTTP {code}: {body.get('error')}): {expr}")
        assert not failures, "\n".join(failures) + f"\nskipped: {skipped}"

        # the dashboard's variables (Grafana's label_values) find the run
        code, body = prom.api("label/namespace/values", [("match[]", "godrun_run_phase")])
        assert code == 200 and ns in body["data"], body
        code, body = prom.api("label/godrun/values", [("match[]", f'godrun_run_phase{{namespace=~"{ns}"}}')])
        assert code == 200 and RUN in body["data"], body

        # Prometheus loaded every rule, evaluates it without error, and no run alert fires for a shipped run
        def rules_settled(_: list) -> bool:
            groups = prom.api("rules")[1]["data"]["groups"]
            loaded = [r for g in groups for r in g["rules"]]
            return len(loaded) == len(rule_exprs()) and all(r.get("lastEvaluation", "").startswith("2") for r in loaded)

        prom.wait_for("vector(1)", rules_settled, timeout=20)
        rules = [(g["name"], r) for g in prom.api("rules")[1]["data"]["groups"] for r in g["rules"]]
        assert all(r["health"] == "ok" for _, r in rules), [(r["name"], r.get("lastError")) for _, r in rules]
        firing = [r["name"] for g, r in rules if g == "godrun.runs" and r["state"] == "firing"]
        assert not firing, firing
    print(f"trainer scraped {n_train} times; dashboard panels skipped: {skipped or 'none'}")
