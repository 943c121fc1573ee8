"""manifests/monitoring: the Grafana dashboard and the alert rules use only the project's metrics,
the rule file passes promtool (syntax and alert unit tests) and its copies do not drift."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from deploy_support import (
    CHART,
    CONTROLLER_METRICS,
    DASHBOARD_FILE,
    HISTOGRAMS,
    MANIFESTS,
    RULES_FILE,
    TRAINER_METRICS,
    load_docs,
)
from tools import require_tool

ALLOWED = CONTROLLER_METRICS | TRAINER_METRICS
_METRIC = re.compile(r"\bgodrun_[a-z0-9_]+")
_RANGE_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def _targets(dash: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((panel["title"], t))
    return out


def _metric_names(expr: str) -> set[str]:
    names = set()
    for name in _METRIC.findall(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


def _rules() -> list[dict[str, Any]]:
    return [rule for group in load_docs(RULES_FILE)[0]["groups"] for rule in group["rules"]]


def _promtool() -> str:
    return require_tool("promtool", "Debian package `prometheus`; `make test` installs it")


# --------------------------------------------------------------------------- dashboard


def test_dashboard_uses_only_known_metrics() -> None:
    dash = _dashboard()
    used: set[str] = set()
    for title, target in _targets(dash):
        names = _metric_names(target["expr"])
        assert names, f"{title}: expression without a godrun metric: {target['expr']}"
        assert names <= ALLOWED, f"{title}: unknown metric(s) {sorted(names - ALLOWED)}"
        used |= names
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            assert _metric_names(var["definition"]) <= ALLOWED, var["name"]
    wanted = {
        "godrun_run_phase",
        "godrun_panel_psnr_mean_decibels",
        "godrun_panel_sam_mean_degrees",
        "godrun_train_panel_psnr_mean_decibels",
        "godrun_train_panel_sam_mean_degrees",
        "godrun_train_epoch",
        "godrun_gate_passed",
        "godrun_train_spectra_total",
        "godrun_reconcile_duration_seconds",
        "godrun_reconcile_errors_total",
    }
    assert wanted <= used, f"dashboard misses {sorted(wanted - used)}"


def test_dashboard_key_queries() -> None:
    exprs = " ".join(t["expr"] for _, t in _targets(_dashboard()))
    assert "rate(godrun_train_spectra_total" in exprs and "[5m]" in exprs
    assert "histogram_quantile(0.99, sum by (le) (rate(godrun_reconcile_duration_seconds_bucket[5m])))" in exprs
    assert "godrun_gate_passed" in exprs and "gate" in exprs


def test_dashboard_datasource_is_templated() -> None:
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "godrun"} <= set(variables)
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_layout_is_consistent() -> None:
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def _exposed(text: str) -> set[str]:
    """Metric names in a Prometheus text exposition (`# TYPE` lines; counters as <name>_total)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(f"{name.removesuffix('_total')}_total" if kind == "counter" else name)
    return names


def _controller_exposes() -> set[str]:
    from prometheus_client import generate_latest

    from godrun.core.prometheus import ControllerMetrics

    return _exposed(generate_latest(ControllerMetrics().registry).decode())


