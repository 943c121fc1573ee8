"""`godrun data panel` / `check`: panel split, audits, hashes, and refusal of any leakage (exit 2)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from godrun.cli import main as godrun_main
from godrun.data import layout
from godrun.data.synth import scaled_count

SCALE = 0.05


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("panel")
    assert godrun_main(["data", "synth", "--out", str(root), "--scale", str(SCALE)]) == 0
    assert godrun_main(["data", "panel", "--root", str(root)]) == 0
    return root


def test_panel_and_train_counts(built):
    panel = pd.read_csv(built / layout.PANEL_MANIFEST)
    train = pd.read_csv(built / layout.MANIFEST_TRAIN)
    all_ = pd.read_csv(built / layout.MANIFEST_ALL)
    counts = panel.groupby("group_id").size().to_dict()
    assert counts == {g: scaled_count(n, SCALE) for g, (n, _) in layout.PANEL_GROUPS.items()}
    assert len(train) + len(panel) == len(all_)
    assert not set(train.group_id) & set(panel.group_id)
    assert set(panel.polarity) == set(layout.POLARITIES)


def test_audits_and_hashes(built):
    for md in (layout.TRAIN_SUMMARY_MD, layout.GROUP_COUNTS_MD, layout.PANEL_SUMMARY_MD):
        text = (built / md).read_text()
        assert text.startswith("# ") and "|" in text
    assert "treatment_6/sample_I/6Oclock" in (built / layout.PANEL_SUMMARY_MD).read_text()
    hashes = json.loads((built / layout.MANIFEST_HASHES).read_text())
    for rel in (str(layout.MANIFEST_TRAIN), str(layout.PANEL_MANIFEST)):
        assert hashes[rel] == hashlib.sha256((built / rel).read_bytes()).hexdigest()


def _copy(built: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(built, root)
    return root


def test_check_passes_then_refuses_injected_panel_row(built, tmp_path, capsys):
    assert godrun_main(["data", "check", "--root", str(built)]) == 0
    root = _copy(built, tmp_path)
    train = pd.read_csv(root / layout.MANIFEST_TRAIN)
    panel = pd.read_csv(root / layout.PANEL_MANIFEST)
    pd.concat([train, panel.iloc[[3]]]).to_csv(root / layout.MANIFEST_TRAIN, index=False)
    assert godrun_main(["data", "check", "--root", str(root)]) == 2
    assert "leakage" in capsys.readouterr().err


def test_check_refuses_same_content_under_another_group(built, tmp_path, capsys):
    root = _copy(built, tmp_path)
    train = pd.read_csv(root / layout.MANIFEST_TRAIN)
    panel = pd.read_csv(root / layout.PANEL_MANIFEST)
    fake = train.iloc[[0]].copy()
    fake["spectrum_id"] = "smuggled"
    fake["content_sha256"] = panel["content_sha256"].iloc[0]
    pd.concat([train, fake]).to_csv(root / layout.MANIFEST_TRAIN, index=False)
    assert godrun_main(["data", "check", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "content hash" in err and "smuggled" in err


def test_panel_build_refuses_leaked_file_and_writes_nothing(built, tmp_path, capsys):
    root = _copy(built, tmp_path)
    for rel in (layout.MANIFEST_TRAIN, layout.PANEL_MANIFEST, layout.MANIFEST_HASHES):
        (root / rel).unlink()
    all_ = pd.read_csv(root / layout.MANIFEST_ALL)
    spectra = root / layout.SPECTRA_DIR
    panel_row = all_[all_.group_id == "treatment_6/sample_I/6Oclock"].iloc[0]
    train_i = all_.index[all_.group_id == "treatment_1/sample_F/6Oclock"][0]
    shutil.copyfile(spectra / panel_row.path, spectra / all_.loc[train_i, "path"])  # a panel spectrum inside train
    all_.loc[train_i, "content_sha256"] = panel_row.content_sha256
    all_.to_csv(root / layout.MANIFEST_ALL, index=False)
    assert godrun_main(["data", "panel", "--root", str(root)]) == 2
    assert "leakage" in capsys.readouterr().err
    assert not (root / layout.MANIFEST_TRAIN).exists() and not (root / layout.PANEL_MANIFEST).exists()


def test_panel_build_refuses_tampered_file(built, tmp_path, capsys):
    root = _copy(built, tmp_path)
    all_ = pd.read_csv(root / layout.MANIFEST_ALL)
    target = root / layout.SPECTRA_DIR / all_.path.iloc[5]
    target.write_bytes(target.read_bytes()[:-4] + b"\0\0\0\0")
    before = (root / layout.MANIFEST_TRAIN).read_bytes()
    assert godrun_main(["data", "panel", "--root", str(root)]) == 2
    assert "row 6" in capsys.readouterr().err
    assert (root / layout.MANIFEST_TRAIN).read_bytes() == before
