"""bench/quality.py's verdict lines: the best epoch is the trainer's, and a gate lost after first passing shows."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from script_support import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality() -> Any:
    return load_script("bench/quality.py")


def _history(rows: list[tuple[float, float, int, int, float]], best_epoch: int) -> list[dict[str, Any]]:
    keys = ("panel_psnr_mean", "panel_roi_ratio", "panel_gates_passed", "panel_spurious", "panel_score")
    return [{"epoch": i + 1, **dict(zip(keys, r, strict=True)), "best_epoch": best_epoch} for i, r in enumerate(rows)]


def test_best_is_the_trainers_ranking_not_the_highest_score(quality) -> None:
    # epoch 3 scores higher but fails a gate (a spurious dip): the trainer ranks epoch 2 best
    hist = _history([(20, 0.95, 3, 0, 1.0), (24, 0.97, 4, 0, 2.0), (25, 0.97, 3, 1, 3.0)], best_epoch=2)
    assert quality.best_row(hist)["epoch"] == 2


def test_roi_held_names_epochs_that_failed_again(quality) -> None:
    hist = _history([(20, 0.80, 2, 0, 1.0), (24, 0.97, 4, 0, 2.0), (25, 0.95, 3, 1, 3.0)], best_epoch=2)
    text = quality.roi_held(hist)
    assert "first pass epoch 2" in text and "0.950 (held)" in text and "epochs 3 (1 spurious)" in text
    hist[2]["panel_roi_ratio"], hist[2]["panel_gates_passed"], hist[2]["panel_spurious"] = 0.85, 4, 0
    text = quality.roi_held(hist)
    assert "DROPPED" in text and "passed every epoch after" in text
    assert quality.roi_held(hist[:1]) == "never passed all gates"


def test_dip_errors_fail_fraction_is_gate_3s(tmp_path) -> None:
    """bench/dip_errors.py's per-dip failures of raw add up to the spectra gate 3 fails (panel_metrics)."""
    from godrun.data.synth import synthesise
    from godrun.gates.metrics import panel_metrics
    from godrun.spec import Gates

    spec = importlib.util.spec_from_file_location("bench_dip_errors", ROOT / "bench/dip_errors.py")
    assert spec and spec.loader
    dip_errors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dip_errors)
    synthesise(tmp_path, scale=0.05, seed=3)
    from godrun.cli import main

    assert main(["data", "panel", "--root", str(tmp_path)]) in (0, None)
    wl, ref, sources = dip_errors.load(tmp_path, [])
    rows = dip_errors.dip_errors(wl, ref, sources, Gates())
    failed_dips = sum(round(r["fail"] * r["n"]) for r in rows)
    df = panel_metrics(sources["raw"], ref, sources["raw"], wl, Gates())
    with_dips = df[df["n_ref_dips"] > 0]
    assert failed_dips >= int((~with_dips["roi_pass"]).sum()) > 0  # each failing spectrum has >= 1 failing dip
    assert sum(r["n"] for r in rows) == int(df["n_ref_dips"].sum())
    bands = dip_errors.band_errors(wl, ref, {"raw": sources["raw"], "reference": ref})
    assert all(b["rms"] == 0 for b in bands if b["source"] == "reference")
    assert all(b["rms_low_pass"] < b["rms"] for b in bands if b["source"] == "raw")


def test_dip_errors_template_prior_reconstructs_a_clean_panel(tmp_path) -> None:
    """Given the clean references as input, the template prior (every principal component) measures each dip
    as the reference does; given the raw spectra, its errors are those of a fit, not zero."""
    from godrun.cli import main
    from godrun.data.synth import synthesise
    from godrun.gates.metrics import detect_dips
    from godrun.spec import Gates

    dip_errors = load_script("bench/dip_errors.py")
    synthesise(tmp_path, scale=0.05, seed=3)
    assert main(["data", "panel", "--root", str(tmp_path)]) in (0, None)
    wl, ref, sources = dip_errors.load(tmp_path, [])
    centre = next(d.center_nm for r in ref for d in detect_dips(r, wl, Gates().detector))
    exact = dip_errors.template_prior(tmp_path, wl, ref, ref, centre, 400, Gates())
    assert len(exact) > 0 and np.abs(exact).max() < 1e-3
    noisy = dip_errors.template_prior(tmp_path, wl, ref, sources["raw"], centre, 0, Gates())
    assert noisy.shape == exact.shape and np.abs(noisy).max() > 1e-3
