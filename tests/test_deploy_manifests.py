"""manifests/: every YAML parses, the example GodRun is the seed's recipe, RBAC is least privilege,
the controller Deployment passes the restricted Pod Security Standard."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    MANIFESTS,
    ROOT,
    load_docs,
    manifest_files,
    objects,
    pod_specs,
    restricted_violations,
)
from seed_support import seed_training_flags
from tools import require_tool

from godrun.spec import Fallback, Gates, GodRun, Recipe

NAMESPACE = "godrun-system"
SA = "godrun-controller"

# What godrun/controller/README.md says the controller calls: (apiGroup, resource, verb).
CONTROLLER_NEEDS = {
    *(("godrun.io", "godruns", v) for v in ("get", "list", "watch", "create")),
    ("godrun.io", "godruns/status", "update"),
    ("godrun.io", "godruns/finalizers", "update"),
    *(("batch", "jobs", v) for v in ("list", "watch", "create", "delete")),
    *(("", "pods", v) for v in ("list", "watch")),
    *(("", "services", v) for v in ("create", "delete")),
    ("", "persistentvolumeclaims", "get"),
    ("", "events", "create"),
}
# Not API calls, yet required: the OwnerReferencesPermissionEnforcement admission plugin checks update on the
# owner's finalizers for ownerReferences with blockOwnerDeletion.
ADMISSION_NEEDS = {("godrun.io", "godruns/finalizers", "update")}
LEASE_NEEDS = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}


# Kubernetes client method -> (apiGroup, resource); verbs from the method's prefix.
_API_RESOURCES = {
    "custom_object": ("godrun.io", "godruns"),
    "custom_object_status": ("godrun.io", "godruns/status"),
    "job": ("batch", "jobs"),
    "pod": ("", "pods"),
    "pod_proxy_with_path": ("", "pods/proxy"),
    "service": ("", "services"),
    "persistent_volume_claim": ("", "persistentvolumeclaims"),
    "event": ("", "events"),
    "lease": ("coordination.k8s.io", "leases"),
}
_API_VERBS = {
    "create": "create",
    "delete": "delete",
    "list": "list",
    "read": "get",
    "get": "get",
    "connect_get": "get",
    "replace": "update",
    "patch": "patch",
}
_API_CALL = re.compile(r"\b(connect_get|create|delete|list|read|get|replace|patch)_(?:namespaced|cluster)_([a-z_]+)\b")


def _calls_in(path: Path) -> set[tuple[str, str, str]]:
    calls = set()
    for prefix, suffix in _API_CALL.findall(path.read_text(encoding="utf-8")):
        assert suffix in _API_RESOURCES, f"{path.name}: unmapped API call {prefix}_..._{suffix}"
        calls.add((*_API_RESOURCES[suffix], _API_VERBS[prefix]))
    return calls


def _controller_calls() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every Kubernetes client call in godrun/controller/*.py; every listed
    resource is also watched (the controller's caches list, then watch)."""
    calls = set().union(*(_calls_in(path) for path in (ROOT / "godrun/controller").glob("*.py")))
    return calls | {(g, r, "watch") for g, r, v in calls if v == "list"}


def _lease_lock_calls() -> set[tuple[str, str, str]]:
    """The calls of the kubernetes client's LeaseLock (leader election, godrun/controller/main.py)."""
    from kubernetes.leaderelection.resourcelock import leaselock

    return _calls_in(Path(leaselock.__file__))


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


# --------------------------------------------------------------------------- every file


# monitoring/rules.yaml is a plain Prometheus rule file (promtool checks it), not an API object.
K8S_FILES = [p for p in manifest_files() if p != MANIFESTS / "monitoring/rules.yaml"]


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_parses_into_kubernetes_objects(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: object without apiVersion/kind"
        assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without metadata.name"


def test_dashboard_json_parses() -> None:
    import json

    assert json.loads((MANIFESTS / "monitoring/dashboard.json").read_text())["panels"]


def test_kustomization_lists_existing_files_and_builds() -> None:
    kust = load_docs(MANIFESTS / "kustomization.yaml")[0]
    for res in kust["resources"]:
        assert (MANIFESTS / res).is_file(), f"kustomization.yaml lists missing {res}"
    kubectl = require_tool("kubectl", "`make cluster-bin` builds it")
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(out.stdout) if d}
    assert {"CustomResourceDefinition", "Deployment", "Role", "RoleBinding", "ServiceAccount", "Service"} <= kinds


# --------------------------------------------------------------------------- the example GodRun


def _example() -> tuple[dict[str, Any], GodRun]:
    docs = objects(load_docs(MANIFESTS / "run" / "godrun.yaml"), "GodRun")
    assert len(docs) == 1
    return docs[0], GodRun.model_validate(docs[0])


