"""The stage command lines, generated from `godrun.spec`: the trainer's (one flag per `Recipe` field, data
verification, the gate thresholds) and the gate thresholds every stage reads (trainer, evaluator, downstream
script). Parsers and their inverses live together: the executors build a Job's arguments with `recipe_to_argv`
and `gate_argv`, the stages read them back with `parse_trainer_args` and `gates_from_args`. Torch-free.

Spelling: the seed's flags exactly as the seed's command spells them (`--lr_min`, `--dip_loss`; the list is
`SEED_RECIPE_FLAGS`); every other flag in kebab-case, the style of every other godrun command line
(`--psnr-mean-min`, `--metrics-port`, `--verify-data`, `--no-dip-loss`), its snake_case spelling accepted as an
alias (`--metrics_port`, `--psnr_mean_min`, the older `--no-dip_loss`). Help and generated argument lists use
the chosen spelling only.

Booleans are `--<name>` (store_true) with a mutually exclusive `--no-<name>`; a boolean that is not given is
False, so the seed's command means exactly what it lists. Every other recipe flag defaults to the Recipe
default. `--verify-data` / `--no-verify-data` (spec.data.verify; on by default): re-hash every spectrum and
reference against the manifests and check the wavelength bounds against the grid before training.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from godrun.errors import InputError
from godrun.spec import Gates, Recipe, detector_disagreement, format_validation_error

NONE_WORDS = frozenset({"", "none", "None", "null"})

# The flags of the seed's training command (`python -m src.train ...`), spelled as there. tta_reverse is off in the
# seed's command (so not listed on it) but is one of its flags.
SEED_RECIPE_FLAGS: frozenset[str] = frozenset(
    [
        "model",
        "train_dir",
        "train_manifest",
        "val_manifest",
        "sequence_length",
        "epochs",
        "early_stop_patience",
        "bs",
        "lr",
        "lr_min",
        "weight_decay",
        "noise2noise",
        "noise2noise_pairwise",
        "val_noise2noise",
        "tta_reverse",
        "geometry_film",
        "film_hidden_dim",
        "film_features",
        "dose_features_csv",
        "dose_sampling_weights_csv",
        "dose_stats_json",
        "lambda_weights",
        "dip_loss",
        "dip_weight",
        "dip_m",
        "dip_window_half_nm",
        "dip_min_area",
        "dip_w_area",
        "dip_w_equivalent_width",
        "dip_w_centroid",
        "dip_w_depth",
        "dip_underfill_factor",
        "dip_detect_sigma_nm",
        "baseline",
        "baseline_guard_nm",
        "derivative_weight",
        "deriv_weight_roi",
        "deriv_roi_min",
        "deriv_roi_max",
        "curvature_weight_roi",
        "d_model",
        "n_layers",
        "d_state",
        "amp",
        "amp_dtype",
        "ema",
        "ema_decay",
        "cudnn_benchmark",
        "init_checkpoint",
        "log_dir",
        "checkpoint_dir",
        "audit_log",
    ]
)


# --------------------------------------------------------------------------- spelling


def flag_name(field: str) -> str:
    """The chosen spelling of a Recipe field's flag: the seed's for its flags, kebab-case for every other one."""
    return f"--{field}" if field in SEED_RECIPE_FLAGS else "--" + field.replace("_", "-")


def gate_flag(field: str) -> str:
    """A Gates field's flag: kebab-case (`dip_min_area` is `--dip-min-area`; `--dip_min_area` is the recipe's)."""
    return "--" + field.replace("_", "-")


def spec_flag(model: str, field: str) -> str:
    """The flag of a Recipe (`model` "Recipe") or Gates field."""
    return flag_name(field) if model == "Recipe" else gate_flag(field)


def _negation(field: str) -> str:
    return "--no-" + field.replace("_", "-")


def _aliases(chosen: str, *older: str) -> list[str]:
    """The other spellings a non-seed flag is accepted under: its snake_case twin and any older spelling (never a
    seed flag's spelling: `--dip_min_area` stays the recipe's, not an alias of the gate's `--dip-min-area`)."""
    if chosen[2:].replace("-", "_") in SEED_RECIPE_FLAGS:
        return []
    twins = ["--" + chosen[2:].replace("-", "_"), *older]
    return list(dict.fromkeys(t for t in twins if t != chosen))


def add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, chosen: str, *older: str, **kwargs: Any
) -> None:
    """`chosen` with its help, then each alias as a hidden flag with the same destination (absent from help)."""
    parser.add_argument(chosen, **kwargs)
    hidden = {k: v for k, v in kwargs.items() if k not in ("help", "default", "metavar")}
    for alias in _aliases(chosen, *older):
        parser.add_argument(alias, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **hidden)


