"""The trainer's command line, generated from `godrun.spec.Recipe` (one `--<field>` per field).

Booleans are `--<name>` (store_true) with a mutually exclusive `--no-<name>`; a boolean that is not
given is False, so the seed's command means exactly what it lists. Every other flag defaults to the
Recipe default. `recipe_to_argv` is the inverse the controller uses to build a Job's arguments.

Beyond the recipe the trainer takes the GodRun's gate thresholds (`--psnr-mean-min ...`, the evaluator's
flags, from godrun.gates.flags) for its best checkpoint and early stopping, and `--verify-data` /
`--no-verify-data` (spec.data.verify; on by default): re-hash every spectrum and reference against the
manifests and check the wavelength bounds against the grid before training.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from godrun.errors import InputError
from godrun.gates.flags import add_gate_flags, gates_from_args
from godrun.spec import Gates, Recipe, format_validation_error

NONE_WORDS = frozenset({"", "none", "None", "null"})


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None` annotations."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            inner = args[0]
            if get_origin(inner) is typing.Annotated:
                inner = get_args(inner)[0]
            return inner, True
    return annotation, False


def _none_or(conv: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text in NONE_WORDS else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def _add_field(parser: argparse.ArgumentParser, name: str, field: Any) -> None:
    annotation, optional = _unwrap_optional(field.annotation)
    default = field.get_default(call_default_factory=True)
    help_ = field.description or ""
    if annotation is bool:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(f"--{name}", dest=name, action="store_true", default=False, help=help_)
        group.add_argument(f"--no-{name}", dest=name, action="store_false", help=f"Turn off --{name}.")
        return
    kwargs: dict[str, Any] = {"dest": name, "default": default, "help": f"{help_} (default: {default})"}
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        kwargs["nargs"] = "+"
        if get_origin(item) is Literal:
            kwargs["choices"] = list(get_args(item))
        else:
            kwargs["type"] = item
    elif get_origin(annotation) is Literal:
        kwargs["choices"] = list(get_args(annotation))
    else:
        kwargs["type"] = _none_or(annotation) if optional else annotation
        kwargs["metavar"] = name.upper()
    parser.add_argument(f"--{name}", **kwargs)


def build_parser(prog: str = "python -m godrun.trainer", parser_cls: type = argparse.ArgumentParser) -> Any:
    parser = parser_cls(
        prog=prog,
        description="Train mamba_tiny_uv with the seed's recipe. Flags mirror godrun.spec.Recipe.",
        allow_abbrev=False,
    )
    for name, field in Recipe.model_fields.items():
        _add_field(parser, name, field)
    verify = parser.add_mutually_exclusive_group()
    verify.add_argument(
        "--verify-data",
        dest="verify_data",
        action="store_true",
        default=True,
        help="Re-hash every spectrum and reference against the manifests and check wavelength bounds (default).",
    )
    verify.add_argument("--no-verify-data", dest="verify_data", action="store_false", help="Turn off --verify-data.")
    add_gate_flags(parser)
    return parser


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise InputError(f"{self.prog}: {message}")


@dataclass(frozen=True)
class TrainerArgs:
    """Everything the trainer's command line says: the recipe, the gates it ranks by, whether to verify data."""

    recipe: Recipe
    gates: Gates
    verify_data: bool = True


def parse_trainer_args(argv: Sequence[str]) -> TrainerArgs:
    """argv -> validated TrainerArgs. Unknown, malformed or contradictory flags raise InputError (exit 2)."""
    parser = build_parser(parser_cls=_RaisingParser)
    ns = parser.parse_args(list(argv))
    try:
        recipe = Recipe.model_validate({k: v for k, v in vars(ns).items() if k in Recipe.model_fields})
    except ValidationError as exc:
        raise InputError("invalid recipe:\n" + format_validation_error(exc, prefix="--")) from exc
    return TrainerArgs(recipe, gates_from_args(ns), ns.verify_data)


def parse_recipe(argv: Sequence[str]) -> Recipe:
    """argv -> validated Recipe (the gate and verification flags are accepted and ignored)."""
    return parse_trainer_args(argv).recipe


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def recipe_to_argv(recipe: Recipe) -> list[str]:
    """Recipe -> argument list (bools only when True, lists as separate values); parse_recipe inverts it."""
    argv: list[str] = []
    for name, field in Recipe.model_fields.items():
        value = getattr(recipe, name)
        annotation, _ = _unwrap_optional(field.annotation)
        if annotation is bool:
            if value:
                argv.append(f"--{name}")
        elif isinstance(value, list):
            argv += [f"--{name}", *map(str, value)]
        elif value is None and name == "metrics_port":
            continue
        else:
            argv += [f"--{name}", _fmt(value)]
    return argv
