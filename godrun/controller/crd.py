"""`godrun crd`: the GodRun CustomResourceDefinition, generated from the pydantic models in godrun.spec.

The pydantic JSON schema is rewritten into a Kubernetes *structural* OpenAPI v3 schema: every $ref inlined,
`X | None` turned into `nullable: true`, a `type` on every node, `exclusiveMinimum` in the OpenAPI 3.0 form,
defaults (including the ones pydantic only knows as default factories) and the field descriptions that
`kubectl explain` shows. Cross-field rules become CEL `x-kubernetes-validations` (table `CEL_RULES`, the one
place each CEL rule lives; tests check every rule's message against the pydantic validator it mirrors).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from godrun import spec
from godrun.contract.files import TERMINATION_LOG_ENV
from godrun.contract.words import APP_NAME, LABEL_NAME, LABEL_PART_OF, LABEL_RUN


def _key_rule(field: str, example: dict[str, Any]) -> dict[str, Any]:
    """Label/annotation key syntax (the API server's own rule) on a map's keys."""
    return {
        "rule": f"!has(self.{field}) || self.{field}.all(k, size(k) <= 316 && k.matches(r'{spec.LABEL_KEY_PATTERN}'))",
        "message": f"{field} {spec.KEY_SYNTAX_MESSAGE}",
        "fieldPath": f".{field}",
        "example": example,
    }


def _detector_rule(group: tuple[spec.DetectorLink, ...], example: dict[str, Any]) -> dict[str, Any]:
    """godrun.spec.detector_disagreement as CEL: each setting training uses equals the gates' one."""

    def equal(link: spec.DetectorLink) -> str:
        same = f"self.training.{link.recipe} == self.gates.{to_camel(link.gates)}"
        return f"(self.training.baseline != 'local' || {same})" if link.with_local_baseline else same

    rule = " && ".join(equal(k) for k in group)
    if group[0].with_dip_loss:
        rule = f"!self.training.dip_loss || ({rule})"
    field = next(iter(example["gates"]))  # the gates field the example breaks
    return {
        "rule": rule,
        "message": spec.detector_rule_message(group),
        "fieldPath": f".gates.{field}",
        "example": example,
    }


def _detector_rules() -> list[dict[str, Any]]:
    roi, dips = spec.detector_rule_groups()
    return [_detector_rule(roi, {"gates": {"roiMinNm": 300.0}}), _detector_rule(dips, {"gates": {"dipGuardNm": 8.0}})]


# CEL rules, keyed by the pydantic model they sit on; each mirrors a model_validator in godrun.spec.
# `example` is a spec patch (YAML path into GodRunSpec) that breaks the rule; tests feed it to pydantic.
CEL_RULES: dict[str, list[dict[str, Any]]] = {
    "Recipe": [
        {
            "rule": "self.lr_min <= self.lr",
            "message": "lr_min must be <= lr",
            "fieldPath": ".lr_min",
            "example": {"training": {"lr": 1e-4, "lr_min": 1e-3}},
        },
        {
            "rule": "self.deriv_roi_max > self.deriv_roi_min",
            "message": "deriv_roi_max must be > deriv_roi_min",
            "fieldPath": ".deriv_roi_max",
            "example": {"training": {"deriv_roi_min": 500.0, "deriv_roi_max": 320.0}},
        },
        {
            "rule": "!self.noise2noise_pairwise || self.noise2noise",
            "message": "noise2noise_pairwise requires noise2noise",
            "fieldPath": ".noise2noise_pairwise",
            "example": {"training": {"noise2noise": False, "noise2noise_pairwise": True}},
        },
        {
            "rule": "!self.freeze_backbone || self.calibrator_head",
            "message": "freeze_backbone requires calibrator_head",
            "fieldPath": ".freeze_backbone",
            "example": {"training": {"freeze_backbone": True, "calibrator_head": False}},
        },
        {
            "rule": "self.subspace_rank == 0 || (self.subspace_rank < self.subspace_window"
            " && self.subspace_window <= self.sequence_length)",
            "message": spec.SUBSPACE_MESSAGE,
            "fieldPath": ".subspace_window",
            "example": {"training": {"subspace_rank": 8, "subspace_window": 8}},
        },
    ],
    "Gates": [
        {
            "rule": "self.roiMaxNm > self.roiMinNm",
            "message": "roiMaxNm must be > roiMinNm",
            "fieldPath": ".roiMaxNm",
            "example": {"gates": {"roiMinNm": 500.0, "roiMaxNm": 400.0}},
        },
    ],
    "PodOverrides": [
        _key_rule("labels", {"podOverrides": {"labels": {"team/": "x"}}}),
        _key_rule("annotations", {"podOverrides": {"annotations": {"has space": "x"}}}),
        {
            "rule": "!has(self.labels) || self.labels.all(k, "
            + " && ".join(f"!k.startsWith('{p}')" for p in spec.RESERVED_LABEL_PREFIXES)
            + ")",
            "message": spec.RESERVED_LABELS_MESSAGE,
            "fieldPath": ".labels",
            "example": {"podOverrides": {"labels": {LABEL_NAME: "mine"}}},
        },
        {
            "rule": "!has(self.env) || self.env.all(e, !e.name.startsWith('GODRUN_'))",
            "message": spec.RESERVED_ENV_MESSAGE,
            "fieldPath": ".env",
            "example": {"podOverrides": {"env": [{"name": TERMINATION_LOG_ENV, "value": "x"}]}},
        },
        {
            "rule": "!has(self.volumes) || self.volumes.all(v, !(v.name in "
            + repr(list(spec.RESERVED_VOLUMES)).replace('"', "'")
            + "))",
            "message": spec.RESERVED_VOLUMES_MESSAGE,
            "fieldPath": ".volumes",
            "example": {"podOverrides": {"volumes": [{"name": "data", "emptyDir": {}}]}},
        },
    ],
    "JobPolicy": [
        _key_rule("labels", {"jobs": {"labels": {"-bad-": "x"}}}),
        _key_rule("annotations", {"jobs": {"annotations": {"a/b/c": "x"}}}),
        {
            "rule": "!has(self.labels) || self.labels.all(k, "
            + " || ".join(f"k == '{k}'" for k in spec.JOB_LABELS_ALLOWED)
            + " || ("
            + " && ".join(f"!k.startsWith('{p}')" for p in spec.RESERVED_LABEL_PREFIXES)
            + "))",
            "message": spec.RESERVED_LABELS_MESSAGE,
            "fieldPath": ".labels",
            "example": {"jobs": {"labels": {LABEL_RUN: "other"}}},
        },
    ],
    "GodRunSpec": [
        *_detector_rules(),
        {
            "rule": "self.resources.nodes <= 1 || has(self.data.claimName)",
            "message": "nodes > 1 requires data.claimName",
            "fieldPath": ".data.claimName",
            "example": {"resources": {"nodes": 2}},
        },
    ],
}

# metadata.name is only reachable from the root of the schema; the same limits as godrun.spec (ObjectMeta, GodRun).
NAME_RULES: list[dict[str, Any]] = [
    {
        "rule": f"size(self.metadata.name) <= {spec.MAX_RUN_NAME}",
        "message": f"metadata.name must be at most {spec.MAX_RUN_NAME} characters (names derived from it must fit)",
    },
    {
        "rule": "!has(self.spec.fallback) || !has(self.spec.fallback.launchActB) || !self.spec.fallback.launchActB"
        f" || size(self.metadata.name) <= {spec.MAX_PARENT_NAME}",
        "message": f"metadata.name must be at most {spec.MAX_PARENT_NAME} characters when spec.fallback.launchActB "
        f"(its Act B child <name>{spec.ACT_B_SUFFIX} must fit)",
    },
]

# Transition rules (CEL `self == oldSelf`, which pydantic cannot mirror): the recipe, its data, panel, gates
# and compute are fixed once a GodRun exists; a new recipe is a new GodRun (a mid-run edit would resume a
# checkpoint of another recipe). image, jobs, fallback, suspend and podOverrides stay editable.
IMMUTABLE_SPEC_FIELDS = spec.IMMUTABLE_SPEC_FIELDS


def _immutable_rule(field: str) -> dict[str, str]:
    message = f"spec.{field} is immutable: create a new GodRun for a new recipe"
    if field not in spec.EDITABLE_IN_IMMUTABLE:
        return {"rule": "self == oldSelf", "message": message}
    cls = spec.GodRunSpec.model_fields[field].annotation
    assert isinstance(cls, type) and issubclass(cls, BaseModel), field
    editable = [_alias(cls, f) for f in spec.EDITABLE_IN_IMMUTABLE[field]]
    keys = [_alias(cls, f) for f in cls.model_fields if _alias(cls, f) not in editable]
    same = [f"(has(self.{k}) ? has(oldSelf.{k}) && self.{k} == oldSelf.{k} : !has(oldSelf.{k}))" for k in keys]
    return {"rule": " && ".join(same), "message": f"{message} (only {', '.join(editable)} may change)"}


_LABEL_VALUE = {"type": "string", "maxLength": 63, "pattern": spec.LABEL_VALUE_PATTERN}
_NAMED_OBJECT = {
    "type": "object",
    "required": ["name"],
    "description": "A core/v1 object with a name; the API server checks the rest when it checks the Job.",
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 253, "description": "Name."}},
    "x-kubernetes-preserve-unknown-fields": True,
}

