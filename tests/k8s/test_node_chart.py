"""The README's cluster path on the real node, as far as it runs here: the controller image built from our
Dockerfile (buildah, on a locally made Python base), `helm install` of the chart with it into `-n godrun`,
the controller pods Ready (their watches listed through the `kubernetes` Service, kube-proxy and the pod
network), and `kubectl apply -n godrun -f manifests/godrun.yaml` picked up by the controller in that namespace.

Not yet here (see tests/cluster/README.md): the trainer image, so the sample's Jobs cannot run to Shipped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from k8s.images import controller_image
from k8s.kubenode import KubeNode

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
NS = "godrun"


@pytest.fixture(scope="module")
def installed(kube_node: KubeNode) -> KubeNode:
    image = controller_image(kube_node.cache)
    print(f"\ncontroller image: {image.size_mib:.0f} MiB, built in {image.seconds:.0f} s (0 = cached)")
    kube_node.import_image(image.archive)
    repo, tag = image.tag.rsplit(":", 1)
    kube_node.cluster.helm(
        "install", "godrun", str(ROOT / "helm" / "godrun"), "-n", NS, "--create-namespace",
        "--set", f"image.repository={repo}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
    )  # fmt: skip
    # every replica Ready (helm --wait settles for the Deployment's maxUnavailable)
    kube_node.kubectl("rollout", "status", "deployment/godrun", "-n", NS, "--timeout=240s", timeout=300)
    return kube_node


def test_helm_release_runs_the_built_controller_on_the_node(installed: KubeNode) -> None:
    deploy = json.loads(installed.kubectl("get", "deployment", "-n", NS, "-o", "json").stdout)["items"]
    assert len(deploy) == 1
    status = deploy[0]["status"]
    assert status.get("readyReplicas") == deploy[0]["spec"]["replicas"] == 2, status
    pods = json.loads(installed.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {installed.name}
    lease = json.loads(installed.kubectl("get", "lease", "godrun-controller", "-n", NS, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] in {p["metadata"]["name"] for p in pods}


def test_sample_godrun_applied_into_the_release_namespace_is_picked_up(installed: KubeNode) -> None:
    for name in ("workspace-pvc.yaml", "godrun.yaml"):
        installed.kubectl("apply", "-n", NS, "-f", str(ROOT / "manifests" / name))
    run = yaml.safe_load((ROOT / "manifests" / "godrun.yaml").read_text())["metadata"]["name"]
    deadline, status = time.monotonic() + 120, {}
    while time.monotonic() < deadline:
        obj = json.loads(installed.kubectl("get", "gr", run, "-n", NS, "-o", "json").stdout)
        status = obj.get("status") or {}
        if status.get("phase"):
            break
        time.sleep(1)
    assert status.get("phase"), f"the controller never wrote a phase: {status}"
    table = installed.kubectl("get", "gr", "-n", NS).stdout
    assert run in table and status["phase"] in table