def test_example_godrun_validates_and_is_the_seed_recipe() -> None:
    raw, run = _example()
    assert run.spec.training == Recipe(), "spec.training must equal the seed's values (Recipe defaults)"
    assert run.spec.gates == Gates() and run.spec.fallback == Fallback()
    assert run.spec.resources.gpus == 1 and run.spec.data.claim_name, "1 GPU and a PVC"
    written = set(raw["spec"]["training"])
    # Every recipe field is written out, except the port the controller sets.
    assert set(Recipe.model_fields) - written == {"metrics_port"}
    assert {f.alias for f in Gates.model_fields.values()} <= set(raw["spec"]["gates"])


def _kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", "`make cluster-bin` builds it")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_cpu_overlay_is_the_sample_with_the_demo_preset() -> None:
    """manifests/run-cpu: the sample GodRun with the CPU image and the demo's sizes, schedule and seed, nothing else."""
    from godrun.trainer.presets import DEMO_SEED, PRESETS

    sample, _ = _example()
    docs = _kustomize(MANIFESTS / "run-cpu")
    assert {d["kind"] for d in docs} == {"GodRun", "PersistentVolumeClaim"}
    cpu = GodRun.model_validate(objects(docs, "GodRun")[0])
    assert cpu.spec.training == Recipe.model_validate(Recipe().model_dump() | PRESETS["demo"] | {"seed": DEMO_SEED})
    assert cpu.spec.resources.gpus == 0 and cpu.spec.image.endswith("-cpu")
    rest = {
        k: v for k, v in cpu.model_dump(by_alias=True, exclude={"spec": {"training", "resources", "image"}}).items()
    }
    base = GodRun.model_validate(sample).model_dump(by_alias=True, exclude={"spec": {"training", "resources", "image"}})
    assert rest == base, "the CPU overlay changes only image, resources and the preset's training fields"
    prepare = objects(load_docs(MANIFESTS / "run-cpu" / "prepare-workspace.yaml"), "Job")[0]
    pod = prepare["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["containers"][0]["image"] == cpu.spec.image
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == cpu.spec.data.claim_name


def test_user_manifests_name_no_namespace() -> None:
    """The README applies the sample GodRun and its PVC with `kubectl apply -n NAMESPACE` into the namespace the
    Helm release watches; a namespace written in them would send the run where no controller looks."""
    for name in ("run/godrun.yaml", "run/workspace-pvc.yaml"):
        for doc in load_docs(MANIFESTS / name):
            assert "namespace" not in doc["metadata"], f"manifests/{name}: {doc['kind']} names a namespace"


def test_example_godrun_numbers_are_yaml_numbers() -> None:
    """`3e-4` is a string to YAML 1.1 parsers; the example must hold real floats."""
    raw, _ = _example()
    for key, value in raw["spec"]["training"].items():
        default = Recipe.model_fields[key].default
        if isinstance(default, float):
            assert isinstance(value, float), f"spec.training.{key} parsed as {type(value).__name__}"


def test_example_has_expected_hash_placeholder_comment() -> None:
    text = (MANIFESTS / "run" / "godrun.yaml").read_text()
    assert re.search(r"#\s*expectedHash:", text), "panel.expectedHash placeholder comment missing"


def test_example_matches_the_seed_command_line() -> None:
    """Independent of Recipe: parse the lab's own command (tests/fixtures holds a copy of it)."""
    seed = seed_training_flags()
    training = _example()[0]["spec"]["training"]
    assert len(seed) >= 50, "seed recipe block not parsed"
    for flag, values in seed.items():
        assert flag in training, f"seed flag --{flag} missing from spec.training"
        got = training[flag]
        if not values:
            assert got is True, flag
        elif len(values) > 1:
            assert got == values, flag
        elif isinstance(got, bool | str):
            assert str(got) == values[0], flag
        else:
            assert float(got) == float(values[0]), flag
    assert training["val_noise2noise"] is False and training["tta_reverse"] is False


# --------------------------------------------------------------------------- RBAC


def _rbac_docs() -> dict[str, list[dict[str, Any]]]:
    return {name: load_docs(MANIFESTS / "rbac" / name) for name in ("namespaced.yaml", "cluster.yaml")}


def _assert_least_privilege(rules: list[dict[str, Any]], where: str) -> None:
    for rule in rules:
        assert not rule.get("nonResourceURLs"), where
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"{where}: wildcard in {key}"
        assert not {"secrets", "configmaps", "pods/exec", "serviceaccounts/token"} & set(rule["resources"]), where
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), where


def test_rbac_is_least_privilege_and_covers_the_controller() -> None:
    for name, docs in _rbac_docs().items():
        roles = objects(docs, "Role") + objects(docs, "ClusterRole")
        assert roles, name
        for role in roles:
            _assert_least_privilege(role["rules"], f"{name}:{role['metadata']['name']}")
        grants = set().union(*(_grants(r["rules"]) for r in roles))
        assert grants >= CONTROLLER_NEEDS, f"{name} misses {sorted(CONTROLLER_NEEDS - grants)}"
        assert grants >= LEASE_NEEDS, name


