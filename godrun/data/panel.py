"""Split manifest_all into the fixed validation panel and the training manifest; refuse any leakage."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.data import audits, layout
from godrun.errors import InputError
from godrun.fsio import atomic_write_json, atomic_write_text, sha256_bytes, sha256_file


def leakage(train: pd.DataFrame, panel: pd.DataFrame) -> list[str]:
    """Every overlap between train and panel: group_id, spectrum_id, spectrum content and reference content hashes."""
    problems = []
    shared_groups = sorted(set(train["group_id"]) & set(panel["group_id"]))
    if shared_groups:
        problems.append(f"{len(shared_groups)} group_id(s) in both train and panel, e.g. {shared_groups[0]!r}")
    shared_ids = sorted(set(train["spectrum_id"]) & set(panel["spectrum_id"]))
    if shared_ids:
        problems.append(f"{len(shared_ids)} spectrum_id(s) in both, e.g. {shared_ids[0]!r}")
    for col, what in (("content_sha256", "spectrum"), ("reference_sha256", "clean reference")):
        if col not in train.columns or col not in panel.columns:
            continue
        t = train[["spectrum_id", col]].dropna().assign(**{col: lambda d, c=col: d[c].str.lower()})
        p = panel[["spectrum_id", col]].dropna().assign(**{col: lambda d, c=col: d[c].str.lower()})
        both = t.merge(p, on=col, suffixes=("_train", "_panel"))
        if len(both):
            r = both.iloc[0]
            problems.append(
                f"{len(both)} {what} content hash(es) in both: train {r['spectrum_id_train']!r} has the same "
                f"{what} as panel {r['spectrum_id_panel']!r}"
            )
    return problems


def verify_manifest_files(manifest: Path, root: Path) -> None:
    """Every spectrum and reference the manifest names: inside `root`, regular, finite, matching its sha256."""
    from godrun.data.loader import load_corpus

    load_corpus(manifest, root, verify=True, expected_length=layout.GRID_POINTS, require_references=False)


def check(train: pd.DataFrame, panel: pd.DataFrame) -> None:
    problems = leakage(train, panel)
    if problems:
        raise InputError("leakage between training manifest and validation panel: " + "; ".join(problems))


def panel_groups_for(manifest_all: pd.DataFrame, requested: Sequence[str] | None = None) -> list[str]:
    """The panel's group_ids: `requested` (each must have spectra), else those of the seed's three present.

    Whole groups only: a panel group's every row goes to the panel, and at least one group must stay for training.
    """
    present = set(manifest_all["group_id"].astype(str))
    if requested:
        groups = list(dict.fromkeys(requested))
        missing = [g for g in groups if g not in present]
        if missing:
            raise InputError(f"--panel-group {missing[0]!r}: no spectra of that group_id in {layout.MANIFEST_ALL}")
    else:
        groups = [g for g in layout.PANEL_GROUPS if g in present]
        if not groups:
            raise InputError(
                f"{layout.MANIFEST_ALL}: none of the default panel groups ({', '.join(layout.PANEL_GROUPS)}) is there; "
                "name the panel's groups with --panel-group"
            )
    if present <= set(groups):
        raise InputError("--panel-group: every group is in the panel, none is left to train on")
    return groups


def split(manifest_all: pd.DataFrame, groups: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    chosen = panel_groups_for(manifest_all, groups)
    in_panel = manifest_all["group_id"].isin(chosen)
    return manifest_all[~in_panel].reset_index(drop=True), manifest_all[in_panel].reset_index(drop=True)


def check_panel_references(panel: pd.DataFrame) -> None:
    """Every panel row names its clean reference (training rows may go without: Noise2Noise needs none)."""
    refs = panel["reference_path"]
    missing = refs.isna() | (refs.astype(str).str.strip() == "")
    if missing.any():
        i = int(np.flatnonzero(missing.to_numpy())[0])
        raise InputError(
            f"panel row {panel['spectrum_id'].iloc[i]!r} (group {panel['group_id'].iloc[i]!r}) has no "
            "reference_path: the panel is judged against references"
        )


def _read(path: Path) -> pd.DataFrame:
    from godrun.data.loader import read_manifest

    return read_manifest(path)


def pin_inputs(panel: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The panel with what its verdict reads besides its files pinned in its rows (so expectedHash pins them):
    grid_sha256, the sha256 of the wavelength grid; dose_sha256, the pin of each row's group's dose-feature row
    (empty when there is no dose_features.csv or no row for the group: FiLM checkpoints are then refused)."""
    from godrun.data.loader import dose_row_hashes

    grid = root / layout.WAVELENGTH_GRID
    if not grid.is_file():
        raise InputError(f"{grid}: the wavelength grid the panel is evaluated on does not exist")
    doses = root / layout.DOSE_FEATURES
    rows = dose_row_hashes(doses) if doses.is_file() else {}
    pins = {"grid_sha256": sha256_file(grid), "dose_sha256": [rows.get(str(g), "") for g in panel["group_id"]]}
    return panel.drop(columns=[c for c in pins if c in panel.columns]).assign(**pins)


