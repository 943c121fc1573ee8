"""A real Prometheus (Debian's package) for tests: scrape given targets, query its HTTP API; and the PromQL of
the shipped dashboard and alert rules, ready to run.

targets = [ScrapeTarget("godrun-controller", "127.0.0.1:9101", {"namespace": "godrun-system"}, True)]
with PrometheusServer(tmp / "prom", targets, [rules_yaml]) as prom:
    prom.wait_for('godrun_panel_psnr_mean_decibels{godrun="r1"}')
    code, body = prom.query("sum(godrun_run_phase)")

A target is a ScrapeTarget (one static address) or a whole scrape config as a dict (e.g. kubernetes_sd_configs,
tests/k8s/monitors.py). With `netns`, the server runs inside that network namespace (a KubeNode's, where the pod
network is routed) and listens on `address`, which must be reachable from here (the node's veth address).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tools import find_tool, require_tool

from godrun.testcluster import Process, free_port, in_netns

__all__ = [
    "PrometheusServer",
    "ScrapeTarget",
    "concrete",
    "dashboard_queries",
    "free_port",
    "prometheus_binary",
    "promtool",
    "rule_exprs",
]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "monitoring" / "dashboard.json"
RULES = ROOT / "manifests" / "monitoring" / "rules.yaml"
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
NETNS_PORT = 9090  # Prometheus's own default port: free in a network namespace the tests made


def prometheus_binary() -> str | None:
    return find_tool("prometheus")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = require_tool("promtool", "Debian package `prometheus`; `make test` installs it")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


@dataclass
class ScrapeTarget:
    """One scrape job: `job` becomes the job label; `labels` are target labels (as a Service/PodMonitor adds)."""

    job: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    honor_labels: bool = False
    interval: str | None = None  # this job's scrape interval (default: the server's)

    def config(self, interval: str) -> dict:
        static = {"targets": [self.address], **({"labels": self.labels} if self.labels else {})}
        every = self.interval or interval
        return {"job_name": self.job, "scrape_interval": every, "scrape_timeout": every,
                "honor_labels": self.honor_labels, "static_configs": [static]}  # fmt: skip


class PrometheusServer:
    def __init__(self, root: Path, targets: Sequence[ScrapeTarget | dict], rule_files: Sequence[Path] = (),
                 binary: str | None = None, interval: str = "1s", netns: str | None = None,
                 address: str = "127.0.0.1") -> None:  # fmt: skip
        self.root, self.targets, self.rule_files = Path(root), list(targets), [Path(p) for p in rule_files]
        self.binary, self.interval = binary or prometheus_binary(), interval
        self.netns, self.address = netns, address
        self.port = 0
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def _scrape_configs(self) -> list[dict]:
        return [t.config(self.interval) if isinstance(t, ScrapeTarget) else t for t in self.targets]

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        if self.binary is None:
            raise FileNotFoundError("prometheus not installed (apt-get install prometheus)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(p.resolve()) for p in self.rule_files],
            "scrape_configs": self._scrape_configs(),
        }
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = NETNS_PORT if self.netns else free_port()
        argv = [*(in_netns(self.netns) if self.netns else ()), self.binary,
                f"--config.file={self.root / 'prometheus.yml'}", f"--storage.tsdb.path={self.root / 'tsdb'}",
                f"--web.listen-address={self.address}:{self.port}", "--log.level=warn"]  # fmt: skip
        log = self.root / "prometheus.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.process = Process("prometheus", popen, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise RuntimeError(f"prometheus exited with {popen.returncode}:\n{self.process.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus not ready after {timeout:.0f}s")

    def stop(self) -> None:
        if self.process:
            self.process.stop(grace=5.0)
            self.process = None

    def api(self, path: str, params: Sequence[tuple[str, str]] = ()) -> tuple[int, dict]:
        """GET /api/v1/<path>; (HTTP status, parsed body) — errors such as a PromQL parse error included."""
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(list(params))}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, {"status": "error", "error": raw.decode(errors="replace")}

    def query(self, expr: str, at: float | None = None) -> tuple[int, dict]:
        params = [("query", expr)] + ([("time", f"{at:.3f}")] if at is not None else [])
        return self.api("query", params)

    def result(self, expr: str, at: float | None = None) -> list[dict]:
        """The result of an instant query; raises when Prometheus rejects it."""
        code, body = self.query(expr, at)
        if code != 200 or body.get("status") != "success":
            raise RuntimeError(f"prometheus rejected {expr!r} (HTTP {code}): {body.get('error')}")
        return body["data"]["result"]

    def wait_for(self, expr: str, until: Callable[[list[dict]], bool] | None = None,
                 timeout: float = 30.0) -> list[dict]:  # fmt: skip
        """Query until the result is non-empty (and `until(result)` holds); scrapes are periodic."""
        deadline, result = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            result = self.result(expr)
            if result and (until is None or until(result)):
                return result
            time.sleep(0.5)
        raise TimeoutError(f"no data for {expr!r} after {timeout:.0f}s (last {result}; targets {self.health()})")

    def health(self) -> dict[str, str]:
        code, body = self.api("targets")
        return {t["scrapeUrl"]: t["health"] for t in body["data"]["activeTargets"]} if code == 200 else {}

    def last_sample_time(self, selector: str) -> tuple[float, int]:
        """Timestamp of the newest sample of `selector` (one series) in the last 10 minutes, and how many there are."""
        (series,) = self.result(f"{selector}[10m]")
        values = series["values"]
        return float(values[-1][0]), len(values)

    def dashboard_failures(self, namespace: str, godrun: str, at: Callable[[str], float | None]) -> list[str]:
        """Every dashboard query for this run, evaluated at `at(expr)` (None: now): what does not run, or returns
        nothing but NaN (an empty panel); and every alert rule expression that does not run."""
        failures = []
        for title, raw in dashboard_queries():
            expr = concrete(raw, namespace, godrun)
            when = at(expr)
            code, body = self.query(expr, when)
            if code != 200 or body.get("status") != "success":
                failures.append(f"{title}: does not run (HTTP {code}: {body.get('error')}): {expr}")
            elif not any(math.isfinite(float(s["value"][1])) for s in body["data"]["result"]):
                where = f" at {when:.3f}" if when is not None else ""
                failures.append(f"{title}: no data{where}: {expr} -> {body['data']['result']}")
        for alert, expr in rule_exprs():
            code, body = self.query(expr)
            if code != 200 or body.get("status") != "success":
                failures.append(f"rule {alert}: does not run (HTTP {code}: {body.get('error')}): {expr}")
        return failures

    def evaluated_rules(self, timeout: float = 30.0) -> list[tuple[str, dict]]:
        """(group, rule) of every loaded rule once each has been evaluated; fails unless all of RULES loaded."""

        def settled(_: list) -> bool:
            loaded = [r for g in self.api("rules")[1]["data"]["groups"] for r in g["rules"]]
            return len(loaded) == len(rule_exprs()) and all(r.get("lastEvaluation", "").startswith("2") for r in loaded)

        self.wait_for("vector(1)", settled, timeout=timeout)
        return [(g["name"], r) for g in self.api("rules")[1]["data"]["groups"] for r in g["rules"]]


# --------------------------------------------------------------------------- PromQL of the shipped manifests


def dashboard_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, expr) of every target of the Grafana dashboard."""
    dash = json.loads(path.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def rule_exprs(path: Path = RULES) -> list[tuple[str, str]]:
    """(alert or record name, expr) of every rule of the Prometheus rule file."""
    groups = yaml.safe_load(path.read_text())["groups"]
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
