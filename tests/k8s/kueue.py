"""Kueue on the real node: the controller built from its Go module (tests/cluster/build_kueue.sh), its image made
here from that static binary, installed from the same module's own kustomization (config/default: CRDs, RBAC,
webhooks with Kueue's internal certificates, the manager) with only the image swapped for the local one.

`install(node)` applies it and waits until the webhooks answer; `uninstall(node)` removes the webhook
configurations first (their failurePolicy is Fail: a stopped Kueue would refuse every Job) and then the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import yaml

from k8s.images import Built, _cached, docker_archive, images_dir
from k8s.kubenode import KubeNode

KUEUE_IMAGE = "godrun.test/kueue:v0.17.0"
KUEUE_NS = "kueue-system"


def kueue_bin() -> Path:
    cache = Path(os.environ.get("GODRUN_CACHE") or Path.home() / ".cache" / "godrun")
    return cache / "kueue-bin"


def kueue_source() -> Path | None:
    """The Kueue module's source folder in the Go module cache (its config/ holds the install kustomization)."""
    cache = kueue_bin().parent
    return next(iter(sorted((cache / "go-mod" / "sigs.k8s.io").glob("kueue@*"))), None)


def missing_kueue() -> list[str]:
    missing = [] if os.access(kueue_bin() / "kueue", os.X_OK) else ["kueue (make kueue-bin)"]
    if kueue_source() is None:
        missing.append("the sigs.k8s.io/kueue module source (make kueue-bin)")
    return missing


def kueue_image(cache: Path) -> Built:
    """A one-layer image holding the static manager binary as /manager (the command Kueue's Deployment runs)."""
    binary = kueue_bin() / "kueue"
    key = hashlib.sha256(binary.read_bytes() + KUEUE_IMAGE.encode()).hexdigest()[:16]
    out = images_dir(cache) / f"kueue-{key}.tar"

    def make(work: Path) -> None:
        with tarfile.open(work / "layer.tar", "w") as tar:
            info = tar.gettarinfo(str(binary), arcname="manager")
            info.mode, info.uid, info.gid = 0o755, 0, 0
            with binary.open("rb") as f:
                tar.addfile(info, f)
        config = {"Entrypoint": ["/manager"], "User": "65532:65532"}
        docker_archive(out, KUEUE_IMAGE, work / "layer.tar", config, "go install sigs.k8s.io/kueue/cmd/kueue")

    return _cached(out, KUEUE_IMAGE, make)


def rendered(node: KubeNode) -> list[dict[str, Any]]:
    """Kueue's config/default as kustomize renders it, the manager's image replaced by the local one."""
    src = kueue_source()
    assert src is not None, missing_kueue()
    docs = [d for d in yaml.safe_load_all(node.kubectl("kustomize", str(src / "config" / "default")).stdout) if d]
    # The visibility API (an aggregated APIService) is left out: the test apiserver has no aggregation layer
    # configured, and an unavailable APIService stalls discovery for the garbage collector and namespace deletion.
    docs = [d for d in docs if d["kind"] != "APIService"]
    for doc in docs:
        if doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                c["image"], c["imagePullPolicy"] = KUEUE_IMAGE, "Never"
                c.pop("resources", None)  # the node is small; the test pods' requests are what Kueue counts
    return docs


def install(node: KubeNode, timeout: float = 300.0) -> float:
    """Install Kueue and wait until its webhooks admit a ResourceFlavor; returns the seconds it took."""
    started = time.monotonic()
    node.import_image(kueue_image(node.cache).archive)
    docs = rendered(node)
    body = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    node.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=godrun-tests", "-f", "-", input=body)
    node.kubectl("-n", KUEUE_NS, "rollout", "status", "deployment/kueue-controller-manager", "--timeout=300s")
    probe = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "probe"}}
    deadline = time.monotonic() + timeout
    while True:  # the webhook answers once the internal certificates are issued and mounted
        res = node.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False)
        if res.returncode == 0:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            logs = node.kubectl("-n", KUEUE_NS, "logs", "deployment/kueue-controller-manager", check=False)
            raise TimeoutError(f"Kueue's webhook never answered: {res.stderr}\n{logs.stdout[-3000:]}")
        time.sleep(2)


def uninstall(node: KubeNode) -> None:
    docs = rendered(node)
    hooks = [d for d in docs if d["kind"].endswith("WebhookConfiguration")]
    for doc in hooks + [d for d in docs if d not in hooks]:
        kind, name = doc["kind"], doc["metadata"]["name"]
        ns = ["-n", doc["metadata"]["namespace"]] if doc["metadata"].get("namespace") else []
        node.kubectl("delete", kind, name, *ns, "--ignore-not-found", "--wait=false", check=False)
