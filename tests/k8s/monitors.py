"""The chart's ServiceMonitor and PodMonitor as plain Prometheus scrape configs, rendered the way the Prometheus
Operator renders them, so Debian's Prometheus scrapes on the node what a cluster's Prometheus would, with the same
labels: keep-relabels for the monitor's selector and port, the Operator's target labels (namespace, service, pod,
container, endpoint, job), then the monitor's own relabelings.

    monitors = chart_monitors("godrun", "godrun")    # `helm template` of the chart with both monitors enabled
    with KubernetesDiscovery(node.api_client(), monitors, prom_dir) as sd:
        PrometheusServer(..., [scrape_config(m, sd.file(m), "1s") for m in monitors], ...)

Debian builds Prometheus without its Kubernetes service discovery (the package's NEWS.Debian: "Kubernetes support
has been completely removed"), so `kubernetes_sd_configs` is refused. KubernetesDiscovery stands in for that one
part: it polls the API server and writes, for Prometheus's file discovery, the targets and `__meta_kubernetes_*`
labels that Prometheus's own discovery gives (role pod for a PodMonitor: one target per declared container port
of a pod with an IP; role endpointslice for a ServiceMonitor: one per ready address and port, with the Service's
and the backing pod's labels). Selection, relabelling and scraping are Prometheus's own.

Only the fields the chart uses are understood; any other field is an error, so a new monitor setting in the chart
cannot be silently dropped here.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "godrun"
MONITOR_KINDS = ("ServiceMonitor", "PodMonitor")
SPEC_KEYS = {"namespaceSelector", "selector", "endpoints", "podMetricsEndpoints"}
ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings"}
RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}
META = "__meta_kubernetes_"


def chart_monitors(release: str, namespace: str) -> list[dict[str, Any]]:
    """The ServiceMonitor and PodMonitor objects of `helm template` of the chart with both enabled."""
    helm = require_tool("helm", "make cluster-bin")
    enable = ["--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.podMonitor.enabled=true"]
    argv = [helm, "template", release, str(CHART), "-n", namespace, *enable]
    rendered = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in MONITOR_KINDS]


def _meta(name: str) -> str:
    """A Kubernetes label or annotation name as Prometheus's service discovery spells it in meta labels."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _unknown(where: str, got: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(got) - known)
    if extra:
        raise ValueError(f"{where}: {extra} not understood by tests/k8s/monitors.py")


def _is_pod_monitor(monitor: dict[str, Any]) -> bool:
    return monitor["kind"] == "PodMonitor"


def _endpoint(monitor: dict[str, Any]) -> dict[str, Any]:
    """The monitor's one endpoint, after checking that it and the spec hold only fields understood here."""
    where, spec = f"{monitor['kind']} {monitor['metadata']['name']}", monitor["spec"]
    _unknown(f"{where} spec", spec, SPEC_KEYS)
    _unknown(f"{where} selector", spec.get("selector") or {}, {"matchLabels"})
    _unknown(f"{where} namespaceSelector", spec.get("namespaceSelector") or {}, {"matchNames", "any"})
    (endpoint,) = spec["podMetricsEndpoints"] if _is_pod_monitor(monitor) else spec["endpoints"]
    _unknown(f"{where} endpoint", endpoint, ENDPOINT_KEYS)
    return endpoint


def namespaces(monitor: dict[str, Any]) -> list[str] | None:
    """The namespaces the monitor watches (None: all), as the Operator reads namespaceSelector."""
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return None
    return list(selector.get("matchNames") or [monitor["metadata"]["namespace"]])


# -- scrape configs ----------------------------------------------------------------------------------------


def _relabel(rule: dict[str, Any]) -> dict[str, Any]:
    _unknown("relabeling", rule, set(RELABEL_KEYS))
    out = {RELABEL_KEYS[k]: v for k, v in rule.items()}
    if "action" in out:
        out["action"] = out["action"].lower()
    return out


def _label(source: str, target: str) -> dict[str, Any]:
    return {"source_labels": [source], "target_label": target}


def _keep_label(owner: str, key: str, value: str) -> dict[str, Any]:
    """Keep targets whose pod or service carries label `key` = `value` (a selector's matchLabels entry)."""
    meta = f"{META}{owner}_label"
    return {
        "source_labels": [f"{meta}_{_meta(key)}", f"{meta}present_{_meta(key)}"],
        "regex": f"({re.escape(str(value))});true",
        "action": "keep",
    }


def scrape_config(monitor: dict[str, Any], sd_file: Path, interval: str | None = None) -> dict[str, Any]:
    """One scrape config for a monitor, its targets from `sd_file`; `interval` overrides its interval and timeout."""
    meta, endpoint = monitor["metadata"], _endpoint(monitor)
    pod = _is_pod_monitor(monitor)
    owner, port_label = ("pod", "pod_container_port_name") if pod else ("service", "endpointslice_port_name")
    selector = monitor["spec"].get("selector", {}).get("matchLabels") or {}
    relabel: list[dict[str, Any]] = [
        {"source_labels": [f"{META}pod_phase"], "regex": "(Failed|Succeeded)", "action": "drop"},
        *(_keep_label(owner, k, v) for k, v in selector.items()),
        {"source_labels": [f"{META}{port_label}"], "regex": endpoint["port"], "action": "keep"},
        _label(f"{META}namespace", "namespace"),
        _label(f"{META}pod_name", "pod"),
        _label(f"{META}pod_container_name", "container"),
    ]
    if pod:
        relabel.append({"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"})
    else:
        relabel += [_label(f"{META}service_name", target) for target in ("service", "job")]
    relabel.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    relabel += [_relabel(r) for r in endpoint.get("relabelings") or []]
    kind = monitor["kind"]
    return {
        "job_name": f"{kind[0].lower()}{kind[1:]}/{meta['namespace']}/{meta['name']}/0",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "scrape_interval": interval or endpoint["interval"],
        "scrape_timeout": interval or endpoint["scrapeTimeout"],
        "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": "1s"}],
        "relabel_configs": relabel,
    }


