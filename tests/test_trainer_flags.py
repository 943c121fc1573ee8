"""The trainer's command line: the seed's command parses verbatim; argv -> Recipe -> argv round-trips."""

from __future__ import annotations

import subprocess
import sys

import pytest
from seed_support import seed_training_argv

from godrun.contract.flags import parse_recipe, recipe_to_argv
from godrun.errors import InputError
from godrun.spec import Recipe


def _seed_argv() -> list[str]:
    """The seed's training command, minus `python -m src.train` (tests/fixtures holds the copy)."""
    return seed_training_argv()


def test_seed_command_parses_to_the_seed_recipe() -> None:
    recipe = parse_recipe(_seed_argv())
    # every value the seed passes equals the Recipe default (the defaults *are* the seed's values)
    assert recipe == Recipe()


def test_seed_flags_cover_every_seed_value() -> None:
    argv = _seed_argv()
    flags = {a[2:] for a in argv if a.startswith("--")}
    assert flags <= set(Recipe.model_fields)
    assert len(flags) == 50  # the seed passes 50 distinct flags


def test_round_trip_argv_recipe_argv() -> None:
    r = Recipe(
        lr=1e-3,
        lr_min=1e-5,
        epochs=7,
        bs=3,
        init_checkpoint=None,
        metrics_port=9100,
        film_features=["UVA_total", "cos_theta"],
        noise2noise=False,
        noise2noise_pairwise=False,
        calibrator_head=True,
        freeze_backbone=True,
        baseline="none",
        device="cpu",
        dip_min_area=1.25e-7,
    )
    argv = recipe_to_argv(r)
    assert parse_recipe(argv) == r
    assert recipe_to_argv(parse_recipe(argv)) == argv
    assert "--noise2noise" not in argv and "--calibrator-head" in argv
    i = argv.index("--film_features")
    assert argv[i + 1 : i + 3] == ["UVA_total", "cos_theta"]


def test_bools_default_false_others_default_to_recipe() -> None:
    r = parse_recipe(["--init_checkpoint", ""])
    assert not r.noise2noise and not r.amp and not r.ema and not r.dip_loss
    assert r.init_checkpoint is None
    assert r.bs == Recipe().bs and r.film_features == Recipe().film_features


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--no_such_flag", "1"], "unrecognized arguments"),
        (["--lr", "abc"], "--lr"),
        (["--ep", "3"], "unrecognized"),  # no abbreviations
        (["--amp", "--no-amp"], "not allowed with"),
        (["--lr", "1e-4", "--lr_min", "1e-3"], "lr_min"),
        (["--noise2noise_pairwise"], "noise2noise_pairwise requires noise2noise"),
        (["--baseline", "spline"], "invalid choice"),
        (["--freeze_backbone"], "freeze_backbone requires calibrator_head"),
    ],
)
def test_bad_flags_raise_input_error(argv: list[str], needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        parse_recipe(argv)


def test_cli_exit_code_2_and_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "godrun.trainer", "--lr", "1e-4", "--lr_min", "1e-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "lr_min" in proc.stderr and "Traceback" not in proc.stderr
