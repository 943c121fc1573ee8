"""Corpus composition, layout and determinism of `godrun data synth`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from godrun.cli import main as godrun_main
from godrun.data import layout
from godrun.data.synth import plan_groups, scaled_count


def test_full_corpus_plan_counts_and_composition():
    plans = plan_groups(1.0)
    assert sum(p.n for p in plans) == 11_100
    by_id = {p.group_id: p.n for p in plans}
    assert by_id["treatment_5/sample_H/6Oclock"] == 300
    assert by_id["treatment_3/sample_J/12Oclock"] == 300
    assert by_id["treatment_6/sample_I/6Oclock"] == 150
    assert sum(n for g, n in by_id.items() if g not in layout.PANEL_GROUPS) == 10_350
    for t in range(1, 6):
        samples = {p.sample for p in plans if p.treatment == t}
        assert len(samples) == 5
        assert all(
            {p.angle for p in plans if p.treatment == t and p.sample == s} == set(layout.ANGLES) for s in samples
        )
    controls = {p.sample for p in plans if p.treatment == 6}
    assert len(controls) == 2 and "I" in controls
    assert all(p.n % 2 == 0 for p in plans)


@pytest.mark.parametrize("scale", [0.01, 0.05, 0.1, 0.5])
def test_scale_keeps_every_group_with_whole_pairs(scale):
    plans = plan_groups(scale)
    assert len(plans) == len(plan_groups(1.0)) == 54
    assert all(p.n >= 4 and p.n % 2 == 0 for p in plans)
    assert scaled_count(300, scale) == max(4, 2 * round(150 * scale))


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert (
            godrun_main(["data", "synth", "--out", str(tmp_path / name), "--scale", "0.02", "--seed", str(seed)]) == 0
        )
    a, b, c = (_tree_digest(tmp_path / n / "data") for n in "abc")
    assert a == b
    assert a != c


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    assert godrun_main(["data", "synth", "--out", str(root), "--scale", "0.05"]) == 0
    return root


def test_layout_files_and_manifest(corpus):
    spectra = corpus / layout.SPECTRA_DIR
    m = pd.read_csv(corpus / layout.MANIFEST_ALL)
    assert list(m.columns) == list(layout.MANIFEST_COLUMNS)
    assert len(m) == sum(p.n for p in plan_groups(0.05))
    assert m["spectrum_id"].is_unique and m["content_sha256"].is_unique
    wl = np.load(spectra / "wavelength_grid.npy")
    assert wl.dtype == np.float64 and wl.shape == (601,) and wl[0] == 200 and wl[-1] == 800
    for row in m.sample(20, random_state=0).itertuples():
        x = np.load(spectra / row.path)
        assert x.dtype == np.float32 and x.shape == (601,)
        assert hashlib.sha256((spectra / row.path).read_bytes()).hexdigest() == row.content_sha256
        assert np.load(spectra / row.reference_path).shape == (601,)
    pairs = m.groupby("pair_id")
    assert (pairs.size() == 2).all()
    assert (pairs["reference_path"].nunique() == 1).all() and (pairs["polarity"].nunique() == 1).all()
    assert set(m["polarity"]) == set(layout.POLARITIES)


def test_metadata_files(corpus):
    feats = pd.read_csv(corpus / layout.DOSE_FEATURES).set_index("group_id")
    assert list(feats.columns) == list(layout.DOSE_FEATURE_COLUMNS) and len(feats) == 54
    controls = feats[feats.index.str.startswith("treatment_6/")]
    assert (controls[["UVA_total", "UVB_total", "UVA_norm", "UVB_norm"]] == 0).all().all()
    assert (
        feats.loc["treatment_5/sample_H/6Oclock", "UVA_total"] > feats.loc["treatment_1/sample_H/6Oclock", "UVA_total"]
    )
    assert (
        feats.loc["treatment_1/sample_F/6Oclock", "cos_theta"] > feats.loc["treatment_1/sample_F/12Oclock", "cos_theta"]
    )
    weights = pd.read_csv(corpus / layout.DOSE_SAMPLING_WEIGHTS)
    assert set(weights["group_id"]) == set(feats.index) and (weights["weight"] > 0).all()
    stats = np.load(corpus / layout.LAMBDA_STATS)
    for key in ("mean", "std", "weights"):
        assert stats[key].dtype == np.float32 and stats[key].shape == (601,)
    assert abs(float(stats["weights"].mean()) - 1.0) < 1e-5


def test_dips_grow_with_dose_and_controls_have_none(corpus):
    from godrun.gates.metrics import detect_dips

    spectra = corpus / layout.SPECTRA_DIR
    m = pd.read_csv(corpus / layout.MANIFEST_ALL)
    wl = np.load(spectra / "wavelength_grid.npy")

    def total_area(gid: str) -> float:
        ref = np.load(spectra / m[m.group_id == gid].reference_path.iloc[0])
        return sum(d.area for d in detect_dips(ref, wl))

    assert total_area("treatment_6/sample_L/12Oclock") == 0
    low, high = total_area("treatment_1/sample_G/6Oclock"), total_area("treatment_5/sample_G/6Oclock")
    assert 0 < low < high


def test_synth_refuses_to_overwrite_without_force(corpus, capsys):
    assert godrun_main(["data", "synth", "--out", str(corpus), "--scale", "0.05"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert godrun_main(["data", "synth", "--out", str(corpus), "--scale", "0"]) == 2