# Kubernetes-only additions to single properties: (model, python field name) -> schema keys.
# maxItems/maxProperties bound CEL cost and etcd size; list-type set/map makes the server refuse duplicates.
PROPERTY_EXTRAS: dict[tuple[str, str], dict[str, Any]] = {
    ("Recipe", "film_features"): {"maxItems": len(spec.FILM_FEATURES), "x-kubernetes-list-type": "set"},
    ("Resources", "tolerations"): {"maxItems": 32},
    ("Resources", "node_selector"): {"maxProperties": 32},
    # label values as the API server checks them (keys: their syntax and the reserved prefixes by CEL rules)
    ("PodOverrides", "labels"): {
        "maxProperties": 32,
        "additionalProperties": _LABEL_VALUE,
    },
    ("JobPolicy", "labels"): {"maxProperties": 32, "additionalProperties": _LABEL_VALUE},
    ("JobPolicy", "annotations"): {"maxProperties": 32},
    # a name CEL can read (the rest of a core/v1 Volume or VolumeMount is the API server's to check)
    ("PodOverrides", "volumes"): {"maxItems": 16, "items": _NAMED_OBJECT},
    ("PodOverrides", "volume_mounts"): {"maxItems": 16, "items": _NAMED_OBJECT},
    ("PodOverrides", "annotations"): {"maxProperties": 32},
    ("GodRunStatus", "conditions"): {
        "maxItems": 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    },
    ("Verdict", "gates"): {"maxItems": 4},
    ("Verdict", "failed_gates"): {"maxItems": 4},
    ("GateResult", "checks"): {"maxItems": 16},
}

