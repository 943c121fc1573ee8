"""`godrun data adopt` (hash columns for a seed-layout dataset) and `--panel-group` on `godrun data panel`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from godrun.cli import main as godrun_main
from godrun.data import layout
from godrun.data.loader import HASH_COLUMNS, PIN_COLUMNS


def _seedlike(small_corpus: Path, tmp_path: Path) -> Path:
    """The small corpus as the seed ships it: manifests without content_sha256/reference_sha256 (nor the panel's
    grid/dose pins)."""
    root = tmp_path / "seed"
    shutil.copytree(small_corpus / "data", root / "data")
    for rel in (layout.MANIFEST_ALL, layout.MANIFEST_TRAIN, layout.PANEL_MANIFEST):
        df = pd.read_csv(root / rel, dtype=str, keep_default_na=False)
        df.drop(columns=[c for c in (*HASH_COLUMNS, *PIN_COLUMNS) if c in df.columns]).to_csv(
            root / rel, index=False, lineterminator="\n"
        )
    return root


def test_adopt_writes_the_hashes_the_seed_lacks_and_the_panel_then_builds(small_corpus: Path, tmp_path: Path, capsys):
    root = _seedlike(small_corpus, tmp_path)
    assert godrun_main(["data", "panel", "--root", str(root)]) == 2
    assert "lacks column(s) content_sha256, reference_sha256" in capsys.readouterr().err
    assert godrun_main(["data", "adopt", str(root)]) == 0
    for rel in (layout.MANIFEST_ALL, layout.MANIFEST_TRAIN, layout.PANEL_MANIFEST):
        got = pd.read_csv(root / rel, dtype=str, keep_default_na=False)
        want = pd.read_csv(small_corpus / rel, dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(got[want.columns], want)  # the same hashes synth computed
    assert "hash cells added" in (root / "data/adopt_audit.md").read_text()
    hashes = json.loads((root / layout.MANIFEST_HASHES).read_text())
    assert (
        hashes[str(layout.PANEL_MANIFEST)]
        == json.loads((small_corpus / layout.MANIFEST_HASHES).read_text())[str(layout.PANEL_MANIFEST)]
    )
    assert godrun_main(["data", "panel", "--root", str(root)]) == 0


@pytest.mark.parametrize("damage", ["missing", "unreadable", "wrong-hash"])
def test_adopt_refuses_a_bad_row_and_writes_nothing(small_corpus: Path, tmp_path: Path, capsys, damage: str):
    root = _seedlike(small_corpus, tmp_path)
    all_ = pd.read_csv(root / layout.MANIFEST_ALL)
    target = root / layout.SPECTRA_DIR / all_.path.iloc[4]
    if damage == "missing":
        target.unlink()
    elif damage == "unreadable":
        target.write_bytes(b"not a numpy file")
    else:
        df = pd.read_csv(small_corpus / layout.MANIFEST_ALL, dtype=str, keep_default_na=False)
        df.loc[4, "content_sha256"] = "0" * 64
        df.to_csv(root / layout.MANIFEST_ALL, index=False, lineterminator="\n")
    before = {
        rel: (root / rel).read_bytes() for rel in (layout.MANIFEST_ALL, layout.MANIFEST_TRAIN, layout.PANEL_MANIFEST)
    }
    assert godrun_main(["data", "adopt", str(root)]) == 2
    err = capsys.readouterr().err
    assert "row 5" in err and all_.path.iloc[4] in err
    assert {rel: (root / rel).read_bytes() for rel in before} == before
    assert not (root / "data/adopt_audit.md").exists()


def test_panel_group_flag_holds_out_the_named_groups(small_corpus: Path, tmp_path: Path, capsys):
    root = tmp_path / "ws"
    shutil.copytree(small_corpus / "data", root / "data")
    groups = ["treatment_1/sample_F/6Oclock", "treatment_6/sample_L/12Oclock"]
    argv = ["data", "panel", "--root", str(root), "--panel-group", groups[0], "--panel-group", groups[1]]
    assert godrun_main(argv) == 0
    panel = pd.read_csv(root / layout.PANEL_MANIFEST)
    train = pd.read_csv(root / layout.MANIFEST_TRAIN)
    assert sorted(set(panel.group_id)) == sorted(groups)
    assert len(panel) + len(train) == len(pd.read_csv(root / layout.MANIFEST_ALL))  # whole groups
    assert json.loads((root / layout.MANIFEST_HASHES).read_text())["panel_groups"] == groups
    assert godrun_main(["data", "panel", "--root", str(root), "--panel-group", "no/such/group"]) == 2
    assert "'no/such/group': no spectra" in capsys.readouterr().err
    default = json.loads((small_corpus / layout.MANIFEST_HASHES).read_text())["panel_groups"]
    assert default == list(layout.PANEL_GROUPS)


def test_panel_rows_need_references_training_rows_do_not(small_corpus: Path, tmp_path: Path, capsys):
    root = tmp_path / "ws"
    shutil.copytree(small_corpus / "data", root / "data")
    all_ = pd.read_csv(root / layout.MANIFEST_ALL, dtype=str, keep_default_na=False)
    train = ~all_["group_id"].isin(list(layout.PANEL_GROUPS))
    all_.loc[train, ["reference_path", "reference_sha256"]] = ""
    all_.to_csv(root / layout.MANIFEST_ALL, index=False, lineterminator="\n")
    assert godrun_main(["data", "panel", "--root", str(root)]) == 0
    assert godrun_main(["data", "check", "--root", str(root)]) == 0
    panel_row = all_.index[~train][0]
    all_.loc[panel_row, ["reference_path", "reference_sha256"]] = ""
    all_.to_csv(root / layout.MANIFEST_ALL, index=False, lineterminator="\n")
    assert godrun_main(["data", "panel", "--root", str(root)]) == 2
    assert f"panel row {all_.spectrum_id[panel_row]!r}" in capsys.readouterr().err
