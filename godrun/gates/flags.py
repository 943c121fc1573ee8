"""Gate thresholds on a command line: one kebab-case flag per `godrun.spec.Gates` field.

The evaluator, the standalone downstream script and the trainer parse them with `add_gate_flags` /
`gates_from_args`; the executors write them with `gate_argv`, so the three read the GodRun's gates the
same way. Torch-free and numpy-free (the controller builds argv with it).
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from godrun.errors import InputError
from godrun.spec import Gates, format_validation_error


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _num(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def add_gate_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Gates field (kebab-case), typed and defaulted from the model; dest `gate_<field>`."""
    group = parser.add_argument_group("gate thresholds (godrun.spec.Gates; defaults are the seed's)")
    for name, info in Gates.model_fields.items():
        kind = int if type(info.default) is int else float
        group.add_argument(
            flag_name(name),
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
        msg = format_validation_error(exc)
        for name in Gates.model_fields:  # name the flag the user typed, not the python field
            msg = msg.replace(f"{name}:", f"{flag_name(name)}:")
        raise InputError(msg) from exc


def gate_argv(gates: Gates) -> list[str]:
    """`--psnr-mean-min 18.0 ...`: the flags `gates_from_args` turns back into `gates`."""
    argv: list[str] = []
    for name in Gates.model_fields:
        argv += [flag_name(name), _num(getattr(gates, name))]
    return argv
