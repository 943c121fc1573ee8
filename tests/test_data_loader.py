"""load_corpus: arrays, and every bad-row case (InputError naming row, spectrum_id and file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from godrun.cli import main as godrun_main
from godrun.data import layout
from godrun.data.loader import load_corpus, load_dose_features, load_dose_stats
from godrun.errors import InputError
from godrun.fsio import sha256_file
from godrun.spec import FILM_FEATURES


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loader")
    assert godrun_main(["data", "synth", "--out", str(root), "--scale", "0.02", "--panel"]) == 0
    return root


@pytest.fixture
def ws(base, tmp_path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(base, root)
    return root


def _load(ws: Path, manifest: Path | None = None):
    return load_corpus(
        manifest or ws / layout.MANIFEST_TRAIN, ws / layout.SPECTRA_DIR, wavelength_grid=ws / layout.WAVELENGTH_GRID
    )


def test_loads_arrays(ws):
    c1 = _load(ws)
    meta = pd.read_csv(ws / layout.MANIFEST_TRAIN)
    assert c1.raw.shape == c1.reference.shape == (len(meta), 601)
    assert c1.raw.dtype == np.float32 and c1.wavelengths.dtype == np.float64
    row = meta.iloc[7]
    np.testing.assert_array_equal(c1.raw[7], np.load(ws / layout.SPECTRA_DIR / row.path))
    np.testing.assert_array_equal(c1.reference[7], np.load(ws / layout.SPECTRA_DIR / row.reference_path))
    assert list(c1.meta.spectrum_id) == list(meta.spectrum_id)
    assert not list(ws.rglob("*.npz*")) or all("lambda_stats" in p.name for p in ws.rglob("*.npz"))  # no cache
    # a changed file is seen on the next load, whatever its size and mtime
    np.save(ws / layout.SPECTRA_DIR / row.path, np.zeros(601, np.float32))
    with pytest.raises(InputError, match="sha256"):
        _load(ws)


def _break(ws: Path, row: int, how) -> tuple[Path, str, str]:
    path = ws / layout.MANIFEST_TRAIN
    meta = pd.read_csv(path)
    sid, rel = meta.spectrum_id.iloc[row], meta.path.iloc[row]
    how(meta, ws / layout.SPECTRA_DIR / rel, row)
    meta.to_csv(path, index=False)
    return path, sid, rel


def _rehash(meta, file, row):
    """The manifest re-pinned to the broken file, so only the break itself is left to find."""
    meta.loc[row, "content_sha256"] = sha256_file(file)


CASES = {
    "missing file": (lambda m, f, r: f.unlink(), "not found"),
    "wrong length": (lambda m, f, r: (np.save(f, np.ones(600, np.float32)), _rehash(m, f, r)), "expected"),
    "nan": (lambda m, f, r: (np.save(f, np.full(601, np.nan, np.float32)), _rehash(m, f, r)), "NaN or Inf"),
    "inf": (
        lambda m, f, r: (np.save(f, np.r_[np.ones(600), np.inf].astype(np.float32)), _rehash(m, f, r)),
        "NaN or Inf",
    ),
    "bad hash": (lambda m, f, r: np.save(f, np.ones(601, np.float32)), "sha256"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_rows_name_row_id_and_file(ws, case):
    how, phrase = CASES[case]
    _, sid, rel = _break(ws, 4, how)
    with pytest.raises(InputError) as info:
        _load(ws)
    msg = str(info.value)
    assert phrase in msg and "row 5" in msg and sid in msg and rel in msg


def test_duplicate_spectrum_id(ws):
    path = ws / layout.MANIFEST_TRAIN
    meta = pd.read_csv(path)
    meta.loc[9, "spectrum_id"] = meta.loc[2, "spectrum_id"]
    meta.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"row 10: duplicate spectrum_id .* \(first at row 3\)"):
        _load(ws)


def test_exit_code_two_through_the_cli_contract(ws, capsys):
    from godrun.errors import run_main

    (ws / layout.SPECTRA_DIR / pd.read_csv(ws / layout.MANIFEST_TRAIN).path.iloc[0]).unlink()
    assert run_main(lambda argv: _load(ws), []) == 2
    assert "row 1" in capsys.readouterr().err


def test_dose_features_and_stats(ws):
    meta = pd.read_csv(ws / layout.MANIFEST_TRAIN)
    feats = load_dose_features(ws / layout.DOSE_FEATURES, FILM_FEATURES, meta.group_id)
    assert list(feats.columns) == list(FILM_FEATURES) and set(feats.index) == set(meta.group_id)
    with pytest.raises(InputError, match=r"dose_features\.csv: unknown group .treatment_9/sample_Z/6Oclock."):
        load_dose_features(ws / layout.DOSE_FEATURES, FILM_FEATURES, [*meta.group_id, "treatment_9/sample_Z/6Oclock"])
    with pytest.raises(InputError, match="feature column"):
        load_dose_features(ws / layout.DOSE_FEATURES, ["nope"], meta.group_id)
    stats = load_dose_stats(ws / layout.DOSE_STATS)
    assert set(stats) == set(FILM_FEATURES) and all(s >= 0 for _, s in stats.values())
    (ws / layout.DOSE_STATS).write_text("{}")
    with pytest.raises(InputError, match="dose stats"):
        load_dose_stats(ws / layout.DOSE_STATS)