def add_switch(parser: argparse.ArgumentParser, field: str, default: bool, help_: str) -> None:
    """`--<field>` / `--no-<field>` (mutually exclusive) setting `field`."""
    group = parser.add_mutually_exclusive_group()
    on, off = flag_name(field), _negation(field)
    add_flag(group, on, dest=field, action="store_true", default=default, help=help_)
    add_flag(group, off, f"--no-{field}", dest=field, action="store_false", help=f"Turn off {on}.")


# --------------------------------------------------------------------------- gate thresholds


def _num(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def add_gate_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Gates field (kebab-case), typed and defaulted from the model; dest `gate_<field>`."""
    group = parser.add_argument_group("gate thresholds (godrun.spec.Gates; defaults are the seed's)")
    for name, info in Gates.model_fields.items():
        kind = int if type(info.default) is int else float
        add_flag(
            group,
            gate_flag(name),
            dest=f"gate_{name}",
            type=kind,
            default=info.default,
            metavar=kind.__name__.upper(),
            help=f"{info.description} (default {info.default:g})",
        )


def gates_from_args(args: argparse.Namespace) -> Gates:
    """The Gates the flags describe; InputError (exit 2) naming the flag when a value is refused."""
    values = {name: getattr(args, f"gate_{name}") for name in Gates.model_fields}
    try:
        return Gates(**values)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, name=gate_flag)) from exc


def gate_argv(gates: Gates) -> list[str]:
    """`--psnr-mean-min 18.0 ...`: the flags `gates_from_args` turns back into `gates`."""
    argv: list[str] = []
    for name in Gates.model_fields:
        argv += [gate_flag(name), _num(getattr(gates, name))]
    return argv


# --------------------------------------------------------------------------- the trainer's recipe


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


def _none_or(conv: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text in NONE_WORDS else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def switch_default(name: str) -> bool:
    """A Recipe switch's value when its command line names it not: off for the seed's flags (the seed passes
    each one it wants, `--ema`), the Recipe's default for godrun's own (`--no-dip-balance` turns one off), so
    that the seed's command still parses to Recipe()."""
    return name not in SEED_RECIPE_FLAGS and Recipe.model_fields[name].default is True


def _add_field(parser: argparse.ArgumentParser, name: str, field: FieldInfo) -> None:
    annotation, optional = _unwrap_optional(field.annotation)
    default = field.get_default(call_default_factory=True)
    help_ = field.description or ""
    if annotation is bool:
        add_switch(parser, name, switch_default(name), help_)
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
    add_flag(parser, flag_name(name), **kwargs)


def build_parser(
    prog: str = "python -m godrun.trainer", parser_cls: type[argparse.ArgumentParser] = argparse.ArgumentParser
) -> argparse.ArgumentParser:
    parser = parser_cls(
        prog=prog,
        description="Train mamba_tiny_uv with the seed's recipe. Flags mirror godrun.spec.Recipe.",
        allow_abbrev=False,
    )
    for name, field in Recipe.model_fields.items():
        _add_field(parser, name, field)
    verify_help = "Re-hash every spectrum and reference against the manifests and check wavelength bounds (default)."
    add_switch(parser, "verify_data", True, verify_help)
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


def _parse(argv: Sequence[str]) -> tuple[Recipe, argparse.Namespace]:
    ns = build_parser(parser_cls=_RaisingParser).parse_args(list(argv))
    try:
        recipe = Recipe.model_validate({k: v for k, v in vars(ns).items() if k in Recipe.model_fields})
    except ValidationError as exc:
        raise InputError("invalid recipe:\n" + format_validation_error(exc, name=flag_name)) from exc
    return recipe, ns


def parse_trainer_args(argv: Sequence[str]) -> TrainerArgs:
    """argv -> validated TrainerArgs. Unknown, malformed or contradictory flags raise InputError (exit 2), and so
    does a recipe whose gate-3 detector settings differ from the gate flags' where training uses them."""
    recipe, ns = _parse(argv)
    gates = gates_from_args(ns)
    problem = detector_disagreement(recipe, gates, spec_flag)
    if problem:
        raise InputError(f"the recipe and the gate flags disagree: {problem}")
    return TrainerArgs(recipe, gates, ns.verify_data)


def parse_recipe(argv: Sequence[str]) -> Recipe:
    """argv -> validated Recipe (the gate and verification flags are accepted and ignored)."""
    return _parse(argv)[0]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def recipe_to_argv(recipe: Recipe) -> list[str]:
    """Recipe -> argument list (a switch only where it differs from `switch_default`, lists as separate values);
    parse_recipe inverts it."""
    argv: list[str] = []
    for name, field in Recipe.model_fields.items():
        value = getattr(recipe, name)
        annotation, _ = _unwrap_optional(field.annotation)
        flag = flag_name(name)
        if annotation is bool:
            if value != switch_default(name):
                argv.append(flag if value else _negation(name))
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif value is None and name == "metrics_port":
            continue
        else:
            argv += [flag, _fmt(value)]
    return argv
