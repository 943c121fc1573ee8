"""Generate docs/reference.md from the GodRun model (`python -m godrun.docs > docs/reference.md`).

The committed copy is checked by a test: edit godrun/spec.py, then regenerate.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from godrun.controller.crd import IMMUTABLE_SPEC_FIELDS
from godrun.spec import GodRunSpec, GodRunStatus, Recipe


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "map"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, list) and value and isinstance(value[0], str):
        return "`" + " ".join(value) + "`"
    return f"`{value}`" if value not in (None, [], {}) else "—"


def _rows(model: type[BaseModel], prefix: str, camel: bool) -> Iterator[tuple[str, type[BaseModel] | None, str]]:
    for name, info in model.model_fields.items():
        key = (info.alias or name) if camel else name
        path = f"{prefix}.{key}"
        ann = info.annotation
        nested = _model_in(ann)
        line = f"| `{path}` | {_type_name(ann)} | {_default(info)} | {info.description or ''} |"
        yield line, nested, path


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model a field holds: itself, optional, or as list items (documented in a section of its own)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _section(title: str, model: type[BaseModel], prefix: str, camel: bool = True) -> list[str]:
    out = [
        f"## {title}",
        "",
        (model.__doc__ or "").strip(),
        "",
        "| field | type | default | meaning |",
        "|---|---|---|---|",
    ]
    nested_sections: list[str] = []
    for line, nested, path in _rows(model, prefix, camel):
        out.append(line)
        if nested is not None and nested is not Recipe:
            nested_sections += ["", *_section(f"`{path}`", nested, path, camel)]
    return out + nested_sections


def render() -> str:
    head = [
        "# GodRun reference",
        "",
        "Generated from `godrun/spec.py` by `python -m godrun.docs`; do not edit by hand.",
        "`spec.training` fields are the trainer's flags: `spec.training.lr_min` is `--lr_min`.",
        "",
        "Immutable once the GodRun exists (the API server refuses the change; a new recipe is a new GodRun): "
        + ", ".join(f"`spec.{f}`" for f in IMMUTABLE_SPEC_FIELDS)
        + ". Editable: `spec.image`, `spec.imagePullPolicy`, `spec.jobs`, `spec.fallback`, `spec.suspend`, "
        "`spec.podOverrides`; a change starts the next generation's Jobs.",
        "",
        'Quantities (`cpu`, `memory`, `shmSize`) take an integer or a Kubernetes quantity string (`8`, `"500m"`, '
        "`64Gi`). Conditions are shaped like metav1.Condition; `Succeeded` and `Failed` become True when the run "
        "ends (`kubectl wait --for=condition=Succeeded gr/<name>`), and no condition stays Unknown after that.",
        "",
    ]
    body = _section("`spec`", GodRunSpec, "spec")
    body += ["", *_section("`spec.training` (the seed's recipe)", Recipe, "spec.training", camel=False)]
    body += ["", *_section("`status`", GodRunStatus, "status")]
    return "\n".join(head + body) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