def build_panel(
    root: str | os.PathLike[str], verify_files: bool = True, panel_groups: Sequence[str] | None = None
) -> dict[str, str]:
    """Write validation_panel.csv, manifest_train.csv, the audits and manifest_hashes.json under `root`.

    Everything is checked before anything is written; returns {relative path: sha256} of the manifests.
    manifest_hashes.json also records the panel's group_ids under "panel_groups".
    """
    root = Path(root)
    all_df = _read(root / layout.MANIFEST_ALL)
    groups = panel_groups_for(all_df, panel_groups)
    train, panel = split(all_df, groups)
    check_panel_references(panel)
    spectra_root = root / layout.SPECTRA_DIR
    if verify_files:
        verify_manifest_files(root / layout.MANIFEST_ALL, spectra_root)
    check(train, panel)
    panel = pin_inputs(panel, root)
    train_csv = train.to_csv(index=False, lineterminator="\n").encode()
    panel_csv = panel.to_csv(index=False, lineterminator="\n").encode()
    hashes = {
        str(layout.MANIFEST_TRAIN): sha256_bytes(train_csv),
        str(layout.PANEL_MANIFEST): sha256_bytes(panel_csv),
        str(layout.MANIFEST_ALL): sha256_file(root / layout.MANIFEST_ALL),
    }
    docs = {
        layout.TRAIN_SUMMARY_MD: audits.train_summary(train, groups),
        layout.GROUP_COUNTS_MD: audits.group_counts(train),
        layout.PANEL_SUMMARY_MD: audits.panel_summary(panel, train, hashes[str(layout.PANEL_MANIFEST)], groups),
    }
    atomic_write_text(root / layout.MANIFEST_TRAIN, train_csv.decode())
    atomic_write_text(root / layout.PANEL_MANIFEST, panel_csv.decode())
    for rel, text in docs.items():
        atomic_write_text(root / rel, text)
    atomic_write_json(root / layout.MANIFEST_HASHES, {**hashes, "panel_groups": groups})
    return hashes


def check_root(root: str | os.PathLike[str], train: str | None = None, panel: str | None = None) -> tuple[int, int]:
    """Leakage check of an existing train manifest against the panel; returns (train rows, panel rows)."""
    root = Path(root)
    train_df = _read(Path(train) if train else root / layout.MANIFEST_TRAIN)
    panel_df = _read(Path(panel) if panel else root / layout.PANEL_MANIFEST)
    check(train_df, panel_df)
    check_values(
        Path(train) if train else root / layout.MANIFEST_TRAIN,
        Path(panel) if panel else root / layout.PANEL_MANIFEST,
        root / layout.SPECTRA_DIR,
    )
    return len(train_df), len(panel_df)


def check_values(train: Path, panel: Path, files_root: Path) -> None:
    """Leakage judged on the values (godrun.data.overlap): every file of both manifests is read."""
    from godrun.data.loader import load_corpus
    from godrun.data.overlap import spectra_and_references, value_leakage

    t = load_corpus(train, files_root, verify=False, require_references=False)
    p = load_corpus(panel, files_root, verify=False)
    tid, pid = t.meta["spectrum_id"].tolist(), p.meta["spectrum_id"].tolist()
    problems = value_leakage(
        spectra_and_references(t.raw, t.reference, tid), spectra_and_references(p.raw, p.reference, pid)
    )
    if problems:
        raise InputError(f"leakage between {train} and the panel {panel}: " + "; ".join(problems))
