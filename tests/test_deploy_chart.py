"""helm/godrun: copies in sync with their sources, `helm lint --strict` and `helm template` clean,
and every toggle renders what it promises (CRD keep policy, RBAC scope, monitoring, dashboard)."""

from __future__ import annotations

import difflib
import json
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml
from deploy_support import (
    CHART,
    CRD_FILE,
    DASHBOARD_FILE,
    MANIFESTS,
    ROOT,
    RULES_FILE,
    load_docs,
    objects,
    pod_specs,
    restricted_violations,
)
from script_support import load_script
from tools import require_tool

RELEASE, NAMESPACE = "godrun", "godrun-system"


def _sync_module():
    return load_script("scripts/sync_chart.py")


def test_chart_copies_equal_their_sources() -> None:
    sync = _sync_module()
    assert sync.stale_copies() == [], "run scripts/sync_chart.py"
    assert (CHART / "files/crd.yaml").read_bytes() == CRD_FILE.read_bytes()
    assert (CHART / "files/dashboard.json").read_bytes() == DASHBOARD_FILE.read_bytes()


def test_sync_check_detects_drift(tmp_path, monkeypatch) -> None:
    sync = _sync_module()
    fake = tmp_path / "files"
    fake.mkdir()
    monkeypatch.setattr(sync, "CHART_FILES", fake)
    monkeypatch.setattr(sync, "PROMETHEUS_RULE", tmp_path / "prometheusrule.yaml")
    readme = tmp_path / "README.md"
    readme.write_text((CHART / "README.md").read_text().replace("| `replicaCount` | `2` |", "| `replicaCount` | `3` |"))
    monkeypatch.setattr(sync, "CHART_README", readme)
    assert len(sync.stale_copies()) == 6  # the hand-edited values table is stale too
    assert sync.main([]) == 0 and sync.stale_copies() == []
    (fake / "crd.yaml").write_text("edited by hand\n")
    assert sync.main(["--check"]) == 1


# --------------------------------------------------------------------------- helm


def _helm() -> str:
    return require_tool("helm", "`make cluster-bin` builds it (tests/cluster/build.sh)")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120)


@cache
def _render(*sets: str) -> tuple[dict[str, Any], ...]:
    argv = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    for s in sets:
        argv += ["--set", s]
    out = _run(*argv)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def _one(docs, kind: str) -> dict[str, Any]:
    found = objects(list(docs), kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


@pytest.mark.parametrize(
    "sets",
    [
        (),
        (
            "rbac.clusterWide=true",
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.podMonitor.enabled=true",
            "monitoring.prometheusRule.enabled=true",
        ),
    ],
    ids=["defaults", "everything-on"],
)
def test_helm_lint_strict(sets: tuple[str, ...]) -> None:
    argv = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        argv += ["--set", s]
    out = _run(*argv)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_default_render() -> None:
    docs = _render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "ConfigMap",
            "Pod",
            "ClusterRole",  # godrun-edit and godrun-view, aggregated into the built-in roles
            "ClusterRole",
        ]
    ), kinds
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "godrun" and labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and "helm.sh/chart" in labels


