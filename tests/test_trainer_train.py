"""End-to-end training on the small synthetic corpus: learning, resume after a kill, DDP, the seed's command."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("GODRUN_NUM_THREADS", "1")

from test_trainer_flags import _seed_argv

from godrun.contract.flags import recipe_to_argv
from godrun.data.loader import load_corpus
from godrun.errors import InputError
from godrun.fsio import sha256_file
from godrun.gates.metrics import psnr
from godrun.model import checkpoint as ck
from godrun.model.inference import load_model, predict, raw_cond_for
from godrun.spec import Recipe
from godrun.trainer.loop import train
from godrun.trainer.presets import preset_recipe, rooted

TIMING = {"seconds", "spectra_per_s"}
ENV = os.environ | {"GODRUN_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def small_recipe(corpus: Path, out: Path, **kw) -> Recipe:
    base = {"d_model": 16, "n_layers": 2, "bs": 32, "epochs": 3, "steps_per_epoch": 8, "lr": 1e-2, "lr_min": 1e-3}
    return rooted(preset_recipe("tiny", **({"init_checkpoint": None} | base | kw)), corpus, out)


def read_metrics(log_dir: str | Path) -> list[dict[str, str]]:
    with open(Path(log_dir) / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Recipe, object]:
    recipe = small_recipe(small_corpus, tmp_path_factory.mktemp("uninterrupted"))
    return recipe, train(recipe, log=False)


def test_noise2noise_training_raises_panel_psnr(small_corpus: Path, trained) -> None:
    recipe, result = trained
    panel = load_corpus(small_corpus / "data/validation_panel.csv", small_corpus / "data/spectra_for_fold")
    raw_psnr = float(np.mean(psnr(panel.raw, panel.reference)))  # what the identity model scores
    best = max(row["panel_psnr_mean"] for row in result.history)
    assert best > raw_psnr + 0.25, (raw_psnr, [row["panel_psnr_mean"] for row in result.history])
    assert len(read_metrics(recipe.log_dir)) == recipe.epochs


def test_checkpoints_and_inference_reproduce_the_logged_panel(small_corpus: Path, trained) -> None:
    recipe, result = trained
    best = ck.load_checkpoint(ck.best_path(recipe.checkpoint_dir))
    assert best.meta.epoch == result.best_epoch and best.ema is not None and best.resume is None
    assert len(best.meta.code_version) == 64 and best.meta.data_hashes["train_manifest"]
    assert Recipe.model_validate(best.meta.config) == recipe
    assert float(best.model["subspace.fitted"]) == 1.0  # the prior was learnt from the run's own training rows
    last = ck.load_checkpoint(ck.last_path(recipe.checkpoint_dir))
    assert last.meta.epoch == recipe.epochs and last.resume is not None and last.resume.optimizer
    # the give-back's share is learnt again each epoch from the network's outputs, in the model and its average
    assert last.ema is not None and torch.equal(last.model["subspace.giveback"], last.ema["subspace.giveback"])
    assert best.meta.epoch < last.meta.epoch
    assert not torch.equal(best.ema["subspace.giveback"], last.ema["subspace.giveback"])
    # the evaluator's path (load_model + predict) gives the PSNR the trainer logged for that epoch
    model, meta, _ = load_model(ck.best_path(recipe.checkpoint_dir))
    panel = load_corpus(small_corpus / "data/validation_panel.csv", small_corpus / "data/spectra_for_fold")
    cond = raw_cond_for(meta, recipe.dose_features_csv, panel.meta["group_id"])
    pred = predict(model, meta, panel.raw, cond, panel.wavelengths)
    logged = result.history[result.best_epoch - 1]["panel_psnr_mean"]
    assert abs(float(np.mean(psnr(pred, panel.reference))) - logged) < 1e-3
    audit = Path(recipe.audit_log).read_text()
    assert "sha256 train_manifest" in audit and "code_version" in audit and "sha256 config" in audit


def _cli(recipe: Recipe) -> list[str]:
    return [sys.executable, "-m", "godrun.trainer", *recipe_to_argv(recipe)]


def test_resume_after_kill_equals_uninterrupted(small_corpus: Path, trained, tmp_path: Path) -> None:
    ref_recipe, _ = trained
    recipe = small_recipe(small_corpus, tmp_path)
    proc = subprocess.Popen(_cli(recipe), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = Path(recipe.log_dir) / "metrics.csv"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and len(read_metrics(recipe.log_dir)) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = len(read_metrics(recipe.log_dir))
    assert 1 <= killed_at < recipe.epochs
    train(recipe, log=False)  # the same recipe again: continues from last
    got, want = read_metrics(recipe.log_dir), read_metrics(ref_recipe.log_dir)
    assert len(got) == len(want) == recipe.epochs
    for g, w in zip(got, want, strict=True):
        for key in set(w) - TIMING:
            if w[key] in ("", "True", "False") or key == "epoch":
                assert g[key] == w[key], key
            else:
                assert float(g[key]) == pytest.approx(float(w[key]), rel=1e-4, abs=1e-6), (key, g["epoch"])
    assert "train resume" in Path(recipe.audit_log).read_text()
    # a finished run re-run is a no-op that exits 0
    assert subprocess.run(_cli(recipe), env=ENV, capture_output=True, timeout=120).returncode == 0
    assert len(read_metrics(recipe.log_dir)) == recipe.epochs


def test_seed_command_runs_verbatim_with_paths_rebased(small_corpus: Path, trained, tmp_path: Path) -> None:
    """The seed's whole argument list, paths under the test workspace, then small overrides (last flag wins)."""
    ref_recipe, _ = trained
    fold02 = small_corpus / "checkpoints/prod/Track_H_fold_02"
    argv = []
    for a in _seed_argv():
        rel = a.startswith(("data/", "logs/", "checkpoints/"))
        argv.append(str((small_corpus if a.startswith("data/") else tmp_path) / a) if rel else a)
    shrink = recipe_to_argv(ref_recipe.model_copy(update={"epochs": 1, "steps_per_epoch": 1, "bs": 4}))
    keep = {"--epochs", "--steps-per-epoch", "--bs", "--d_model", "--n_layers", "--d_state", "--film_hidden_dim"}
    extra = [x for i, x in enumerate(shrink) if x in keep or (i and shrink[i - 1] in keep)]
    init = str(ck.best_path(ref_recipe.checkpoint_dir))
    proc = subprocess.run(
        [sys.executable, "-m", "godrun.trainer", *argv, *extra, "--init_checkpoint", init, "--device", "cpu"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not fold02.exists()
    out = tmp_path / "checkpoints/god_run/mamba_tiny_uv_best.pt"
    assert ck.load_checkpoint(out).meta.init_checkpoint_sha256 == sha256_file(init)
    assert (tmp_path / "logs/god_run/metrics.csv").is_file() and (tmp_path / "logs/god_run/train.log").is_file()
    audit = (tmp_path / "logs/god_run/auditing_manifest.log").read_text()
    assert sha256_file(init) in audit


def test_ddp_two_cpu_processes(small_corpus: Path, tmp_path: Path) -> None:
    recipe = small_recipe(small_corpus, tmp_path, epochs=1, steps_per_epoch=2, bs=8)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "godrun.trainer",
        *recipe_to_argv(recipe),
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(recipe.log_dir)
    assert len(rows) == 1
    assert "x 2 proc" in (Path(recipe.log_dir) / "train.log").read_text()
    assert ck.load_checkpoint(ck.last_path(recipe.checkpoint_dir)).meta.epoch == 1


def test_bad_data_path_exits_2(small_corpus: Path, tmp_path: Path, capsys) -> None:
    from godrun.errors import run_main
    from godrun.trainer.cli import main

    recipe = small_recipe(small_corpus, tmp_path).model_copy(update={"lambda_weights": str(tmp_path / "nope.npz")})
    assert run_main(main, recipe_to_argv(recipe)) == 2
    assert "--lambda_weights" in capsys.readouterr().err
    assert not Path(recipe.checkpoint_dir).exists() and not Path(recipe.log_dir).exists()


def test_pair_partners_share_pair_id(small_corpus: Path) -> None:
    from godrun.trainer.dataset import partners

    meta = pd.read_csv(small_corpus / "data/spectra_for_fold/manifest_train.csv")
    partner = partners(meta)
    ids = meta["pair_id"].to_numpy()
    assert np.all(ids[partner] == ids)
    assert np.mean(partner != np.arange(len(meta))) > 0.9


def test_act_b_calibrator_from_god_run_checkpoint_trains_only_head_and_film(
    small_corpus: Path, trained, tmp_path: Path
) -> None:
    ref_recipe, _ = trained
    init = ck.best_path(ref_recipe.checkpoint_dir)
    recipe = small_recipe(
        small_corpus,
        tmp_path,
        epochs=1,
        steps_per_epoch=2,
        calibrator_head=True,
        freeze_backbone=True,
        init_checkpoint=str(init),
    )
    train(recipe, log=False)
    before = ck.load_checkpoint(init).weights()
    after = ck.load_checkpoint(ck.last_path(recipe.checkpoint_dir)).model
    assert any(k.startswith("calibrator") for k in after)
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    changed.discard("subspace.giveback")  # learnt again each epoch from the outputs (not a trained weight)
    assert changed and all(k.startswith("film") for k in changed)
    calib = {k: v for k, v in after.items() if k.startswith("calibrator")}
    assert not torch.equal(calib["calibrator.scale"], torch.ones_like(calib["calibrator.scale"]))


def test_temp_files_of_a_killed_write_are_removed_when_training_starts(small_corpus: Path, tmp_path: Path) -> None:
    recipe = small_recipe(small_corpus, tmp_path, epochs=1)
    stale = [
        Path(recipe.checkpoint_dir) / ".mamba_tiny_uv_last.pt.x81kq2.tmp",
        Path(recipe.log_dir) / ".metrics.csv.0d9a1f.tmp",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    keep = Path(recipe.checkpoint_dir) / "notes.tmp"  # not a temp file of ours: left alone
    keep.write_text("mine")
    train(recipe, log=False)
    assert not any(p.exists() for p in stale) and keep.exists()
    assert ck.last_path(recipe.checkpoint_dir).is_file()


def test_a_last_checkpoint_that_cannot_resume_is_bad_input(small_corpus: Path, trained, tmp_path: Path) -> None:
    """A `last` checkpoint with its recipe but a tensor of another shape, or without the resume state, is refused
    before anything is written (exit 2), not a crash in load_state_dict (retried)."""
    ref_recipe, _ = trained
    recipe = small_recipe(small_corpus, tmp_path)
    last = ck.load_checkpoint(ck.last_path(ref_recipe.checkpoint_dir))
    last.meta = last.meta.model_copy(update={"config": recipe.model_dump()})
    name = next(iter(last.model))
    path = ck.last_path(recipe.checkpoint_dir)
    ck.save_checkpoint(path, dataclasses.replace(last, model=dict(last.model) | {name: torch.zeros(3, 3, 3)}))
    with pytest.raises(InputError, match=rf"tensor '{re.escape(name)}' has shape \(3, 3, 3\)"):
        train(recipe, log=False)
    ck.save_checkpoint(path, dataclasses.replace(last, resume=None))
    with pytest.raises(InputError, match="holds no optimiser state"):
        train(recipe, log=False)
    assert not Path(recipe.log_dir).exists()
