"""Noise profiles (godrun/data/noise.py) and the replicate-noise statistics of bench/noise_stats.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from script_support import load_script

from godrun.cli import main as godrun_main
from godrun.data.noise import add_noise, ar1, available_profiles, load_profile
from godrun.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stats() -> Any:
    return load_script("bench/noise_stats.py")


def test_statistics_on_analytic_noise(stats) -> None:
    rng = np.random.default_rng(5)
    white = 0.01 * rng.standard_normal((400, 256))  # replicates: noise only, so d = two scans' noise
    d = stats.diffs(white)
    assert stats.sigma(d) == pytest.approx(0.01, rel=0.02)
    assert abs(stats.lag1(d)) < 0.02
    assert abs(stats.psd_slope(d)) < 0.15
    # AR(1) of coefficient 0.8: lag-1 is 0.8 whatever the level
    assert stats.lag1(stats.diffs(3.0 * ar1(rng, 400, 256, 0.8))) == pytest.approx(0.8, abs=0.02)
    walk = np.cumsum(rng.standard_normal((400, 256)), axis=1)  # PSD ∝ f⁻²
    assert stats.psd_slope(stats.diffs(walk)) == pytest.approx(-2.0, abs=0.3)
    ramp = np.linspace(1.0, 1.1, 21)[:, None] * np.ones((21, 50))  # 1.0 … 1.1: (1.095 − 1.005) / 1.05
    assert stats.drift(ramp) == pytest.approx(0.09 / 1.05, rel=1e-9)


def test_ar1_is_stationary_from_the_first_point() -> None:
    x = ar1(np.random.default_rng(1), 20000, 8, 0.95)
    assert np.std(x, axis=0) == pytest.approx(np.ones(8), abs=0.03)


def test_fitted_profile_statistics(stats) -> None:
    """A flat T = 1 session through skspec-fit: σ and lag-1 per band follow the profile's own tables."""
    prof = load_profile("skspec-fit")
    assert prof.correlated.rho > 0.9 and prof.correlated.mode == "absolute"
    wl = np.arange(200.0, 851.0)
    rng = np.random.default_rng(2)
    runs = [add_noise(np.ones((30, len(wl))), wl, rng, prof) for _ in range(10)]
    rows = {r["band"][0]: r for r in stats.band_table(runs, wl, stats.bands(wl))}
    for lo in (300.0, 400.0, 500.0, 600.0):
        m = (wl >= lo) & (wl < lo + 50)
        s_w = prof.white.sigma.at(wl[m]) if prof.white.kind == "table" else 0.0
        s_c = prof.correlated.sigma_rel.at(wl[m])
        expect_var = np.mean(s_w**2 + s_c**2)
        assert rows[lo]["sigma"] == pytest.approx(np.sqrt(expect_var), rel=0.2)
        expect_lag1 = prof.correlated.rho * np.mean(s_c**2) / expect_var
        assert rows[lo]["lag1"] == pytest.approx(expect_lag1, abs=0.05)
        assert rows[lo]["psd_slope"] < -1.5  # low-frequency noise, unlike the default profile's
    assert rows[250.0]["sigma"] < 2e-3  # the averaging instrument: far below the default profile


def test_default_profile_is_white_and_noisy(stats) -> None:
    prof = load_profile("default")
    wl = np.arange(200.0, 801.0)
    runs = [
        add_noise(
            np.full((30, len(wl)), 0.7),
            wl,
            np.random.default_rng(3),
            prof.model_copy(  # without spikes and the per-scan offset/tilt: the detector noise alone
                update={
                    "spikes": prof.spikes.model_copy(update={"prob": 0.0}),
                    "drift": prof.drift.model_copy(update={"rel": 0.0}),
                }
            ),
        )
    ]
    row = {r["band"][0]: r for r in stats.band_table(runs, wl, stats.bands(wl))}[400.0]
    assert abs(row["lag1"]) < 0.1 and row["sigma"] > 1e-3


def test_packaged_profiles_and_bad_profiles(tmp_path) -> None:
    assert {"default", "skspec-fit"} <= set(available_profiles())
    with pytest.raises(InputError, match="no such profile"):
        load_profile("nope")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "correlated": {"rho": 1.5}}))
    with pytest.raises(InputError, match="rho"):
        load_profile(bad)
    bad.write_text(json.dumps({"name": "x", "white": {"kind": "table", "sigma": {"nm": [300, 200], "value": [1, 1]}}}))
    with pytest.raises(InputError, match="increasing"):
        load_profile(bad)
    out = tmp_path / "ws"
    assert godrun_main(["data", "synth", "--out", str(out), "--scale", "0.01", "--noise-profile", str(bad)]) == 2
    assert not out.exists() or not any(out.iterdir())