def test_crd_is_the_generated_crd_with_keep_policy() -> None:
    crd = _one(_render(), "CustomResourceDefinition")
    generated = load_docs(CRD_FILE)[0]
    assert crd["spec"] == generated["spec"], "the chart's CRD differs from manifests/crd"
    assert crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    nokeep = _one(_render("crds.keep=false"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (nokeep["metadata"].get("annotations") or {})
    assert not objects(list(_render("crds.install=false")), "CustomResourceDefinition")


def test_crd_text_is_the_generated_text_plus_metadata_lines() -> None:
    """Rendered as text: every generated line survives in order; only metadata lines are added."""
    out = _run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--show-only", "templates/crds.yaml")
    assert out.returncode == 0, out.stderr
    rendered = [ln for ln in out.stdout.splitlines() if ln != "---" and not ln.startswith("# Source:")]
    source = CRD_FILE.read_text().splitlines()
    added = [op[2:] for op in difflib.ndiff(source, rendered) if op.startswith("+ ")]
    removed = [op[2:] for op in difflib.ndiff(source, rendered) if op.startswith("- ")]
    assert removed == [], removed
    assert len(rendered) == len(source) + len(added)
    spec_at = rendered.index("spec:")
    assert all(rendered.index(ln) < spec_at for ln in added), added
    assert "    helm.sh/resource-policy: keep" in added


def test_deployment_image_args_and_pod_security() -> None:
    docs = _render()
    dep = _one(docs, "Deployment")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"].endswith(f":{chart['appVersion']}"), "image tag defaults to appVersion"
    assert dep["spec"]["replicas"] == 2
    assert f"--namespace={NAMESPACE}" in c["args"] and "--leader-elect" in c["args"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    svc = _one(docs, "Service")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for obj in (dep, _one(docs, "Pod")):
        for where, pod in pod_specs(obj):
            assert restricted_violations(pod) == [], where
    pinned = _one(_render("image.digest=sha256:" + "a" * 64), "Deployment")
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@sha256:" + "a" * 64)


def test_helm_test_hook_hits_healthz() -> None:
    pod = _one(_render(), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    url = pod["spec"]["containers"][0]["args"][-1]
    assert url == f"http://{RELEASE}.{NAMESPACE}.svc:8081/healthz"


def _grants(roles) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for role in roles
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_rbac_namespaced_cluster_and_watch_namespace() -> None:
    manifest_roles = objects(load_docs(MANIFESTS / "rbac/namespaced.yaml"), "Role")
    docs = _render()
    assert _grants(objects(list(docs), "Role")) == _grants(manifest_roles), "chart and manifests RBAC differ"
    user_roles = objects(list(docs), "ClusterRole")  # for users, not the controller: no binding of the chart's
    assert sorted(r["metadata"]["name"][len(RELEASE) :] for r in user_roles) == ["-edit", "-view"], user_roles
    assert all(
        any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in r["metadata"]["labels"])
        for r in user_roles
    )
    assert not objects(list(_render("rbac.aggregateToDefaultRoles=false")), "ClusterRole")

    cluster = _render("rbac.clusterWide=true")
    controller_roles = [r for r in objects(list(cluster), "ClusterRole") if r not in user_roles]
    assert len(controller_roles) == 1 and _one(cluster, "ClusterRoleBinding")
    (lease_role,) = objects(list(cluster), "Role")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    args = _one(cluster, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=" in args, "cluster-wide: empty namespace = all"

    proxy = _render("controller.progressSource=proxy")
    assert ("", "pods/proxy", "get") in _grants(objects(list(proxy), "Role"))
    assert ("", "pods/proxy", "get") not in _grants(objects(list(docs), "Role"))

    team = _render("watchNamespace=team-a")
    namespaces = {r["metadata"]["name"]: r["metadata"]["namespace"] for r in objects(list(team), "Role")}
    assert namespaces == {RELEASE: "team-a", f"{RELEASE}-leader-election": NAMESPACE}
    args = _one(team, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--lease-namespace=$(POD_NAMESPACE)" in args


def test_monitoring_objects_and_release_label() -> None:
    docs = _render(
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.podMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.release=prom-x",
    )
    sm, pm, pr = (_one(docs, k) for k in ("ServiceMonitor", "PodMonitor", "PrometheusRule"))
    for obj in (sm, pm, pr):
        assert obj["metadata"]["labels"]["release"] == "prom-x"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["honorLabels"] is True
    assert pm["spec"]["selector"]["matchLabels"]["godrun.io/stage"] == "train"
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pr["spec"]["groups"] == load_docs(RULES_FILE)[0]["groups"], "PrometheusRule differs from rules.yaml"
    relabel = pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel == {
        "sourceLabels": ["__meta_kubernetes_pod_annotation_batch_kubernetes_io_job_completion_index"],
        "regex": "0|",
        "action": "keep",
    }, "only rank 0 serves metrics"
    assert "{{ $labels.godrun }}" in json.dumps(pr), "alert templates must reach Prometheus untouched"
    nolabel = _render("monitoring.serviceMonitor.enabled=true", "monitoring.release=")
    assert "release" not in _one(nolabel, "ServiceMonitor")["metadata"]["labels"]


def test_dashboard_configmap() -> None:
    cm = _one(_render(), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["godrun.json"]) == json.loads(DASHBOARD_FILE.read_text())
    assert not objects(list(_render("dashboard.enabled=false")), "ConfigMap")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=0", "/replicaCount"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("unknownKey=1", "unknownKey"),
        ("leaderElection.enabled=false", "needs leaderElection.enabled=true"),
        ("image.digest=md5:abc", "/image/digest"),
        ("controller.progressSource=sometimes", "/controller/progressSource"),
    ],
)
def test_bad_values_are_refused(setting: str, message: str) -> None:
    out = _run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", setting)
    assert out.returncode != 0, f"{setting} rendered"
    assert message in out.stderr, out.stderr


def test_chart_poll_interval_default_is_the_controllers() -> None:
    from godrun.core.machine import DEFAULT_POLLING

    values = yaml.safe_load((ROOT / "helm/godrun/values.yaml").read_text())
    assert values["controller"]["progressSeconds"] == DEFAULT_POLLING.progress_seconds


def _alerts(docs) -> set[str]:
    return {r["alert"] for g in _one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}


def test_no_leader_alert_only_with_the_service_monitor() -> None:
    without = _alerts(_render("monitoring.prometheusRule.enabled=true"))
    assert "GodRunControllerNoLeader" not in without and "GodRunFailed" in without
    assert "GodRunControllerNoLeader" in _alerts(
        _render("monitoring.prometheusRule.enabled=true", "monitoring.serviceMonitor.enabled=true")
    )


def test_helm_test_pod_labels() -> None:
    out = _run(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--show-only", "templates/tests/test-connection.yaml"
    )
    assert out.returncode == 0, out.stderr
    keys = [line.split(":")[0].strip() for line in out.stdout.split("labels:")[1].split("annotations:")[0].splitlines()]
    assert keys.count("app.kubernetes.io/component") == 1, "duplicate label key"
    pod, svc = _one(_render(), "Pod"), _one(_render(), "Service")
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"
    assert not svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), "the test pod is no endpoint"


def test_security_contexts_are_values_and_openshift_uids_work() -> None:
    nulls = [
        f"{ctx}.{k}=null" for ctx in ("podSecurityContext", "securityContext") for k in ("runAsUser", "runAsGroup")
    ]
    docs = _render(*nulls, "podSecurityContext.fsGroup=null")
    for obj in (_one(docs, "Deployment"), _one(docs, "Pod")):
        for where, pod in pod_specs(obj):
            assert restricted_violations(pod) == [], where
            text = json.dumps(pod)
            assert "runAsUser" not in text and "fsGroup" not in text and '"runAsNonRoot": true' in text, where
    custom = _one(_render("securityContext.readOnlyRootFilesystem=false"), "Deployment")
    assert custom["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False


def test_network_policy_covers_progress_and_scrapes() -> None:
    assert not objects(list(_render()), "NetworkPolicy")
    docs = _render("networkPolicy.enabled=true", "watchNamespace=team-a", "controller.metricsPort=8088")
    policies = {p["metadata"]["name"]: p for p in objects(list(docs), "NetworkPolicy")}
    controller, trainer = policies[RELEASE], policies[f"{RELEASE}-trainer"]
    dep = _one(docs, "Deployment")
    assert (
        controller["spec"]["podSelector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )
    assert {p["port"] for rule in controller["spec"]["ingress"] for p in rule["ports"]} == {8088, 8081}
    assert trainer["metadata"]["namespace"] == "team-a"
    assert trainer["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "godrun-controller",
        "godrun.io/stage": "train",
    }
    progress = trainer["spec"]["ingress"][0]
    assert progress["ports"] == [{"port": 9090, "protocol": "TCP"}]
    sources = progress["from"]
    assert sources[0]["podSelector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert sources[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
    assert sources[1]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert "ports" not in trainer["spec"]["ingress"][1], "rendezvous and collectives between training pods"


def test_chart_readme_documents_every_value_and_the_crd_caveat() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ("networkPolicy.enabled", "podSecurityContext.runAsUser", "securityContext.readOnlyRootFilesystem"):
        assert f"| `{key}` |" in readme, key
    assert len([k for k in values if f"| `{k}" in readme]) == len(values)
    assert "helm.sh/resource-policy: keep" in readme and "meta.helm.sh/release-name" in readme
