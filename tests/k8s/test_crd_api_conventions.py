"""API conventions enforced by the API server itself: immutable recipe parts (CEL transition rules),
int-or-string quantities, metav1.Condition-shaped status conditions, no `all` category."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kubernetes.client.rest import ApiException

from godrun.testcluster import Cluster
from k8s.test_crd_validation import create, example, godruns, set_path  # noqa: F401  (godruns: module fixture)

pytestmark = pytest.mark.k8s

GROUP, VERSION, PLURAL = "godrun.io", "v1alpha1", "godruns"
CRD = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "godruns.godrun.io.yaml"


def _patch(api, ns: str, name: str, spec_patch: dict) -> dict:
    return api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": spec_patch})


@pytest.mark.parametrize(
    ("field", "patch"),
    [
        ("training", {"training": {"epochs": 3}}),
        ("data", {"data": {"mountPath": "/elsewhere"}}),
        ("panel", {"panel": {"outputDir": "other"}}),
        ("gates", {"gates": {"psnrMeanMin": 10.0}}),
        ("resources", {"resources": {"gpus": 2}}),
    ],
)
def test_recipe_parts_are_immutable(godruns, k8s_namespace: str, field: str, patch: dict) -> None:  # noqa: F811
    create(godruns, example(k8s_namespace, "fixed"))
    with pytest.raises(ApiException) as err:
        _patch(godruns, k8s_namespace, "fixed", patch)
    assert err.value.status == 422, err.value.body
    assert f"spec.{field} is immutable: create a new GodRun for a new recipe" in err.value.body


def test_image_suspend_and_overrides_stay_editable(godruns, k8s_namespace: str) -> None:  # noqa: F811
    create(godruns, example(k8s_namespace, "editable"))
    out = _patch(
        godruns,
        k8s_namespace,
        "editable",
        {"image": "reg/godrun:2", "suspend": True, "podOverrides": {"runtimeClassName": "nvidia"}},
    )
    assert out["spec"]["suspend"] is True and out["spec"]["podOverrides"]["runtimeClassName"] == "nvidia"


@pytest.mark.parametrize(
    ("path", "value", "accepted"),
    [
        ("spec.resources.cpu", 8, True),
        ("spec.resources.cpu", "500m", True),
        ("spec.resources.memory", "64Gi", True),
        ("spec.resources.cpu", "1.2.3", False),
        ("spec.resources.memory", "16Gii", False),
        ("spec.resources.cpu", 0.5, False),
        ("spec.resources.nodes", 2, False),  # nodes > 1 without a (ReadWriteMany) claim
        ("spec.podOverrides.runtimeClassName", "NVIDIA", False),
        ("spec.podOverrides.imagePullSecrets", ["Bad_Name"], False),
    ],
)
def test_quantities_and_overrides(godruns, k8s_namespace: str, path: str, value, accepted: bool) -> None:  # noqa: F811
    obj = example(k8s_namespace, "q")
    set_path(obj, path, value)
    if path.endswith("nodes"):
        obj["spec"]["data"].pop("claimName", None)
    if accepted:
        created = create(godruns, obj)
        assert str(created["spec"]["resources"][path.rsplit(".", 1)[1]]) == str(value)
        return
    with pytest.raises(ApiException) as err:
        create(godruns, obj)
    assert err.value.status == 422 and path.rsplit(".", 1)[1] in err.value.body, err.value.body


def _condition(**over) -> dict:
    base = {
        "type": "Succeeded",
        "status": "True",
        "reason": "GatesPassed",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    return {**base, **over}


@pytest.mark.parametrize(
    ("condition", "accepted"),
    [
        (_condition(observedGeneration=1, message="ok"), True),
        ({k: v for k, v in _condition().items() if k != "reason"}, False),
        (_condition(reason="Failed-ActB"), False),
        ({k: v for k, v in _condition().items() if k != "lastTransitionTime"}, False),
    ],
)
def test_status_conditions_follow_metav1_condition(godruns, k8s_namespace: str, condition, accepted) -> None:  # noqa: F811
    name = "cond"
    created = create(godruns, example(k8s_namespace, name))
    body = copy.deepcopy(created)
    body["status"] = {"phase": "Shipped", "conditions": [condition]}
    call = (GROUP, VERSION, k8s_namespace, PLURAL, name, body)
    if accepted:
        out = godruns.replace_namespaced_custom_object_status(*call)
        assert out["status"]["conditions"][0]["reason"] == "GatesPassed"
        return
    with pytest.raises(ApiException) as err:
        godruns.replace_namespaced_custom_object_status(*call)
    assert err.value.status == 422 and "status.conditions[0]" in err.value.body, err.value.body


def test_kubectl_delete_all_leaves_godruns(godruns, k8s_cluster: Cluster, k8s_namespace: str) -> None:  # noqa: F811
    create(godruns, example(k8s_namespace, "kept"))
    names = k8s_cluster.kubectl("get", "all", "-n", k8s_namespace, "-o", "name").stdout
    assert "godrun" not in names
    assert "godrun.godrun.io/kept" in k8s_cluster.kubectl("get", "godrun", "-n", k8s_namespace, "-o", "name").stdout


def _words(text: str) -> str:
    return " ".join(text.split())


def test_kubectl_explain_shows_spec_descriptions(godruns, k8s_cluster: Cluster) -> None:  # noqa: F811
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props = schema["properties"]["spec"]["properties"]
    out = _words(k8s_cluster.kubectl("explain", "godrun.spec").stdout)
    for name in ("training", "gates"):
        assert _words(props[name]["description"]) in out, (name, out)
    deeper = _words(k8s_cluster.kubectl("explain", "godrun.spec.gates.psnrMeanMin").stdout)
    assert _words(props["gates"]["properties"]["psnrMeanMin"]["description"]) in deeper, deeper
