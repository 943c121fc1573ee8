"""Generate docs/reference.md from the GodRun model (`python -m godrun.docs > docs/reference.md`).

The committed copy is checked by a test: edit godrun/spec.py, then regenerate.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo

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
        nested = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        line = f"| `{path}` | {_type_name(ann)} | {_default(info)} | {info.description or ''} |"
        yield line, nested, path


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
