"""The test control plane itself: pinned version, client-cert admin, RBAC for ServiceAccounts, kubectl and helm."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from godrun.testcluster import Cluster

GO_MOD = Path(__file__).resolve().parents[1] / "cluster" / "go.mod"


def pinned(module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", GO_MOD.read_text(), re.M)
    assert match, f"{module} not in {GO_MOD}"
    return match.group(1)


def test_server_reports_the_pinned_release(k8s_cluster: Cluster) -> None:
    version = k8s_cluster.get("/version")
    assert version["gitVersion"] == pinned("k8s.io/kubernetes")
    assert version["minor"] == pinned("k8s.io/kubernetes").split(".")[1]
    out = k8s_cluster.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{version["gitVersion"]}"' in out  # client and server: same release
    assert pinned("helm.sh/helm/v3") in k8s_cluster.helm("version", "--short").stdout


def test_admin_is_a_client_certificate_in_system_masters(k8s_cluster: Cluster) -> None:
    review = k8s_cluster.kubectl("auth", "whoami", "-o", "json").stdout
    assert '"system:masters"' in review
    assert k8s_cluster.kubectl("auth", "can-i", "*", "*", "--all-namespaces").stdout.strip() == "yes"


def test_service_account_is_confined_by_rbac(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    sa_config = k8s_cluster.service_account_kubeconfig(ns, "worker")
    core = client.CoreV1Api(k8s_cluster.api_client(sa_config))
    with pytest.raises(ApiException) as denied:
        core.list_namespaced_config_map(ns)
    assert denied.value.status == 403 and f"system:serviceaccount:{ns}:worker" in denied.value.body

    k8s_cluster.kubectl("-n", ns, "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps")
    k8s_cluster.kubectl(
        "-n", ns, "create", "rolebinding", "cm-reader", "--role=cm-reader", f"--serviceaccount={ns}:worker"
    )
    assert core.list_namespaced_config_map(ns).items is not None
    can = {
        (verb, res, where): k8s_cluster.kubectl(
            "auth", "can-i", verb, res, "-n", where, kubeconfig=sa_config, check=False
        ).stdout.strip()
        for verb, res, where in [
            ("list", "configmaps", ns),
            ("create", "configmaps", ns),
            ("get", "secrets", ns),
            ("list", "configmaps", "default"),
        ]
    }
    assert can == {
        ("list", "configmaps", ns): "yes",
        ("create", "configmaps", ns): "no",
        ("get", "secrets", ns): "no",
        ("list", "configmaps", "default"): "no",
    }


def test_kubectl_apply_and_server_side_dry_run(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    manifest = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n  namespace: {k8s_namespace}\ndata:\n  a: b\n"
    )
    dry = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest).stdout
    assert "server dry run" in dry
    assert k8s_cluster.kubectl("-n", k8s_namespace, "get", "cm", "probe", check=False).returncode != 0
    k8s_cluster.kubectl("apply", "-f", "-", input=manifest)
    assert k8s_cluster.kubectl("-n", k8s_namespace, "get", "cm", "probe", "-o", "jsonpath={.data.a}").stdout == "b"
    bad = manifest.replace("kind: ConfigMap", "kind: ConfigMap\nspec: {}")
    res = k8s_cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=bad, check=False)
    assert res.returncode != 0 and 'unknown field "spec"' in res.stderr