def _trainer_exposes() -> set[str]:
    import urllib.request

    from godrun.trainer import telemetry

    prom = telemetry.PromMetrics(0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/metrics", timeout=10) as resp:
            return _exposed(resp.read().decode())
    finally:
        prom.close()


def test_dashboard_and_rules_metrics_are_exposed_by_the_code() -> None:
    """Cross-check against what the controller and the trainer really serve, not only the contract's list."""
    used = set().union(*(_metric_names(t["expr"]) for _, t in _targets(_dashboard())))
    used |= set().union(*(_metric_names(r["expr"]) for r in _rules()))
    controller = _controller_exposes()
    assert used & CONTROLLER_METRICS <= controller, sorted((used & CONTROLLER_METRICS) - controller)
    trainer = _trainer_exposes()
    assert used & TRAINER_METRICS <= trainer, sorted((used & TRAINER_METRICS) - trainer)


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = []
    for i, (_, target) in enumerate(_targets(_dashboard())):
        expr = target["expr"].replace("$namespace", ".*").replace("$godrun", ".*")
        for var, value in _RANGE_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"godrun:dashboard_check:{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------- alert rules


def test_rules_name_the_required_alerts_and_known_metrics() -> None:
    rules = _rules()
    alerts = {r["alert"] for r in rules}
    assert {"GodRunFailed", "GodRunGatesFailed", "GodRunStuckInPhase", "GodRunControllerReconcileErrors"} <= alerts
    for r in rules:
        names = _metric_names(r["expr"])
        assert names and names <= ALLOWED, f"{r['alert']}: {sorted(names - ALLOWED)}"
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert r["annotations"]["summary"]


def test_rule_copies_do_not_drift() -> None:
    groups = load_docs(RULES_FILE)[0]["groups"]
    (cr,) = load_docs(MANIFESTS / "monitoring/prometheusrule.yaml")
    assert cr["kind"] == "PrometheusRule" and cr["spec"]["groups"] == groups
    chart = load_docs(CHART / "files/rules.yaml")[0]["groups"]
    leader = yaml.safe_load(f"groups:\n{(CHART / 'files/rules-leader.yaml').read_text()}")["groups"]
    assert chart + leader == groups and [g["name"] for g in leader] == ["godrun.controller.leader"]


def test_promtool_check_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(RULES_FILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout


def _alert(name: str, at: str, expected: list[dict[str, str]]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": labels} for labels in expected]}


def _promtool_test(tmp_path: Path, cases: list[dict[str, Any]]) -> None:
    # promtool compares annotations too; the copy without them tests the expressions, `for` and labels.
    groups = load_docs(RULES_FILE)[0]["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    spec = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": cases}
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = subprocess.run([_promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _case(series: list[tuple[str, str]], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series],
        "alert_rule_test": alerts,
    }


def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """promtool's rule unit tests: synthetic series in, alerts (and their absence) out."""
    run = {"namespace": "ml"}
    series = [
        ('godrun_run_phase{namespace="ml",godrun="c",phase="Pending"}', "1x40"),
        ('godrun_run_held{namespace="ml",godrun="c"}', "0x40"),
        ('godrun_run_phase{namespace="ml",godrun="d",phase="Training"}', "1x40"),
        ("godrun_reconcile_errors_total", "0+2x40"),
        ('godrun_controller_leader{pod="p0"}', "1x40"),
        ('godrun_controller_leader{pod="p1"}', "0x40"),
    ]
    stuck = {**run, "godrun": "c", "phase": "Pending", "severity": "warning", "stuck_after": "30m"}
    tests = [
        _alert("GodRunStuckInPhase", "20m", []),
        _alert("GodRunStuckInPhase", "35m", [stuck]),
        _alert("GodRunControllerReconcileErrors", "10m", []),
        _alert("GodRunControllerReconcileErrors", "35m", [{"severity": "warning"}]),
        _alert("GodRunControllerNoLeader", "35m", []),
    ]
    no_controller = [("godrun_reconcile_errors_total", "0x40")]  # nothing scraped: the leader alert fires
    _promtool_test(
        tmp_path,
        [
            _case(series, tests),
            _case(no_controller, [_alert("GodRunControllerNoLeader", "15m", [{"severity": "critical"}])]),
        ],
    )


def test_failed_runs_page_once_per_run_not_forever(tmp_path: Path) -> None:
    """The failure alerts follow the finished-runs counter's increase(): they fire after the transition and
    resolve 15 minutes later although the run stays failed; a run with two failed gates is one alert."""
    series = [  # the controller makes each run's series at 0 when it first sees the run
        ('godrun_runs_finished_total{namespace="ml",godrun="a",phase="Error"}', "0x5 1x120"),
        ('godrun_run_phase{namespace="ml",godrun="a",phase="Error"}', "0x5 1x120"),
        ('godrun_runs_finished_total{namespace="ml",godrun="b",phase="Failed-ActB"}', "0x5 1x120"),
        ('godrun_gate_passed{namespace="ml",godrun="b",gate="roi"}', "_x5 0x120"),
        ('godrun_gate_passed{namespace="ml",godrun="b",gate="tail"}', "_x5 0x120"),
        ('godrun_runs_finished_total{namespace="ml",godrun="s",phase="Shipped"}', "0x5 1x120"),
    ]
    a = {"namespace": "ml", "godrun": "a", "severity": "critical"}
    b = {"namespace": "ml", "godrun": "b", "severity": "warning"}
    alerts = [
        _alert("GodRunFailed", "4m", []),
        _alert("GodRunFailed", "8m", [a]),
        _alert("GodRunGatesFailed", "8m", [b]),  # one alert for the run, not one per failed gate
        _alert("GodRunFailed", "60m", []),  # still in phase Error, but it paged already
        _alert("GodRunGatesFailed", "60m", []),
    ]
    _promtool_test(tmp_path, [_case(series, alerts)])


def test_queued_or_suspended_runs_are_not_stuck(tmp_path: Path) -> None:
    series = [
        ('godrun_run_phase{namespace="ml",godrun="q",phase="Pending"}', "1x60"),
        ('godrun_run_held{namespace="ml",godrun="q"}', "1x60"),  # Kueue has not admitted its Job
        ('godrun_run_phase{namespace="ml",godrun="e",phase="Evaluating"}', "1x400"),
        ('godrun_run_held{namespace="ml",godrun="e"}', "1x400"),
    ]
    _promtool_test(
        tmp_path,
        [_case(series, [_alert("GodRunStuckInPhase", "55m", []), _alert("GodRunStuckInPhase", "390m", [])])],
    )


def test_kustomize_monitoring_scrapes_the_controller_and_rank_0() -> None:
    """manifests/monitoring/ (kubectl apply -k) scrapes what the dashboard and the alerts read."""
    kustomization = load_docs(MANIFESTS / "monitoring/kustomization.yaml")[0]
    assert set(kustomization["resources"]) == {"prometheusrule.yaml", "servicemonitor.yaml", "podmonitor.yaml"}
    (sm,) = load_docs(MANIFESTS / "monitoring/servicemonitor.yaml")
    (svc,) = load_docs(MANIFESTS / "controller/service.yaml")
    assert sm["kind"] == "ServiceMonitor" and sm["metadata"]["namespace"] == svc["metadata"]["namespace"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    (pm,) = load_docs(MANIFESTS / "monitoring/podmonitor.yaml")
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    keep = endpoint["relabelings"][0]
    assert keep["action"] == "keep" and re.fullmatch(keep["regex"], "0") and re.fullmatch(keep["regex"], "")
    assert not re.fullmatch(keep["regex"], "1"), "ranks > 0 serve no metrics"
    assert keep["sourceLabels"] == ["__meta_kubernetes_pod_annotation_batch_kubernetes_io_job_completion_index"]
    chart_pm = (CHART / "templates/podmonitor.yaml").read_text()
    assert "__meta_kubernetes_pod_annotation_batch_kubernetes_io_job_completion_index" in chart_pm


def test_a_run_final_at_first_sight_pages_from_the_controllers_own_series(tmp_path: Path) -> None:
    """An InvalidSpec run is Error on the controller's first reconcile: the counter scraped from the real
    ControllerMetrics must still show a step for increase(), and the alert fires once."""
    from godrun.core.prometheus import ControllerMetrics
    from godrun.spec import GodRunStatus

    m = ControllerMetrics()
    m.observe("ml", "bad", GodRunStatus(phase="Error", reason="InvalidSpec", observed_generation=1), GodRunStatus())

    def scrape() -> str:
        for family in m.registry.collect():
            for s in family.samples:
                if s.name == "godrun_runs_finished_total" and s.labels.get("phase") == "Error":
                    return str(int(s.value))
        return "_"

    values = " ".join(scrape() for _ in range(60))  # one scrape a minute
    series = [('godrun_runs_finished_total{namespace="ml",godrun="bad",phase="Error"}', values)]
    fired = [{"namespace": "ml", "godrun": "bad", "severity": "critical"}]
    alerts = [_alert("GodRunFailed", "5m", fired), _alert("GodRunFailed", "40m", [])]
    _promtool_test(tmp_path, [_case(series, alerts)])


def test_training_without_progress_and_stalled_pods_alert(tmp_path: Path) -> None:
    """Training is stuck when its progress stops (2 h), not after 7 days; pods that cannot start alert after 5m."""
    series = [
        ('godrun_run_phase{namespace="ml",godrun="slow",phase="Training"}', "1x300"),
        ('godrun_run_held{namespace="ml",godrun="slow"}', "0x300"),
        ('godrun_run_progress_last_update_timestamp_seconds{namespace="ml",godrun="slow"}', "0x300"),
        ('godrun_run_phase{namespace="ml",godrun="busy",phase="Training"}', "1x300"),
        ('godrun_run_held{namespace="ml",godrun="busy"}', "0x300"),
        ('godrun_run_progress_last_update_timestamp_seconds{namespace="ml",godrun="busy"}', "0+60x300"),
        ('godrun_run_stalled{namespace="ml",godrun="img"}', "0x2 1x30"),
    ]
    stuck = {"namespace": "ml", "godrun": "slow", "phase": "Training", "severity": "warning"}
    stuck["stuck_after"] = "2h-without-progress"
    alerts = [
        _alert("GodRunStuckInPhase", "100m", []),
        _alert("GodRunStuckInPhase", "135m", [stuck]),  # 2 h without progress + 10 m; "busy" never
        _alert("GodRunStalled", "5m", []),
        _alert("GodRunStalled", "8m", [{"namespace": "ml", "godrun": "img", "severity": "warning"}]),
    ]
    _promtool_test(tmp_path, [_case(series, alerts)])