# -- discovery ---------------------------------------------------------------------------------------------


def _object_labels(role: str, metadata: dict[str, Any]) -> dict[str, str]:
    out = {}
    for kind, values in (("label", metadata.get("labels")), ("annotation", metadata.get("annotations"))):
        for key, value in (values or {}).items():
            out[f"{META}{role}_{kind}_{_meta(key)}"] = value
            out[f"{META}{role}_{kind}present_{_meta(key)}"] = "true"
    return out


def _pod_labels(pod: dict[str, Any]) -> dict[str, str]:
    meta, status = pod["metadata"], pod.get("status") or {}
    return {
        f"{META}namespace": meta["namespace"],
        f"{META}pod_name": meta["name"],
        f"{META}pod_ip": status.get("podIP", ""),
        f"{META}pod_phase": status.get("phase", ""),
        f"{META}pod_node_name": pod["spec"].get("nodeName", ""),
        f"{META}pod_uid": meta["uid"],
        **_object_labels("pod", meta),
    }


def pod_targets(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Role pod: a target per declared container port of a pod that has an IP."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return []
    base, out = _pod_labels(pod), []
    for container in pod["spec"]["containers"]:
        for port in container.get("ports") or []:
            labels = base | {
                f"{META}pod_container_name": container["name"],
                f"{META}pod_container_port_name": port.get("name", ""),
                f"{META}pod_container_port_number": str(port["containerPort"]),
                f"{META}pod_container_port_protocol": port.get("protocol", "TCP"),
            }
            out.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": labels})
    return out


def _container_of(pod: dict[str, Any] | None, port: int) -> str:
    containers = pod["spec"]["containers"] if pod else []
    ports = ((c["name"], p["containerPort"]) for c in containers for p in c.get("ports") or [])
    return next((name for name, number in ports if number == port), "")


def endpointslice_targets(
    eps: dict[str, Any], services: dict[str, dict[str, Any]], pods: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Role endpointslice: a target per address and port, with its Service's and its backing pod's labels."""
    meta = eps["metadata"]
    service_name = (meta.get("labels") or {}).get("kubernetes.io/service-name", "")
    service = services.get(service_name)
    base = {
        f"{META}namespace": meta["namespace"],
        f"{META}endpointslice_name": meta["name"],
        **({f"{META}service_name": service_name, **_object_labels("service", service["metadata"])} if service else {}),
    }
    out = []
    for port in eps.get("ports") or []:
        for endpoint in eps.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            pod = pods.get(ref.get("name", "")) if ref.get("kind") == "Pod" else None
            ready = str((endpoint.get("conditions") or {}).get("ready", True)).lower()
            labels = base | {
                f"{META}endpointslice_port_name": port.get("name", ""),
                f"{META}endpointslice_port_number": str(port["port"]),
                f"{META}endpointslice_endpoint_conditions_ready": ready,
                **(_pod_labels(pod) | {f"{META}pod_container_name": _container_of(pod, port["port"])} if pod else {}),
            }
            out += [{"targets": [f"{address}:{port['port']}"], "labels": labels} for address in endpoint["addresses"]]
    return out


class KubernetesDiscovery:
    """Polls the API server every `period` seconds and keeps one file_sd file per monitor current (temp + rename)."""

    def __init__(self, api_client: Any, monitors: Iterable[dict[str, Any]], folder: Path, period: float = 1.0) -> None:
        self.api_client, self.monitors, self.folder, self.period = api_client, list(monitors), Path(folder), period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubernetes-sd", daemon=True)
        self.error: BaseException | None = None

    def file(self, monitor: dict[str, Any]) -> Path:
        return self.folder / f"{monitor['kind']}-{monitor['metadata']['name']}.json"

    def __enter__(self) -> KubernetesDiscovery:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.refresh()  # the files exist before Prometheus reads its configuration
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.refresh()
            except Exception as err:  # kept for the test to report; the next poll retries
                self.error = err

    def _targets(self, monitor: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        from kubernetes import client

        def items(call: Any) -> list[dict[str, Any]]:
            return json.loads(call(namespace, _preload_content=False).data)["items"]

        core = client.CoreV1Api(self.api_client)
        pods = items(core.list_namespaced_pod)
        if _is_pod_monitor(monitor):
            return [t for pod in pods for t in pod_targets(pod)]
        services = {s["metadata"]["name"]: s for s in items(core.list_namespaced_service)}
        slices = items(client.DiscoveryV1Api(self.api_client).list_namespaced_endpoint_slice)
        by_name = {p["metadata"]["name"]: p for p in pods}
        return [t for eps in slices for t in endpointslice_targets(eps, services, by_name)]

    def refresh(self) -> None:
        for monitor in self.monitors:
            names = namespaces(monitor)
            if names is None:
                raise ValueError(f"{monitor['metadata']['name']}: namespaceSelector any is not discovered here")
            groups = [t for ns in names for t in self._targets(monitor, ns)]
            path = self.file(monitor)
            text = json.dumps(groups, indent=1, sort_keys=True)
            if not path.exists() or path.read_text() != text:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(path)