def test_synth_noise_profile_flag_changes_the_noise(tmp_path) -> None:
    """`--noise-profile skspec-fit` writes the same clean references but correlated, far smaller noise."""
    for name in ("default", "skspec-fit"):
        assert (
            godrun_main(["data", "synth", "--out", str(tmp_path / name), "--scale", "0.01", "--noise-profile", name])
            == 0
        )
    import pandas as pd

    def residual(name: str) -> tuple[np.ndarray, list[bytes]]:
        root = tmp_path / name / "data" / "spectra_for_fold"
        m = pd.read_csv(root / "manifest_all.csv")
        res = np.stack([np.load(root / p) - np.load(root / r) for p, r in zip(m.path, m.reference_path, strict=True)])
        return res, [(root / r).read_bytes() for r in m.reference_path]

    (r_def, ref_def), (r_fit, ref_fit) = residual("default"), residual("skspec-fit")
    assert ref_def == ref_fit
    assert np.median(np.abs(r_fit)) < 0.3 * np.median(np.abs(r_def))


def test_skspec_runs_split_at_level_jumps() -> None:
    spec = importlib.util.spec_from_file_location("bench_skspec", ROOT / "bench/skspec.py")
    assert spec and spec.loader
    skspec = importlib.util.module_from_spec(spec)
    sys.modules["bench_skspec"] = skspec  # its dataclass looks its module up
    spec.loader.exec_module(skspec)
    wl = np.arange(200.0, 851.0)
    level = np.array([1000.0] * 5 + [600.0] * 3 + [560.0] * 4)  # a 40 % and a 6.7 % drop start runs
    counts = level[:, None] * (1 + 1e-3 * np.random.default_rng(0).standard_normal((12, len(wl))))
    assert skspec.split_runs(counts, wl) == [slice(0, 5), slice(5, 8), slice(8, 12)]


def test_realdata_goes_through_the_import(monkeypatch, tmp_path) -> None:
    """bench/realdata.py's panels come from `godrun data import`: (a) each AuNP scan against the mean of the *other*
    scans of its run (--references replicate-mean), cropped to the grid; (b) noisy copies against their run mean."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_realdata", ROOT / "bench/realdata.py")
    assert spec and spec.loader
    realdata = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realdata)
    skspec = sys.modules["skspec"]
    wl = np.arange(200.0, 851.0)
    sizes = {"blank": 3, "aunp1": 4, "aunp2": 2, "aunp3": 3}
    counts = np.random.default_rng(4).uniform(500, 2000, (sum(sizes.values()), len(wl)))
    cuts = np.cumsum([0, *sizes.values()])
    runs = {k: slice(int(a), int(b)) for k, a, b in zip(sizes, cuts[:-1], cuts[1:], strict=True)}
    session = skspec.Session(wl=wl, counts=counts, seconds=np.arange(len(counts)) * 46.0, runs=runs)
    features = dict.fromkeys(realdata.layout.DOSE_FEATURE_COLUMNS, 0.5)
    panel = realdata.import_session(session, *realdata.natural_scans(session), features, tmp_path / "a")
    assert panel.wavelengths[0] == 200 and panel.wavelengths[-1] == 800 and panel.raw.shape == (9, 601)
    assert (tmp_path / "a" / "imported" / "data" / "validation_panel.csv").is_file()
    t = counts[3:7, :601] / counts[:3, :601].mean(axis=0)  # aunp1 in transmittance
    aunp1 = np.flatnonzero(panel.meta["group_id"] == "aunp1")
    np.testing.assert_allclose(panel.raw[aunp1], t, rtol=1e-6)
    np.testing.assert_allclose(panel.reference[aunp1[1]], t[[0, 2, 3]].mean(axis=0), rtol=1e-6)
    monkeypatch.setattr(realdata, "COPIES", 3)
    panel = realdata.import_session(session, *realdata.project_noise(session), features, tmp_path / "b")
    assert panel.raw.shape == (9, 601)
    aunp1 = np.flatnonzero(panel.meta["group_id"] == "aunp1")
    np.testing.assert_allclose(panel.reference[aunp1], np.repeat(t.mean(axis=0)[None], 3, axis=0), rtol=1e-6)
    assert np.abs(panel.raw[aunp1] - panel.reference[aunp1]).mean() > 1e-3  # the default profile's noise
