"""The Prometheus harness: a real server scrapes a metrics endpoint on loopback and answers PromQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tools import require_tool

from k8s.cluster import free_port
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