def test_rbac_grants_exactly_the_calls_the_controller_makes() -> None:
    """Derived from the code, not its README: each API call is granted and nothing else is."""
    calls = _controller_calls() | ADMISSION_NEEDS
    assert len(calls) >= 10, f"the scan of godrun/controller found only {sorted(calls)}"
    optional = {("", "pods/proxy", "get")}  # only with --progress-source=proxy (the chart grants it then)
    assert _lease_lock_calls() == LEASE_NEEDS
    assert calls - optional == CONTROLLER_NEEDS, "update CONTROLLER_NEEDS and the RBAC files together"
    for name, docs in _rbac_docs().items():
        grants = set().union(*(_grants(r["rules"]) for r in objects(docs, "Role") + objects(docs, "ClusterRole")))
        assert grants == (calls - optional) | LEASE_NEEDS, f"{name}: extra {sorted(grants - calls - LEASE_NEEDS)}"


def test_cluster_rbac_keeps_leases_namespaced() -> None:
    docs = _rbac_docs()["cluster.yaml"]
    (cluster_role,) = objects(docs, "ClusterRole")
    assert not any(g == "coordination.k8s.io" for g, _, _ in _grants(cluster_role["rules"]))
    (lease_role,) = objects(docs, "Role")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert _grants(lease_role["rules"]) == LEASE_NEEDS
    namespaced = objects(_rbac_docs()["namespaced.yaml"], "Role")[0]
    assert _grants(namespaced["rules"]) == _grants(cluster_role["rules"]) | LEASE_NEEDS


def test_bindings_point_at_the_roles_and_the_service_account() -> None:
    for name, docs in _rbac_docs().items():
        roles = {(r["kind"], r["metadata"]["name"]) for r in objects(docs, "Role") + objects(docs, "ClusterRole")}
        bindings = objects(docs, "RoleBinding") + objects(docs, "ClusterRoleBinding")
        assert len(bindings) == len(roles), name
        for b in bindings:
            assert (b["roleRef"]["kind"], b["roleRef"]["name"]) in roles, name
            assert b["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NAMESPACE}], name


# --------------------------------------------------------------------------- controller Deployment


def _controller() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    (dep,) = load_docs(MANIFESTS / "controller/deployment.yaml")
    (svc,) = load_docs(MANIFESTS / "controller/service.yaml")
    (sa,) = load_docs(MANIFESTS / "controller/serviceaccount.yaml")
    return dep, svc, sa


def test_controller_deployment_passes_restricted_pod_security() -> None:
    dep = _controller()[0]
    for where, pod in pod_specs(dep):
        assert restricted_violations(pod) == [], where
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_restricted_checker_catches_violations() -> None:
    """The checker itself must fail on a root, privileged, hostPath pod (else the test above proves nothing)."""
    pod = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": True, "runAsUser": 0}}],
    }
    found = " ".join(restricted_violations(pod))
    for word in ("hostNetwork", "hostPath", "privileged", "allowPrivilegeEscalation", "ALL", "runAsNonRoot", "seccomp"):
        assert word in found


def test_controller_deployment_wiring() -> None:
    dep, svc, sa = _controller()
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == sa["metadata"]["name"] == SA
    (c,) = pod["containers"]
    args = c["args"]
    assert args[0] == "controller" and "--leader-elect" in args
    assert "--lease-name=godrun-controller" in args and "--namespace=$(POD_NAMESPACE)" in args
    env = {e["name"] for e in c["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"metrics", "health"}
    for obj in (dep, svc, sa):
        assert obj["metadata"]["namespace"] == NAMESPACE


def test_users_get_godruns_through_the_built_in_roles() -> None:
    """edit/admin may create GodRuns and view may read them, by aggregation (the kustomization applies it)."""
    docs = {d["metadata"]["name"]: d for d in load_docs(MANIFESTS / "rbac/user-roles.yaml")}
    assert "rbac/user-roles.yaml" in load_docs(MANIFESTS / "kustomization.yaml")[0]["resources"]
    edit, view = docs["godrun-edit"]["metadata"]["labels"], docs["godrun-view"]["metadata"]["labels"]
    assert edit["rbac.authorization.k8s.io/aggregate-to-edit"] == edit["rbac.authorization.k8s.io/aggregate-to-admin"]
    assert view["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    verbs = {v for r in docs["godrun-edit"]["rules"] if "godruns" in r["resources"] for v in r["verbs"]}
    assert {"create", "patch", "delete"} <= verbs
    assert {v for r in docs["godrun-view"]["rules"] for v in r["verbs"]} == {"get", "list", "watch"}
