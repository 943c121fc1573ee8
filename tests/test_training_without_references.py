"""Noise2Noise without clean training targets: rows with no reference_path load, and take their group's mean."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from godrun.data import layout
from godrun.data.loader import load_corpus
from godrun.errors import InputError
from godrun.gates.metrics import dip_windows
from godrun.spec import SEED_DETECTOR
from godrun.trainer import dataset as ds
from godrun.trainer.presets import preset_recipe, rooted


@pytest.fixture
def noref_root(small_corpus: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(small_corpus / "data", root / "data")
    train = pd.read_csv(root / layout.MANIFEST_TRAIN, dtype=str, keep_default_na=False)
    train[["reference_path", "reference_sha256"]] = ""
    train.to_csv(root / layout.MANIFEST_TRAIN, index=False, lineterminator="\n")
    return root


def test_loader_refuses_a_missing_reference_only_where_one_is_needed(noref_root: Path):
    manifest, spectra = noref_root / layout.MANIFEST_TRAIN, noref_root / layout.SPECTRA_DIR
    with pytest.raises(InputError, match=r"row 1 .*no reference_path"):
        load_corpus(manifest, spectra)
    corpus = load_corpus(manifest, spectra, require_references=False)
    assert corpus.has_reference is not None and not corpus.has_reference.any()
    assert np.isnan(corpus.reference).all() and np.isfinite(corpus.raw).all()


def test_training_rows_take_their_group_mean_and_its_dip_windows(noref_root: Path):
    recipe = rooted(preset_recipe("tiny", init_checkpoint=None), noref_root)
    data = ds.load_split(recipe, recipe.train_manifest, None, with_weights=True, require_references=False)
    raw = data.raw.numpy().astype(np.float64)
    for g in np.unique(data.groups)[:3]:
        rows = data.groups == g
        np.testing.assert_allclose(
            data.reference.numpy()[rows], np.broadcast_to(raw[rows].mean(0), raw[rows].shape), atol=1e-6
        )
    expected = dip_windows(
        data.reference.numpy().astype(np.float64), np.linspace(200, 800, 601), SEED_DETECTOR, recipe.dip_m
    )
    assert data.dip_windows is not None and (data.dip_windows.numpy() == expected).all()
    assert (expected[..., 0] >= 0).any()  # the group means do show the corpus's dips
    assert (data.partner.numpy() != np.arange(len(data))).all()  # every row has its Noise2Noise partner
