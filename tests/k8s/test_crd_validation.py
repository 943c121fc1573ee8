"""The apiserver itself rejects malformed GodRuns (OpenAPI schema + CEL from `godrun crd`), naming the field."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from tools import require_tool

from godrun.testcluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "run" / "godrun.yaml"
DELETE = object()

# (case id, dotted path to change, new value or DELETE, text the rejection must contain)
CASES = [
    ("image-missing", "spec.image", DELETE, "spec.image: Required value"),
    ("image-empty", "spec.image", "", "spec.image"),
    ("pull-policy", "spec.imagePullPolicy", "Sometimes", "spec.imagePullPolicy"),
    ("gpus-negative", "spec.resources.gpus", -1, "spec.resources.gpus"),
    ("nodes-zero", "spec.resources.nodes", 0, "spec.resources.nodes"),
    ("cpu-words", "spec.resources.cpu", "lots", "spec.resources.cpu"),
    ("memory-space", "spec.resources.memory", "64 Gi", "spec.resources.memory"),
    (
        "toleration-op",
        "spec.resources.tolerations",
        [{"key": "gpu", "operator": "Maybe"}],
        "spec.resources.tolerations[0].operator",
    ),
    ("tolerations-many", "spec.resources.tolerations", [{"operator": "Exists"}] * 33, "spec.resources.tolerations"),
    ("model", "spec.training.model", "transformer", "spec.training.model"),
    ("epochs-zero", "spec.training.epochs", 0, "spec.training.epochs"),
    ("bs-string", "spec.training.bs", "big", "spec.training.bs"),
    ("lr-zero", "spec.training.lr", 0.0, "spec.training.lr"),
    ("lr-min-above-lr", "spec.training.lr_min", 1.0, "spec.training.lr_min"),
    ("deriv-roi-order", "spec.training.deriv_roi_max", 100.0, "spec.training.deriv_roi_max"),
    ("pairwise-needs-n2n", "spec.training.noise2noise", False, "spec.training.noise2noise_pairwise"),
    ("freeze-needs-head", "spec.training.freeze_backbone", True, "spec.training.freeze_backbone"),
    ("film-empty", "spec.training.film_features", [], "spec.training.film_features"),
    ("film-unknown", "spec.training.film_features", ["cos_theta", "moon_phase"], "spec.training.film_features[1]"),
    ("amp-dtype", "spec.training.amp_dtype", "fp8", "spec.training.amp_dtype"),
    ("ema-decay", "spec.training.ema_decay", 1.5, "spec.training.ema_decay"),
    ("cutout-prob", "spec.training.cutout_prob", 2.0, "spec.training.cutout_prob"),
    ("device", "spec.training.device", "tpu", "spec.training.device"),
    ("underfill", "spec.training.dip_underfill_factor", 0.5, "spec.training.dip_underfill_factor"),
    ("unknown-flag", "spec.training.learning_rate", 0.1, "spec.training.learning_rate"),
    ("panel-hash", "spec.panel.expectedHash", "abc123", "spec.panel.expectedHash"),
    ("psnr-gate", "spec.gates.psnrMeanMin", 101.0, "spec.gates.psnrMeanMin"),
    ("sam-gate", "spec.gates.samMeanMax", -1.0, "spec.gates.samMeanMax"),
    ("tail-fraction", "spec.gates.tailFractionMin", 1.5, "spec.gates.tailFractionMin"),
    ("roi-order", "spec.gates.roiMaxNm", 300.0, "spec.gates.roiMaxNm"),
    ("roi-twice", "spec.gates.roiMinNm", 300.0, "must equal gates.roiMinNm/roiMaxNm"),
    ("dip-detector-twice", "spec.gates.dipGuardNm", 8.0, "spec.gates.dipGuardNm"),
    ("spurious-float", "spec.gates.spuriousPeaksMax", 1.5, "spec.gates.spuriousPeaksMax"),
    ("actb-epochs", "spec.fallback.actB.epochs", 0, "spec.fallback.actB.epochs"),
    ("backoff-negative", "spec.jobs.backoffLimit", -1, "spec.jobs.backoffLimit"),
    ("run-as-root", "spec.jobs.runAsUser", 0, "spec.jobs.runAsUser"),
    ("name-too-long", "metadata.name", "a" * 239, "metadata.name must be at most 238 characters"),
    ("metrics-port-too-big", "spec.training.metrics_port", 70000, "spec.training.metrics_port"),
    ("checkpoint-dir-up", "spec.training.checkpoint_dir", "../../x", "spec.training.checkpoint_dir"),
    ("checkpoint-dir-empty", "spec.training.checkpoint_dir", "", "spec.training.checkpoint_dir"),
    ("log-dir-absolute", "spec.training.log_dir", "/etc", "spec.training.log_dir"),
    ("train-dir-newline", "spec.training.train_dir", "data\nx", "spec.training.train_dir"),
    ("output-dir-root", "spec.panel.outputDir", ".", "spec.panel.outputDir"),
    ("panel-manifest-up", "spec.panel.manifest", "a/../../b.csv", "spec.panel.manifest"),
    ("analytics-doc-csv", "spec.fallback.analyticsDoc", "data/validation_panel.csv", "spec.fallback.analyticsDoc"),
    ("audit-log-pth", "spec.training.audit_log", "x.pth", "spec.training.audit_log"),
]


def godrun_crd() -> dict:
    exe = require_tool("godrun", "`make setup` installs the command")
    res = subprocess.run([exe, "crd"], capture_output=True, text=True)
    assert res.returncode == 0, f"`godrun crd` failed: {res.stderr.strip()[-400:]}"
    return yaml.safe_load(res.stdout)


@pytest.fixture(scope="module")
def godruns(k8s_cluster: Cluster) -> client.CustomObjectsApi:
    crd = godrun_crd()
    k8s_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=godrun-tests",
        "-f",
        "-",
        input=yaml.safe_dump(crd),
    )
    k8s_cluster.wait_crd_established(crd["metadata"]["name"])
    return client.CustomObjectsApi(k8s_cluster.api_client())


def example(namespace: str, name: str) -> dict:
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"] = {"name": name, "namespace": namespace}
    return obj


def set_path(obj: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    if value is DELETE:
        obj.pop(leaf, None)
    else:
        obj[leaf] = copy.deepcopy(value)


def create(api: client.CustomObjectsApi, obj: dict) -> dict:
    ns = obj["metadata"]["namespace"]
    return api.create_namespaced_custom_object("godrun.io", "v1alpha1", ns, "godruns", obj, field_validation="Strict")


def test_the_example_is_accepted(godruns: client.CustomObjectsApi, k8s_namespace: str) -> None:
    created = create(godruns, example(k8s_namespace, "accepted"))
    assert created["spec"]["training"]["epochs"] == example(k8s_namespace, "x")["spec"]["training"]["epochs"]


@pytest.mark.parametrize(("path", "value", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_godrun_is_rejected_naming_the_field(
    godruns: client.CustomObjectsApi, k8s_cluster: Cluster, path: str, value: object, expected: str
) -> None:
    obj = example("default", "malformed")
    set_path(obj, path, value)
    with pytest.raises(ApiException) as err:
        create(godruns, obj)
    assert err.value.status in (400, 422), err.value.body
    assert expected in err.value.body, err.value.body


def test_a_name_without_room_for_the_act_b_child_is_rejected(
    godruns: client.CustomObjectsApi, k8s_namespace: str
) -> None:
    obj = example(k8s_namespace, "a" * 234)
    obj["spec"].setdefault("fallback", {})["launchActB"] = True
    with pytest.raises(ApiException) as err:
        create(godruns, obj)
    assert "at most 233 characters when spec.fallback.launchActB" in err.value.body, err.value.body
    obj["metadata"]["name"] = "a" * 233
    assert create(godruns, obj)["metadata"]["name"] == "a" * 233


def test_cross_field_rule_rejects_with_its_message(godruns: client.CustomObjectsApi, k8s_namespace: str) -> None:
    obj = example(k8s_namespace, "cel")
    obj["spec"]["training"] |= {"lr": 1e-4, "lr_min": 1e-3}
    with pytest.raises(ApiException) as err:
        create(godruns, obj)
    assert err.value.status == 422 and "lr_min must be <= lr" in json.loads(err.value.body)["message"]
    obj = example(k8s_namespace, "img")
    obj["spec"]["image"] = ""
    with pytest.raises(ApiException) as err:
        create(godruns, obj)
    assert err.value.status == 422


def test_kubectl_shows_the_field_in_its_error(godruns: client.CustomObjectsApi, k8s_cluster: Cluster) -> None:
    obj = example("default", "via-kubectl")
    set_path(obj, "spec.gates.psnrMeanMin", -3.0)
    res = k8s_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert res.returncode != 0
    assert "spec.gates.psnrMeanMin" in res.stderr and "greater than or equal to 0" in res.stderr


def test_at_least_25_cases() -> None:
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)
