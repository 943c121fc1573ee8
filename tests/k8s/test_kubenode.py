"""The real node: pods scheduled by kube-scheduler and run by kubelet on containerd, Jobs finished by the real Job
controller, Services through kube-proxy and CoreDNS; and a stopped node leaves nothing behind."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from k8s.images import python_image
from k8s.kubenode import PAUSE_IMAGE, POD_CIDR, KubeNode, leftovers_of

pytestmark = pytest.mark.node


def _namespace(node: KubeNode, name: str) -> str:
    node.kubectl("create", "namespace", name)
    # the real ServiceAccount controller makes `default`; a pod is refused until it exists
    for _ in range(120):
        if node.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0:
            return name
        time.sleep(0.25)
    raise TimeoutError(f"no default ServiceAccount in {name}")


def _pod(name: str, image: str, command: list[str] | None = None) -> str:
    container: dict = {"name": "main", "image": image, "imagePullPolicy": "Never"}
    if command:
        container["command"] = command
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}
    return json.dumps(pod)


def _job(name: str, image: str, script: str, **spec: object) -> dict:
    container = {"name": "main", "image": image, "imagePullPolicy": "Never", "command": ["bash", "-c", script]}
    template = {"spec": {"restartPolicy": "Never", "containers": [container]}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {**spec, "template": template}}


def _pod_json(node: KubeNode, namespace: str, name: str) -> dict:
    return json.loads(node.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)


def test_pod_is_scheduled_and_runs_on_the_node(kube_node: KubeNode) -> None:
    ns = _namespace(kube_node, "pods")
    t0 = time.monotonic()
    kube_node.kubectl("apply", "-n", ns, "-f", "-", input=_pod("sleeper", PAUSE_IMAGE))
    kube_node.kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Running", "pod/sleeper", "--timeout=120s")
    latency = time.monotonic() - t0
    pod = _pod_json(kube_node, ns, "sleeper")
    assert pod["spec"]["nodeName"] == kube_node.name  # bound by kube-scheduler, not by the test
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)  # CNI bridge
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    print(f"\npod create -> Running: {latency:.2f} s")


@pytest.fixture(scope="module")
def base_image(kube_node: KubeNode) -> str:
    """Debian bookworm with bash and getent (the local Python base image, which the chart tests need anyway)."""
    image = python_image(kube_node.cache)
    kube_node.import_image(image.archive)
    return image.tag


def test_job_completes_through_dns_and_the_kubernetes_service(kube_node: KubeNode, base_image: str) -> None:
    """The real Job controller runs the pod to completion; inside it CoreDNS resolves the `kubernetes` Service and
    kube-proxy carries a TCP connection to the API server behind it."""
    ns = _namespace(kube_node, "jobs")
    script = "getent hosts kubernetes.default.svc.cluster.local && exec 3<>/dev/tcp/kubernetes.default.svc/443"
    job = _job("reach-api", base_image, script, backoffLimit=0)
    kube_node.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(job))
    done = kube_node.kubectl(
        "wait", "-n", ns, "--for=condition=Complete", "job/reach-api", "--timeout=120s", check=False
    )
    logs = kube_node.kubectl("logs", "-n", ns, "job/reach-api", check=False)
    assert done.returncode == 0, f"{done.stderr}\n{logs.stdout}{logs.stderr}"
    assert "10.96.0.1" in logs.stdout  # the `kubernetes` Service's ClusterIP, from CoreDNS


def test_failing_job_gets_the_real_failed_condition(kube_node: KubeNode, base_image: str) -> None:
    ns = _namespace(kube_node, "failing")
    rule = {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}
    job = _job("exit-two", base_image, "exit 2", backoffLimit=3, podFailurePolicy={"rules": [rule]})
    kube_node.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(job))
    kube_node.kubectl("wait", "-n", ns, "--for=condition=Failed", "job/exit-two", "--timeout=120s")
    status = json.loads(kube_node.kubectl("get", "job", "exit-two", "-n", ns, "-o", "json").stdout)["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert status.get("failed") == 1  # FailJob: no retry despite backoffLimit 3


def test_indexed_job_pods_find_each_other_through_a_headless_service(kube_node: KubeNode, base_image: str) -> None:
    """What multi-node training needs from the cluster: an Indexed Job of 2 pods, each finding the other by its
    stable hostname `<job>-<index>.<service>` (CoreDNS, headless Service, EndpointSlices from the real controller)."""
    ns = _namespace(kube_node, "indexed")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ring"},
        "spec": {"clusterIP": "None", "selector": {"job-name": "ring"}, "ports": [{"port": 29500}]},
    }
    script = "for i in 0 1; do until getent hosts ring-$i.ring; do sleep 0.5; done; done"
    job = _job("ring", base_image, f"timeout 90 bash -c '{script}'", completionMode="Indexed", completions=2,
               parallelism=2, backoffLimit=0)  # fmt: skip
    job["spec"]["template"]["spec"]["subdomain"] = "ring"
    kube_node.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1",
                                                                      "items": [service, job]}))  # fmt: skip
    done = kube_node.kubectl("wait", "-n", ns, "--for=condition=Complete", "job/ring", "--timeout=150s", check=False)
    logs = kube_node.kubectl("logs", "-n", ns, "-l", "job-name=ring", "--prefix", check=False)
    assert done.returncode == 0, f"{done.stderr}\n{logs.stdout}{logs.stderr}"
    status = json.loads(kube_node.kubectl("get", "job", "ring", "-n", ns, "-o", "json").stdout)["status"]
    assert status["completedIndexes"] == "0,1"


def test_stopped_node_leaves_nothing_behind(tmp_path: Path) -> None:
    node = KubeNode(root=tmp_path / "node")
    with node:
        ns = _namespace(node, "leftovers")
        node.kubectl("apply", "-n", ns, "-f", "-", input=_pod("sleeper", PAUSE_IMAGE))
        node.kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Running", "pod/sleeper", "--timeout=120s")
        assert leftovers_of(node)["netns"] is True
    assert leftovers_of(node) == {"processes": [], "mounts": [], "netns": False, "cgroups": [], "root": False}
