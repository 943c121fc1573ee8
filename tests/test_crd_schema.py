"""The GodRun CRD: committed file matches `godrun crd`, the schema is structural, CEL rules mirror pydantic."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from godrun.controller import crd as crd_mod
from godrun.spec import GodRunSpec, GodRunStatus

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "manifests" / "crd" / "godruns.godrun.io.yaml"
ALLOWED_KEYS = {
    "type", "description", "properties", "items", "additionalProperties", "required", "enum", "default",
    "nullable", "format", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "minItems", "maxItems", "maxProperties", "x-kubernetes-validations",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip


def _schema() -> dict:
    return crd_mod.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict, path: str = ""):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_generator(capsys):
    assert crd_mod.main([]) == 0
    printed = capsys.readouterr().out
    assert COMMITTED.exists(), "run `godrun crd -o manifests/crd/godruns.godrun.io.yaml`"
    assert COMMITTED.read_text() == printed, "manifests/crd drifted from `godrun crd`; regenerate it"


def test_crd_identity_and_columns():
    c = crd_mod.crd()
    assert c["metadata"]["name"] == "godruns.godrun.io"
    s = c["spec"]
    assert (s["group"], s["scope"], s["names"]["shortNames"]) == ("godrun.io", "Namespaced", ["gr"])
    (v,) = s["versions"]
    assert v["name"] == "v1alpha1" and v["subresources"] == {"status": {}}
    cols = {col["name"]: col["jsonPath"] for col in v["additionalPrinterColumns"]}
    assert cols["Phase"] == ".status.phase" and cols["Verdict"] == ".status.panel.verdict"
    assert cols["PSNR"] == ".status.panel.psnrMean" and cols["SAM"] == ".status.panel.samMean"
    assert cols["Epoch"] == ".status.progress.epoch" and cols["Age"] == ".metadata.creationTimestamp"
    # every printer column path exists in the status schema
    schema = _schema()
    for path in cols.values():
        if path.startswith(".status"):
            node = schema
            for part in path.strip(".").split("."):
                node = node["properties"][part]


def test_structural_every_node_typed_no_refs_no_unions():
    text = yaml.safe_dump(_schema())
    assert "$ref" not in text and "anyOf" not in text and "allOf" not in text and "title" not in text
    for path, node in _walk(_schema()):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert set(node) <= ALLOWED_KEYS, f"{path}: unexpected keys {set(node) - ALLOWED_KEYS}"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("exclusiveMinimum") is not None:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path
        if node.get("x-kubernetes-int-or-string"):
            continue
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"
        if "default" in node and node["type"] in ("number", "integer"):
            lo, hi = node.get("minimum", float("-inf")), node.get("maximum", float("inf"))
            assert lo <= node["default"] <= hi, path


def test_descriptions_and_defaults_follow_pydantic():
    spec = _schema()["properties"]["spec"]
    training = spec["properties"]["training"]
    assert training["properties"]["lr"]["default"] == 3e-4
    assert training["properties"]["lr"]["minimum"] == 0 and training["properties"]["lr"]["exclusiveMinimum"] is True
    assert training["properties"]["film_features"]["default"] == list(GodRunSpec(image="x").training.film_features)
    assert spec["properties"]["gates"]["properties"]["psnrMeanMin"]["default"] == 18.0
    assert spec["properties"]["resources"]["default"] == GodRunSpec(image="x").resources.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert spec["properties"]["training"]["default"]["lr_min"] == 3e-5  # CEL rules are checked on defaults
    assert spec["properties"]["image"]["minLength"] == 1 and spec["required"] == ["image"]
    assert training["properties"]["init_checkpoint"]["nullable"] is True
    assert spec["properties"]["panel"]["properties"]["expectedHash"]["pattern"] == "^[0-9a-f]{64}$"
    for path, node in _walk(spec):
        if path.endswith(("[]", "{}")):
            continue
        assert node.get("description"), f"spec{path} has no description (kubectl explain shows it)"
    # every pydantic field is in the schema, under its alias
    for name, f in GodRunSpec.model_fields.items():
        assert (f.alias or name) in spec["properties"]
    assert set(GodRunStatus.model_fields) and "observedGeneration" in _schema()["properties"]["status"]["properties"]


def _cel_rules() -> list[tuple[str, dict]]:
    return [(model, rule) for model, rules in crd_mod.CEL_RULES.items() for rule in rules]


def test_cel_rules_are_in_the_schema():
    found = [
        r
        for path, node in _walk(_schema())
        if path and node.get("type") == "object"  # the run-path rules on strings: test_verdict_integrity
        for r in node.get("x-kubernetes-validations", [])
    ]
    found = [r for r in found if "oldSelf" not in r["rule"]]  # transition rules: test_spec_parts_immutable
    assert len(found) == len(_cel_rules()) >= 5
    for r in found:
        assert set(r) == {"rule", "message", "fieldPath"} and r["message"]


@pytest.mark.parametrize(("model", "rule"), _cel_rules(), ids=lambda x: x if isinstance(x, str) else x["message"])
def test_each_cel_rule_mirrors_a_pydantic_validator(model, rule):
    """The example that breaks the CEL rule is refused by pydantic with the same message (numbers aside)."""
    with pytest.raises(ValidationError) as err:
        GodRunSpec.model_validate({"image": "x", **copy.deepcopy(rule["example"])})
    messages = [re.sub(r" \([^)]*\)", "", e["msg"].removeprefix("Value error, ")) for e in err.value.errors()]
    assert rule["message"] in messages
    # and the fields the rule reads exist on that model's schema node
    for field in re.findall(r"self\.(\w+)", rule["rule"]):
        assert any(field in node.get("properties", {}) for _, node in _walk(_schema())), field


def test_film_features_set_and_bounded():
    node = _schema()["properties"]["spec"]["properties"]["training"]["properties"]["film_features"]
    assert node["x-kubernetes-list-type"] == "set" and node["maxItems"] == 8 and node["minItems"] == 1
    assert set(node["items"]["enum"]) == set(GodRunSpec(image="x").training.film_features)


def test_name_rules_at_the_root_match_the_pydantic_limits():
    """metadata.name is refused by the server exactly where pydantic refuses it (derived names must fit)."""
    from godrun.spec import MAX_PARENT_NAME, MAX_RUN_NAME, GodRun

    assert _schema()["x-kubernetes-validations"] == crd_mod.NAME_RULES
    assert [f"<= {MAX_RUN_NAME}", f"<= {MAX_PARENT_NAME}"] == [r["rule"][-6:] for r in crd_mod.NAME_RULES]

    def body(name: str, act_b: bool) -> dict:
        spec = {"image": "x", "fallback": {"launchActB": act_b}}
        return {"apiVersion": "godrun.io/v1alpha1", "kind": "GodRun", "metadata": {"name": name}, "spec": spec}

    GodRun.model_validate(body("a" * MAX_RUN_NAME, False))
    GodRun.model_validate(body("a" * MAX_PARENT_NAME, True))
    with pytest.raises(ValidationError, match=r"metadata\.name"):
        GodRun.model_validate(body("a" * (MAX_RUN_NAME + 1), False))
    with pytest.raises(ValidationError, match=r"metadata\.name: at most 233 characters when spec\.fallback"):
        GodRun.model_validate(body("a" * (MAX_PARENT_NAME + 1), True))


def test_spec_parts_immutable():
    spec = _schema()["properties"]["spec"]["properties"]
    for field in ("training", "data", "panel", "gates"):
        rules = [r for r in spec[field]["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
        assert rules == [
            {"rule": "self == oldSelf", "message": f"spec.{field} is immutable: create a new GodRun for a new recipe"}
        ], field
    (resources,) = [r for r in spec["resources"]["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    assert "queueName" not in resources["rule"] and "(only queueName may change)" in resources["message"]
    for key in spec["resources"]["properties"]:  # every other field is compared
        assert key == "queueName" or f"self.{key} == oldSelf.{key}" in resources["rule"], key
    for field in ("image", "jobs", "fallback", "suspend", "podOverrides"):
        assert "oldSelf" not in str(spec[field].get("x-kubernetes-validations", [])), field


def test_quantities_are_int_or_string_with_the_kubernetes_pattern():
    res = _schema()["properties"]["spec"]["properties"]["resources"]["properties"]
    for field in ("cpu", "memory", "shmSize"):
        node = res[field]
        assert node["x-kubernetes-int-or-string"] is True and "type" not in node
        pattern = re.compile(node["pattern"])
        for good in ("8", "500m", "64Gi", "1.5", "1e3", ".5"):
            assert pattern.match(good), good
        for bad in ("1.2.3", "16Gii", "64 Gi", "lots", "8gb"):
            assert not pattern.match(bad), bad


def test_categories_leave_out_all():
    assert crd_mod.crd()["spec"]["names"]["categories"] == ["godrun"]


def test_conditions_are_shaped_like_metav1_condition():
    cond = _schema()["properties"]["status"]["properties"]["conditions"]["items"]
    assert set(cond["required"]) == {"type", "status", "reason", "lastTransitionTime"}
    assert cond["properties"]["reason"]["pattern"] == "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    assert cond["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert cond["properties"]["observedGeneration"]["minimum"] == 0
