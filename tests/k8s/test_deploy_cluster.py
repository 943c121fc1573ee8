"""The deployment artefacts against the real API server: manifests/ and the Helm chart are accepted
with strict validation, the controller's Pod template passes Pod Security Admission (restricted),
the example GodRun passes the CRD's schema, and the controller's ServiceAccount can do exactly what
the RBAC promises (no secrets, no edits of GodRun specs)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from godrun.testcluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SOURCE_NS = "godrun-system"
CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace")
PSA = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _into(docs: list[dict[str, Any]], ns: str, suffix: str) -> str:
    """The objects moved from godrun-system into the test's namespace; cluster-scoped names get a suffix."""
    out = []
    for d in docs:
        d = yaml.safe_load(yaml.safe_dump(d))
        meta = d["metadata"]
        if meta.get("namespace", SOURCE_NS) == SOURCE_NS and d["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = ns  # the sample GodRun and its PVC name none: they go where they are applied
        elif d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] += suffix
            if "roleRef" in d and d["roleRef"]["kind"] == "ClusterRole":
                d["roleRef"]["name"] += suffix
        for subject in d.get("subjects", []):
            subject["namespace"] = ns
        out.append(d)
    return yaml.safe_dump_all(out)


def _apply(cluster: Cluster, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    res = cluster.kubectl("apply", "--validate=strict", *extra, "-f", "-", input=text, check=False)
    assert res.returncode == 0, res.stderr
    assert "PodSecurity" not in res.stderr, res.stderr
    return res


def _restricted_namespace(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("label", "namespace", ns, *(f"{k}={v}" for k, v in PSA.items()), "--overwrite")


def test_manifests_apply_and_rbac_is_exact(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    k8s_cluster.apply_crd(MANIFESTS / "crd/godruns.godrun.io.yaml")
    _restricted_namespace(k8s_cluster, ns)
    docs = []
    for rel in (
        "rbac/namespaced.yaml",
        "controller/serviceaccount.yaml",
        "controller/deployment.yaml",
        "controller/service.yaml",
        "controller/poddisruptionbudget.yaml",
        "run/workspace-pvc.yaml",
    ):
        docs += _docs(MANIFESTS / rel)
    _apply(k8s_cluster, _into(docs, ns, ""))

    # Pod Security Admission enforces `restricted` here: a Pod from the Deployment's template is admitted.
    (dep,) = _docs(MANIFESTS / "controller/deployment.yaml")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "template-probe", "namespace": ns},
        "spec": dep["spec"]["template"]["spec"],
    }
    _apply(k8s_cluster, yaml.safe_dump(pod), "--dry-run=server")
    rooted = yaml.safe_load(yaml.safe_dump(pod))
    rooted["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    res = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(rooted), check=False)
    assert res.returncode != 0 and "PodSecurity" in res.stderr, "PSA is not enforcing: the check above proves nothing"

    # The example GodRun passes the CRD's structural schema and CEL rules.
    _apply(k8s_cluster, _into(_docs(MANIFESTS / "run" / "godrun.yaml"), ns, ""), "--dry-run=server")

    sa = k8s_cluster.service_account_kubeconfig(ns, "godrun-controller", create=False)

    def can(verb: str, resource: str, where: str = ns) -> bool:
        resource, _, sub = resource.partition("/")  # `can-i VERB R/S` would read S as an object name
        extra = [f"--subresource={sub}"] if sub else []
        out = k8s_cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", where, kubeconfig=sa, check=False)
        return out.stdout.strip() == "yes"

    for verb, resource in [
        ("watch", "godruns.godrun.io"),
        ("create", "godruns.godrun.io"),
        ("update", "godruns.godrun.io/status"),
        ("create", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("list", "pods"),
        ("create", "services"),
        ("create", "events"),
        ("get", "persistentvolumeclaims"),
        ("update", "leases.coordination.k8s.io"),
    ]:
        assert can(verb, resource), f"controller cannot {verb} {resource}"
    for verb, resource in [
        ("get", "secrets"),
        ("list", "configmaps"),
        ("update", "godruns.godrun.io"),
        ("patch", "godruns.godrun.io/status"),
        ("get", "jobs.batch"),
        ("list", "services"),
        ("delete", "pods"),
        ("create", "pods/exec"),
        ("delete", "leases.coordination.k8s.io"),
        ("create", "roles.rbac.authorization.k8s.io"),
    ]:
        assert not can(verb, resource), f"controller may {verb} {resource}"
    assert not can("list", "godruns.godrun.io", "default"), "namespaced RBAC leaks into other namespaces"


def test_cluster_rbac_is_accepted(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    text = _into(_docs(MANIFESTS / "rbac/cluster.yaml"), k8s_namespace, f"-{k8s_namespace}")
    _apply(k8s_cluster, text, "--dry-run=server")


def test_helm_chart_installs(k8s_cluster: Cluster, k8s_namespace: str, tmp_path: Path) -> None:
    ns = k8s_namespace
    k8s_cluster.apply_crd(MANIFESTS / "crd/godruns.godrun.io.yaml")
    _restricted_namespace(k8s_cluster, ns)
    chart = str(ROOT / "helm/godrun")
    # The chart's CRD (round-tripped through the template) is a valid CRD object.
    rendered = k8s_cluster.helm("template", "probe", chart, "-n", ns).stdout
    crds = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 1
    _apply(k8s_cluster, yaml.safe_dump(crds[0]), "--dry-run=server", "--server-side", "--force-conflicts")
    # The CRD exists already (not Helm's): install everything else, in namespaced mode.
    res = k8s_cluster.helm(
        "install", "godrun", chart, "-n", ns, "--set", "crds.install=false", check=False, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "PodSecurity" not in res.stderr, res.stderr
    kinds = k8s_cluster.kubectl("-n", ns, "get", "deploy,svc,sa,role,rolebinding,pdb,cm", "-o", "name").stdout
    for name in ("deployment.apps/godrun", "service/godrun", "serviceaccount/godrun", "configmap/godrun-dashboard"):
        assert name in kinds
    assert k8s_cluster.helm("uninstall", "godrun", "-n", ns, timeout=120).returncode == 0


def test_helm_chart_options_pass_a_server_side_dry_run(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    """NetworkPolicies, OpenShift-style security contexts (no fixed UIDs) and the helm test pod are valid
    objects, and the pods are still admitted by restricted Pod Security."""
    ns = k8s_namespace
    _restricted_namespace(k8s_cluster, ns)
    nulls = [f"{c}.{k}=null" for c in ("podSecurityContext", "securityContext") for k in ("runAsUser", "runAsGroup")]
    sets = ["crds.install=false", "networkPolicy.enabled=true", "podSecurityContext.fsGroup=null", *nulls]
    argv = ["template", "probe", str(ROOT / "helm/godrun"), "-n", ns]
    for s in sets:
        argv += ["--set", s]
    docs = [d for d in yaml.safe_load_all(k8s_cluster.helm(*argv).stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"NetworkPolicy", "Deployment", "Pod"} <= kinds
    _apply(k8s_cluster, yaml.safe_dump_all(docs), "--dry-run=server")


def test_helm_template_passes_server_side_dry_run(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    k8s_cluster.apply_crd(MANIFESTS / "crd/godruns.godrun.io.yaml")
    rendered = k8s_cluster.helm("template", "godrun", str(ROOT / "helm/godrun"), "-n", k8s_namespace).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"Deployment", "Role", "RoleBinding", "ServiceAccount", "CustomResourceDefinition"} <= kinds, kinds
    res = k8s_cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-n", k8s_namespace, "-f", "-",
        input=rendered, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("(server dry run)") == len([d for d in yaml.safe_load_all(rendered) if d]), res.stdout
