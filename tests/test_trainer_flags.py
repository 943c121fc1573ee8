"""The trainer's command line: the seed's command parses verbatim; argv -> Recipe -> argv round-trips."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from godrun.errors import InputError
from godrun.spec import Recipe
from godrun.trainer.flags import parse_recipe, recipe_to_argv

# CI keeps a copy of shared/ beside the checkout; without it the copy of the command below is used.
SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "000_1b7f79dc8a580ca6.txt"
SEED_COMMAND = r"""
  --model mamba_tiny_uv --train_dir data/spectra_for_fold
  --train_manifest data/spectra_for_fold/manifest_train.csv --val_manifest data/validation_panel.csv
  --sequence_length 601 --epochs 400 --early_stop_patience 30 --bs 600 --lr 3e-4 --lr_min 3e-5 --weight_decay 1e-4
  --noise2noise --noise2noise_pairwise --geometry_film --film_hidden_dim 64
  --film_features cos_theta UVA_total UVB_total UVA_over_UVB P_UVA_mW_cm2 P_UVB_mW_cm2 UVA_norm UVB_norm
  --dose_features_csv data/metadata/dose_features.csv
  --dose_sampling_weights_csv data/metadata/dose_sampling_weights.csv
  --dose_stats_json data/metadata/dose_stats.json --lambda_weights data/spectra_for_fold/lambda_stats.npz
  --dip_loss --dip_weight 1.0 --dip_m 6 --dip_window_half_nm 7.0 --dip_min_area 5e-4
  --dip_w_area 2.5 --dip_w_equivalent_width 1.5 --dip_w_centroid 2.0 --dip_w_depth 0.3
  --dip_underfill_factor 2.0 --dip_detect_sigma_nm 1.0 --baseline local --baseline_guard_nm 10.0
  --derivative_weight 0.3 --deriv_weight_roi 0.6 --deriv_roi_min 320.0 --deriv_roi_max 500.0
  --curvature_weight_roi 0.3 --d_model 384 --n_layers 8 --d_state 16
  --amp --amp_dtype bf16 --ema --ema_decay 0.999 --cudnn_benchmark
  --init_checkpoint checkpoints/prod/Track_H_fold_02/mamba_tiny_uv_best.pt
  --log_dir logs/god_run --checkpoint_dir checkpoints/god_run --audit_log logs/god_run/auditing_manifest.log
"""


def _seed_argv() -> list[str]:
    """The seed's recipe block itself when the seed file is here (else the copy above), minus `python -m src.train`."""
    if SEED.is_file():
        text = SEED.read_text()
        block = text.split("## Training recipe", 1)[1].split("```", 2)[1]
        argv = shlex.split(block.replace("\\\n", " "))
        assert argv[:3] == ["python", "-m", "src.train"]
        return argv[3:]
    return shlex.split(SEED_COMMAND)


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
    assert "--noise2noise" not in argv and "--calibrator_head" in argv
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
