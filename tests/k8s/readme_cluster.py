"""The README's cluster try-out, run line by line on the real node (tests/k8s/kubenode.py); the session fixture
`readme_cluster` (conftest.py) runs it once, and the tests of the real node's lifecycle build on what it leaves.

Every line of the first code block under "On a cluster (Helm)" runs as written, from the repository root, through
bash with this session's kubectl and helm first on PATH; only `docker build --target T -t TAG .` is carried out by
buildah on the same Dockerfile target and tag (tests/k8s/images.py: no Docker engine here), and the image is
imported into the node's containerd, as a user loads images into their nodes. What the README leaves to the
cluster is provided as a cluster has it: a PersistentVolume (hostPath, owned by the Jobs' UID 1000) for the
claim to bind.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from godrun.testcluster import bin_dir
from k8s.images import dockerfile_image, python_image
from k8s.kubenode import KubeNode

ROOT = Path(__file__).resolve().parents[2]

NS = "godrun"
RUN = "act-of-god"
FINAL = {"Shipped", "Failed-ActB", "Error"}  # the phases a run ends in
LINE_TIMEOUT = 1500.0  # the longest README line is a `kubectl wait --timeout=30m`; a hang fails sooner
LEASE = "godrun-controller"  # the chart's leaderElection.leaseName
CONTROLLER_PODS = "app.kubernetes.io/component=controller"
# Small requests so that the runs of a module's scenarios fit the node's 2 CPUs at once: they start together.
SMALL = {"cpu": "200m", "memory": "2Gi"}


def readme_cluster_lines() -> list[str]:
    """The first ```bash block after the '### On a cluster (Helm)' heading, continuation lines joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### On a cluster (Helm)", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "README: no bash block under 'On a cluster (Helm)'"
    joined = block.group(1).replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _docker_build(node: KubeNode, line: str) -> None:
    argv = shlex.split(line)
    assert argv[:2] == ["docker", "build"] and argv[-1] == ".", f"unexpected docker line: {line}"
    target, tag = argv[argv.index("--target") + 1], argv[argv.index("-t") + 1]
    image = dockerfile_image(node.cache, target, tag, {"PYTHON_IMAGE": python_image(node.cache)})
    print(f"\n{target}: {image.size_mib:.0f} MiB, built in {image.seconds:.0f} s (0 = cached)", flush=True)
    node.import_image(image.archive)


def _shell(node: KubeNode, line: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{bin_dir()}:{os.environ['PATH']}",
        "KUBECONFIG": str(node.cluster.kubeconfig),
        "HOME": str(node.cluster.root),
    }
    t0 = time.monotonic()
    res = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=LINE_TIMEOUT)
    print(f"$ {line}  ({time.monotonic() - t0:.0f} s)\n{res.stdout}", flush=True)
    return res


def host_path_pv(name: str, path: Path, access_mode: str, storage_class: str | None = None) -> dict[str, Any]:
    """A 100Gi hostPath PersistentVolume on the node (a cluster's storage; none ships with the node)."""
    spec: dict[str, Any] = {
        "capacity": {"storage": "100Gi"},
        "accessModes": [access_mode],
        "persistentVolumeReclaimPolicy": "Retain",
        "hostPath": {"path": str(path), "type": "Directory"},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec}


def _volume(node: KubeNode) -> Path:
    """The volume the README's claim binds, owned by the Jobs' UID."""
    path = node.root / "pv-workspace"
    path.mkdir(exist_ok=True)
    os.chown(path, 1000, 1000)
    pv = host_path_pv("godrun-workspace-pv", path, "ReadWriteOnce")
    node.kubectl("apply", "-f", "-", input=json.dumps(pv))
    return path


def kubectl(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    """kubectl against the session's node (the one `kube_node` started); set by run_readme_block."""
    assert _NODE, "the README's cluster block has not run"
    return _NODE[0].kubectl(*args, **kw)


_NODE: list[KubeNode] = []


def diagnostics(node: KubeNode) -> str:
    out = []
    for args in (("get", "gr,jobs,pods,pvc", "-n", NS, "-o", "wide"), ("get", "events", "-n", NS)):
        out.append(node.kubectl(*args, check=False).stdout)
    pods = node.kubectl("get", "pods", "-n", NS, "-o", "name", check=False).stdout.split()
    for pod in pods:
        out.append(f"--- {pod}\n" + node.kubectl("logs", "-n", NS, pod, "--tail=30", check=False).stdout)
    return "\n".join(out)


@dataclass(frozen=True)
class ReadmeCluster:
    """The node after the README's block ran: the release in `NS`, the run volume's host path."""

    node: KubeNode
    volume: Path
    seconds: float


class ReadmeLineFailed(AssertionError):
    pass


def run_readme_block(node: KubeNode) -> ReadmeCluster:
    _NODE[:] = [node]
    volume = _volume(node)
    started = time.monotonic()
    for line in readme_cluster_lines():
        if line.startswith("docker "):
            _docker_build(node, line)
            continue
        res = _shell(node, line)
        if res.returncode != 0:
            raise ReadmeLineFailed(f"README line failed ({res.returncode}): {line}\n{res.stderr}\n{diagnostics(node)}")
    seconds = time.monotonic() - started
    print(f"README cluster block: {seconds:.0f} s", flush=True)
    return ReadmeCluster(node, volume, seconds)


# ---- helpers for tests that run GodRuns on the node the README's block set up


def cpu_godrun(name: str, training: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """The README's CPU GodRun renamed, writing into folders of its own, with `training`/`spec` changes merged."""
    docs = yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests" / "run-cpu")).stdout)
    run = copy.deepcopy(next(d for d in docs if d and d["kind"] == "GodRun"))
    run["metadata"] = {"name": name}
    run["spec"]["training"] |= {
        "checkpoint_dir": f"checkpoints/{name}",
        "log_dir": f"logs/{name}",
        "audit_log": f"logs/{name}/auditing_manifest.log",
        **(training or {}),
    }
    run["spec"]["panel"]["outputDir"] = f"final_analytics/{name}"
    run["spec"]["fallback"] |= {"archiveDir": f"artifacts/{name}", "analyticsDoc": f"final_analytics/{name}.md"}
    for key, value in spec.items():
        run["spec"][key] = run["spec"].get(key, {}) | value if isinstance(value, dict) else value
    return run


def apply(run: dict[str, Any]) -> None:
    kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(run))


def patch_spec(name: str, spec: dict[str, Any]) -> None:
    kubectl("patch", "gr", name, "-n", NS, "--type=merge", "-p", json.dumps({"spec": spec}))


def get(name: str, kind: str = "gr") -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-n", NS, "-o", "json").stdout)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 600.0, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnostics_now()}")


def diagnostics_now() -> str:
    return diagnostics(_NODE[0]) if _NODE else ""


def phase_in(name: str, phases: set[str]) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = get(name).get("status") or {}
        return status if status.get("phase") in phases else None

    return check


def items(kind: str, selector: str) -> list[dict[str, Any]]:
    return json.loads(kubectl("get", kind, "-n", NS, "-l", selector, "-o", "json").stdout)["items"]


def _train_log(volume: Path, name: str, pattern: str) -> list[int]:
    path = volume / "logs" / name / "train.log"
    return [int(m) for m in re.findall(pattern, path.read_text())] if path.is_file() else []


def epochs_trained_twice(volume: Path, name: str) -> list[int]:
    """Epochs that train.log reports more than once: two trainers of one run at work together (a pod that did not
    stop when deleted, beside the pod that replaced it). A trainer logs an epoch after saving its checkpoint, so a
    trainer that resumes never repeats an epoch that was logged."""
    epochs = _train_log(volume, name, r" INFO epoch (\d+)/\d+ ")
    return sorted({e for e in epochs if epochs.count(e) > 1})


def resumed_at(volume: Path, name: str) -> list[int]:
    """The epoch each resumed trainer of `name` started from (train.log's "resumed from ... at epoch N")."""
    return _train_log(volume, name, r" INFO resumed from \S+ at epoch (\d+)")


def events_of(name: str) -> list[dict[str, Any]]:
    """The Events the controller recorded on GodRun `name`."""
    selector = f"involvedObject.kind=GodRun,involvedObject.name={name}"
    return json.loads(kubectl("get", "events", "-n", NS, "--field-selector", selector, "-o", "json").stdout)["items"]


def epochs_done(volume: Path, name: str) -> list[int]:
    path = volume / "logs" / name / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def leader() -> str:
    return get(LEASE, "lease")["spec"]["holderIdentity"]


def delete_leader() -> str:
    """Delete the controller pod holding the Lease (its Deployment replaces it); wait until another holds it."""
    name = leader()
    kubectl("delete", "pod", name, "-n", NS, "--wait=false")
    wait_for("a new leader", lambda: leader() != name, 120)
    return name