# Run-volume paths (godrun.spec.RUN_PATH_FIELDS): the same rule as spec.run_path_problem, in CEL and a pattern.
RUN_PATH_CEL = {
    "rule": "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",
    "message": "must be a path relative to the run volume, without `..`",
}
OWN_FOLDER_CEL = {"rule": "self != '.' && self != './'", "message": "must name a folder inside the run volume"}
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"


def _run_path_extras() -> dict[tuple[str, str], dict[str, Any]]:
    owners = {"Recipe": "training", "PanelSpec": "panel", "Fallback": "fallback"}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for model, fields in spec.RUN_PATH_FIELDS.items():
        for name in fields:
            where = f"{owners[model]}.{name}"
            rules = [RUN_PATH_CEL]
            if where in spec.OWN_FOLDERS:
                rules.append(OWN_FOLDER_CEL)
            if where in spec.APPENDED_FILES:
                suffix = spec.APPENDED_FILES[where]
                rules.append({"rule": f"self.endsWith('{suffix}')", "message": f"must be a {suffix} file"})
            out[(model, name)] = {"pattern": NO_CONTROL_PATTERN, "x-kubernetes-validations": rules}
    return out


PROPERTY_EXTRAS |= _run_path_extras()

_COPY_KEYS = (
    "type",
    "description",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "required",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
)


