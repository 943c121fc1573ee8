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
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
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
        assert "type" in node, f"{path} has no type"
        assert set(node) <= ALLOWED_KEYS, f"{path}: unexpected keys {set(node) - ALLOWED_KEYS}"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("exclusiveMinimum") is not None:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path
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
        r for _, node in _walk(_schema()) if node["type"] == "object" for r in node.get("x-kubernetes-validations", [])
    ]
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
