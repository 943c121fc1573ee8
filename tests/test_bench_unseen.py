"""bench/unseen.py's done-when verdict and bench/error_bands.py's band tables, on histories and arrays made here."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from script_support import ROOT, load_script


@pytest.fixture(scope="module")
def bench(request: pytest.FixtureRequest) -> Any:
    sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import each other by name
    request.addfinalizer(lambda: sys.path.remove(str(ROOT / "bench")))
    return load_script("bench/unseen.py"), load_script("bench/error_bands.py")


CLASSICAL = [
    {"run": "raw", "psnr": 12.0, "sam": 15.0},
    {"run": "savgol", "psnr": 19.0, "sam": 6.0},
    {"run": "wavelet", "psnr": 21.0, "sam": 5.5},
    {"run": "gaussian", "psnr": 20.0, "sam": 5.0},  # the best SAM is not the best PSNR's
    {"run": "clean reference", "psnr": 100.0, "sam": 0.0},
]


def _history(rows: list[tuple[float, float, float, int]], best: int) -> list[dict[str, Any]]:
    keys = ("panel_psnr_mean", "panel_sam_mean", "panel_roi_ratio", "panel_gates_passed")
    return [{"epoch": i + 1, **dict(zip(keys, r, strict=True)), "best_epoch": best} for i, r in enumerate(rows)]


def test_met_when_every_epoch_after_the_first_pass_holds(bench) -> None:
    unseen, _ = bench
    hist = _history([(15, 9, 0.5, 2), (22, 4.5, 0.92, 4), (24, 4.0, 0.95, 4)], best=3)
    got = unseen.judge(hist, CLASSICAL, epochs=3)
    assert (got["first_pass"], got["all_gates_after"], got["done_when"]) == (2, "yes", "met")
    assert got["classical_psnr"] == 21.0 and got["classical_sam"] == 5.0
    assert got["roi_min_after"] == pytest.approx(0.92)


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        ([(15, 9, 0.5, 2), (22, 4.5, 0.92, 4), (24, 4.0, 0.88, 4)], "ROI below 0.9 after the first pass"),
        ([(15, 9, 0.5, 2), (22, 4.5, 0.92, 4), (24, 4.0, 0.95, 3)], "a gate lost after the first pass"),
        ([(15, 9, 0.5, 2), (22, 4.5, 0.92, 4), (24, 5.2, 0.95, 4)], "SAM not below the best classical"),
        ([(15, 9, 0.5, 2), (22, 4.5, 0.92, 4), (20.5, 4.0, 0.95, 4)], "PSNR not above the best classical"),
        ([(15, 9, 0.5, 2), (22, 4.5, 0.80, 3), (24, 4.0, 0.85, 3)], "never all four gates"),
    ],
)
def test_not_met(bench, rows, why) -> None:
    unseen, _ = bench
    assert unseen.judge(_history(rows, best=len(rows)), CLASSICAL, epochs=3)["done_when"] == "NOT met", why


def test_a_short_history_is_incomplete(bench) -> None:
    unseen, _ = bench
    hist = _history([(15, 9, 0.5, 2), (22, 4.5, 0.92, 4)], best=2)
    assert unseen.judge(hist, CLASSICAL, epochs=15)["done_when"] == "incomplete"


def _panel(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 601-point grid, n smooth clean spectra and their raw copies with white noise of 0.01."""
    wl = np.linspace(200.0, 800.0, 601)
    ref = 0.5 + 0.2 * np.sin(wl / 40.0)[None, :] * np.ones((n, 1))
    return wl, ref, ref + rng.normal(0, 0.01, ref.shape)


def test_error_bands_bias_and_swap(bench) -> None:
    _, bands = bench
    rng = np.random.default_rng(0)
    wl, ref, raw = _panel(rng, 20)
    pred = ref + 0.003  # a pure offset: its bias and rms are the offset in every band
    table = bands.error_table(wl, ref, {"raw": raw, "model": pred}, 100.0)
    model = table[table.source == "model"]
    assert len(model) == 6 and np.allclose(model["bias"], 0.003) and np.allclose(model["rms"], 0.003)
    assert np.all(np.abs(table[table.source == "raw"]["bias"]) < 0.003)
    swap = bands.swap_table(wl, ref, raw, pred, 100.0).set_index("prediction in")
    assert swap.loc["nowhere (raw)", "psnr"] == pytest.approx(bands.figures(raw, ref, raw, wl)["psnr"])
    assert swap.loc["everywhere", "sam"] == pytest.approx(bands.figures(pred, ref, raw, wl)["sam"])
    # the offset is smaller than raw's noise: every one-band swap raises the PSNR above raw's
    assert (swap.drop(index=["nowhere (raw)", "everywhere"])["psnr"] > swap.loc["nowhere (raw)", "psnr"]).all()


def test_oracle_shrink_keeps_a_perfect_correction_and_drops_a_useless_one(bench) -> None:
    _, bands = bench
    rng = np.random.default_rng(1)
    wl, ref, raw = _panel(rng, 30)
    shrunk, factors = bands.oracle_shrink(wl, ref, raw, ref.copy(), 100.0)
    assert factors == [1.0] * 6 and np.allclose(shrunk, ref)
    useless = raw + rng.normal(0, 0.01, ref.shape)  # a correction that does not know the noise
    shrunk, factors = bands.oracle_shrink(wl, ref, raw, useless, 100.0)
    assert max(factors) < 0.1 and np.abs(shrunk - raw).max() < 0.1 * np.abs(useless - raw).max()


def test_a_run_is_read_back_only_under_the_same_settings(bench, monkeypatch) -> None:
    import argparse

    unseen, _ = bench
    a = argparse.Namespace(scale=0.2, epochs=15, steps=40)
    same = unseen.settings_digest(argparse.Namespace(**vars(a)), {"dip_weight": 3})
    assert same == unseen.settings_digest(a, {"dip_weight": 3})
    assert (
        same
        != unseen.settings_digest(a, {})
        != unseen.settings_digest(argparse.Namespace(**{**vars(a), "epochs": 30}), {})
    )
    # changed godrun sources: a run from the old code is not read back
    monkeypatch.setattr(unseen, "code_version", lambda: "0" * 64)
    assert unseen.settings_digest(a, {"dip_weight": 3}) != same