def _model_class(name: str) -> type[BaseModel] | None:
    cls = getattr(spec, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _factory_defaults(cls: type[BaseModel]) -> dict[str, Any]:
    """Defaults pydantic keeps as default_factory (absent from its JSON schema), keyed by alias."""
    out: dict[str, Any] = {}
    for fname, field in cls.model_fields.items():
        if field.default_factory is None:
            continue
        value = field.get_default(call_default_factory=True, validated_data={})
        key = field.alias or fname
        # A nested object's default is written out in full: the apiserver checks CEL rules against the
        # default itself, so `default: {}` on an object whose rules name its fields is refused.
        out[key] = (
            value.model_dump(mode="json", by_alias=True, exclude_none=True) if isinstance(value, BaseModel) else value
        )
    return out


def _alias(cls: type[BaseModel], fname: str) -> str:
    return cls.model_fields[fname].alias or fname


def _convert(node: dict[str, Any], defs: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """One pydantic JSON-schema node -> one structural OpenAPI v3 node."""
    if "$ref" in node or ("allOf" in node and len(node["allOf"]) == 1):
        ref = node["$ref"] if "$ref" in node else node["allOf"][0]["$ref"]
        name = ref.rsplit("/", 1)[-1]
        out = _convert(defs[name], defs, model=name)
        for key in ("description", "default"):
            if key in node:
                out[key] = node[key]
        return _finish(out)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union {node} in a structural schema")
        out = _convert(options[0], defs)
        if len(options) < len(node["anyOf"]):
            out["nullable"] = True
        for key in ("description", "default"):
            if key in node:
                out[key] = node[key]
        return _finish(out)

    out = {k: node[k] for k in _COPY_KEYS if k in node}
    if "default" in node:
        out["default"] = node["default"]
    if "const" in node:
        out["enum"] = [node["const"]]
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "number"
    for bound, exclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:  # JSON Schema 2020 numeric form -> OpenAPI 3.0 boolean form
            out[exclusive] = node[bound]
            out[bound] = True
    if "items" in node:
        out["items"] = _convert(node["items"], defs)
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {k: _convert(v, defs) for k, v in node["properties"].items()}
        cls = _model_class(model) if model else None
        if model and cls is not None:
            _decorate_model(out, cls, model)
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"], defs)
    return _finish(out)


def _decorate_model(out: dict[str, Any], cls: type[BaseModel], model: str) -> None:
    for key, value in _factory_defaults(cls).items():
        out["properties"][key].setdefault("default", value)
    for (owner, fname), extra in PROPERTY_EXTRAS.items():
        if owner == model:
            out["properties"][_alias(cls, fname)].update(extra)
    if model == "GodRunSpec":
        for field in IMMUTABLE_SPEC_FIELDS:
            out["properties"][field].setdefault("x-kubernetes-validations", []).append(_immutable_rule(field))
    rules = CEL_RULES.get(model)
    if rules:
        out["x-kubernetes-validations"] = [{k: r[k] for k in ("rule", "message", "fieldPath")} for r in rules]


def _finish(out: dict[str, Any]) -> dict[str, Any]:
    if out.get("default", 0) is None:
        del out["default"]
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)  # int-or-string nodes carry no type (structural schema rule)
        return out
    if "type" not in out:
        raise ValueError(f"schema node without a type: {out}")
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model (camelCase aliases, every $ref inlined)."""
    raw = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, model=model.__name__)


def printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Verdict", "type": "string", "jsonPath": ".status.panel.verdict"},
        {"name": "PSNR", "type": "number", "jsonPath": ".status.panel.psnrMean", "description": "Panel mean PSNR (dB)"},
        {"name": "SAM", "type": "number", "jsonPath": ".status.panel.samMean", "description": "Panel mean SAM (deg)"},
        {"name": "Epoch", "type": "integer", "jsonPath": ".status.progress.epoch"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object (apiextensions.k8s.io/v1)."""
    schema = {
        "type": "object",
        "description": spec.GodRunSpec.__doc__,
        "required": ["spec"],
        "x-kubernetes-validations": NAME_RULES,
        "properties": {
            "apiVersion": {"type": "string", "description": "godrun.io/v1alpha1"},
            "kind": {"type": "string", "description": "GodRun"},
            "metadata": {"type": "object"},
            "spec": openapi_schema(spec.GodRunSpec),
            "status": openapi_schema(spec.GodRunStatus),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{spec.PLURAL}.{spec.API_GROUP}",
            "labels": {LABEL_NAME: APP_NAME, LABEL_PART_OF: APP_NAME},
        },
        "spec": {
            "group": spec.API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": spec.KIND,
                "listKind": f"{spec.KIND}List",
                "plural": spec.PLURAL,
                "singular": spec.SINGULAR,
                "shortNames": [spec.SHORT_NAME],
                # not "all": `kubectl delete all --all` must not delete GodRuns (and, through them, their Jobs)
                "categories": ["godrun"],
            },
            "versions": [
                {
                    "name": spec.API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `godrun crd` from godrun/spec.py; do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="godrun crd", description="Print the GodRun CustomResourceDefinition (YAML).")
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    text = crd_yaml()
    if args.output:
        from godrun.fsio import atomic_write_text

        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
