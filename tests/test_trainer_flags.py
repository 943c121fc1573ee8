"""The trainer's command line: the seed's command parses verbatim; argv -> Recipe -> argv round-trips."""

from __future__ import annotations

import subprocess
import sys

import pytest
from seed_support import seed_training_argv

from godrun.contract.flags import SEED_RECIPE_FLAGS, build_parser, parse_recipe, parse_trainer_args, recipe_to_argv
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
        ema_warmup=False,
    )
    argv = recipe_to_argv(r)
    assert parse_recipe(argv) == r
    assert recipe_to_argv(parse_recipe(argv)) == argv
    assert "--noise2noise" not in argv and "--calibrator-head" in argv
    assert "--no-ema-warmup" in argv and "--dip-balance" not in argv  # godrun's own switches: off when told
    i = argv.index("--film_features")
    assert argv[i + 1 : i + 3] == ["UVA_total", "cos_theta"]


def test_bools_default_false_others_default_to_recipe() -> None:
    r = parse_recipe(["--init_checkpoint", ""])
    assert not r.noise2noise and not r.amp and not r.ema and not r.dip_loss  # the seed's switches: off unless named
    assert r.dip_balance and r.ema_warmup  # godrun's own that default on: on unless turned off
    assert not parse_recipe(["--no-dip-balance"]).dip_balance
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


# --------------------------------------------------------------------------- spelling (issue 25)


def test_seed_flags_keep_the_seeds_spelling_and_the_rest_are_kebab_case() -> None:
    seed = {a[2:] for a in _seed_argv() if a.startswith("--")}
    assert seed <= SEED_RECIPE_FLAGS <= set(Recipe.model_fields)
    argv = recipe_to_argv(Recipe(metrics_port=9100, calibrator_head=True, dip_spurious=True))
    flags = [a for a in argv if a.startswith("--")]
    assert {f"--{name}" for name in seed} <= set(flags)  # every seed flag as the seed writes it
    others = [f for f in flags if f[2:] not in SEED_RECIPE_FLAGS]
    assert {"--metrics-port", "--calibrator-head", "--dip-spurious", "--steps-per-epoch"} <= set(others)
    assert all("_" not in f for f in others)


@pytest.mark.parametrize(
    ("chosen", "alias", "value"),
    [
        (["--metrics-port", "9100"], ["--metrics_port", "9100"], ("metrics_port", 9100)),
        (["--jitter-nm", "0.5"], ["--jitter_nm", "0.5"], ("jitter_nm", 0.5)),
        (["--dip-spurious"], ["--dip_spurious"], ("dip_spurious", True)),
        (["--dip_loss", "--no-dip-loss"], ["--dip_loss", "--no-dip_loss"], None),  # the older spelling
    ],
)
def test_other_spelling_is_an_alias(chosen: list[str], alias: list[str], value: tuple[str, object] | None) -> None:
    if value is None:  # a switch and its negation are still mutually exclusive under every spelling
        for argv in (chosen, alias, ["--dip_loss", "--no_dip_loss"]):
            with pytest.raises(InputError, match="not allowed with"):
                parse_recipe(argv)
        return
    field, expected = value
    assert getattr(parse_recipe(chosen), field) == expected
    assert parse_recipe(alias) == parse_recipe(chosen)


def test_gate_and_verification_flags_take_both_spellings() -> None:
    kebab = parse_trainer_args(["--psnr-mean-min", "20", "--no-verify-data"])
    snake = parse_trainer_args(["--psnr_mean_min", "20", "--no_verify_data"])
    assert kebab == snake and kebab.gates.psnr_mean_min == 20.0 and kebab.verify_data is False


def test_help_shows_the_chosen_spelling_only() -> None:
    text = build_parser().format_help()
    assert "--metrics-port" in text and "--psnr-mean-min" in text and "--no-dip-loss" in text
    assert "--metrics_port" not in text and "--psnr_mean_min" not in text and "--no-dip_loss" not in text
    assert "--lr_min" in text and "--dip_min_area" in text and "--dip-min-area" in text  # recipe's and gate's


def test_seed_flags_have_no_second_spelling() -> None:
    with pytest.raises(InputError, match="unrecognized"):
        parse_recipe(["--lr-min", "1e-5"])


# --------------------------------------------------------------------------- the detector (issue 25)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--dip_loss", "--dip-guard-nm", "8"], ("--baseline_guard_nm", "--dip-guard-nm", "--dip_loss")),
        (["--dip_loss", "--dip_min_area", "1e-3"], ("--dip_min_area", "--dip-min-area")),
        (["--deriv_roi_min", "300"], ("--deriv_roi_min", "--roi-min-nm")),  # the ROI matters without dips too
    ],
)
def test_trainer_refuses_a_recipe_training_other_dips_than_the_gates_judge(argv: list[str], named: tuple) -> None:
    with pytest.raises(InputError, match="disagree") as err:
        parse_trainer_args(argv)
    assert all(flag in str(err.value) for flag in named), err.value


@pytest.mark.parametrize(
    "argv",
    [
        ["--dip-guard-nm", "8"],  # no dip loss: the recipe's detector is not used
        ["--dip_loss", "--baseline", "none", "--dip-guard-nm", "8"],  # no local baseline, no guard band
        ["--dip_loss", "--dip_min_area", "1e-3", "--dip-min-area", "1e-3"],  # both say the same
    ],
)
def test_trainer_accepts_what_training_does_not_use(argv: list[str]) -> None:
    parse_trainer_args(argv)


def test_cli_refuses_the_disagreement_with_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "godrun.trainer", "--dip_loss", "--dip_detect_sigma_nm", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--dip_detect_sigma_nm" in proc.stderr and "--dip-smooth-nm" in proc.stderr
    assert "Traceback" not in proc.stderr
