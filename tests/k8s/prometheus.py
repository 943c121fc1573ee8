"""A real Prometheus (Debian's package) on loopback for tests: scrape given targets, query its HTTP API.

targets = [ScrapeTarget("godrun-controller", "127.0.0.1:9101", {"namespace": "godrun-system"}, True)]
with PrometheusServer(tmp / "prom", targets, [rules_yaml]) as prom:
    prom.wait_for('godrun_panel_psnr_mean_decibels{godrun="r1"}')
    code, body = prom.query("sum(godrun_run_phase)")
"""

from __future__ import annotations

import json
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

from k8s.cluster import Process, free_port

__all__ = ["PrometheusServer", "ScrapeTarget", "free_port", "prometheus_binary", "promtool"]


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
    def __init__(self, root: Path, targets: Sequence[ScrapeTarget], rule_files: Sequence[Path] = (),
                 binary: str | None = None, interval: str = "1s") -> None:  # fmt: skip
        self.root, self.targets, self.rule_files = Path(root), list(targets), [Path(p) for p in rule_files]
        self.binary, self.interval = binary or prometheus_binary(), interval
        self.port = 0
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
            "scrape_configs": [t.config(self.interval) for t in self.targets],
        }
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        argv = [self.binary, f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn"]  # fmt: skip
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
