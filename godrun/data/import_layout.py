"""The seed layout an import writes: Noise2Noise pairs, panel references (reference_file or leave-one-out
replicate means), the spectra and references as float32 .npy, manifest_all.csv, grid and lambda-stats, the
import lineage and audit."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.contract import files
from godrun.data import layout
from godrun.data.import_meta import TEXT_DEFAULTS
from godrun.data.import_read import ImportOptions, Reader, row_unit
from godrun.errors import InputError
from godrun.fsio import atomic_write_bytes, atomic_write_text, sha256_file


def assign_pairs(df: pd.DataFrame) -> pd.Series:
    """pair_id per row: the replicates of a sample (and polarity, when given) in replicate order, two by two (an
    odd last one joins the last pair), as the synthetic corpus pairs two replicates of one clean spectrum."""
    pair = pd.Series("", index=df.index, dtype=object)
    for (gid, sample, pol), g in df.groupby(["group_id", "sample", "polarity"], sort=False):
        order = g.sort_values("replicate").index
        k = np.arange(len(order)) // 2
        if len(order) % 2 and len(order) > 1:
            k[-1] = k[-2]
        tag = f"{gid}/{sample}" if pol == TEXT_DEFAULTS["polarity"] else f"{gid}/{sample}/{pol}"
        pair[order] = [f"{tag}/pair{j:03d}" for j in k]
    return pair


def leave_one_out_means(raw: np.ndarray, df: pd.DataFrame, rows: np.ndarray, path: Path) -> np.ndarray:
    """For each of `rows` (positions): the mean of the other replicates of its sample."""
    out = np.empty((len(rows), raw.shape[1]))
    keys = (df["group_id"] + "\x00" + df["sample"] + "\x00" + df["polarity"]).to_numpy()
    for n, i in enumerate(rows):
        same = np.flatnonzero(keys == keys[i])
        if len(same) < 2:
            raise InputError(
                f"metadata {path} line {int(df['meta_line'].iloc[i])}: --references replicate-mean needs two or more "
                f"replicates of sample {df['sample'].iloc[i]!r} in group {df['group_id'].iloc[i]!r}"
            )
        out[n] = (raw[same].sum(axis=0) - raw[i]) / (len(same) - 1)
    return out


def references(
    opts: ImportOptions, meta: pd.DataFrame, raw: np.ndarray, in_panel: np.ndarray, reader: Reader
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """{row: reference values} and {row: key} (rows sharing a key share one reference file)."""
    reference: dict[int, np.ndarray] = {}
    keys: dict[int, str] = {}
    for i, row in enumerate(meta.itertuples(index=False)):
        if row.reference_file:
            file, _, column = row.reference_file.partition("::")
            reference[i], _ = reader.spectrum(
                file, column or None, int(row.meta_line), row_unit(row.unit, row.meta_line, opts)
            )
            keys[i] = f"file:{row.reference_file}"
    need = np.flatnonzero(in_panel & ~np.isin(np.arange(len(meta)), list(reference)))
    if need.size and opts.references == "replicate-mean":
        for j, ref in zip(need, leave_one_out_means(raw, meta, need, opts.metadata), strict=True):
            reference[int(j)], keys[int(j)] = ref, f"loo:{j}"
    elif need.size:
        line = int(meta["meta_line"].iloc[need[0]])
        raise InputError(
            f"{opts.metadata} line {line}: panel spectrum (group {meta['group_id'].iloc[need[0]]!r}) has no "
            "reference_file; give one per panel row or --references replicate-mean"
        )
    return reference, keys


def _check_partners(manifest: pd.DataFrame, meta: pd.DataFrame, path: Path) -> None:
    """A training row without a reference needs a Noise2Noise partner."""
    sizes = manifest.groupby("pair_id")["pair_id"].transform("size").to_numpy()
    alone = (sizes < 2) & (manifest["reference_path"] == "").to_numpy()
    if alone.any():
        i = int(np.flatnonzero(alone)[0])
        raise InputError(
            f"metadata {path} line {int(meta['meta_line'].iloc[i])}: sample {meta['sample'].iloc[i]!r} of group "
            f"{meta['group_id'].iloc[i]!r} has one replicate and no reference_file: Noise2Noise needs two"
        )


def check_panel_references(manifest: pd.DataFrame, meta: pd.DataFrame, in_panel: np.ndarray, path: Path) -> None:
    """A panel reference_file holding one of the imported spectra (a training one: leakage; the row's own: its
    raw input would be a perfect prediction) is refused: a panel target is a clean reference or a replicate mean
    (with two replicates that is the other one, as the audit states)."""
    first = dict(zip(manifest["content_sha256"][::-1], manifest["spectrum_id"][::-1], strict=True))
    for i in np.flatnonzero(in_panel & (meta["reference_file"] != "").to_numpy()):
        same = first.get(manifest["reference_sha256"].iloc[i])
        if same is not None:
            raise InputError(
                f"metadata {path} line {int(meta['meta_line'].iloc[i])}: the panel reference "
                f"{meta['reference_file'].iloc[i]!r} holds the same spectrum as {same!r}, an imported spectrum; "
                "a panel target must be a clean reference (or --references replicate-mean)"
            )


def write_spectra(
    root: Path, meta: pd.DataFrame, shas: list[str], reference: dict[int, np.ndarray], ref_keys: dict[int, str],
    facts: list[dict], path: Path,
) -> pd.DataFrame:  # fmt: skip
    """Every reference as float32 .npy under data/spectra_for_fold (the spectra are there); manifest_all.csv."""
    from godrun.data.synth import npy_bytes

    base = root / layout.SPECTRA_DIR
    (base / "references").mkdir()
    pairs = assign_pairs(meta)
    ref_file: dict[str, tuple[str, str]] = {}
    rows = []
    for i, m in enumerate(meta.itertuples(index=False)):
        rel = f"spectra/{i:06d}.npy"
        ref_rel = ref_sha = ""
        if i in reference:
            key = ref_keys[i]
            if key not in ref_file:
                ref_data = npy_bytes(reference[i].astype(np.float32))
                ref_file[key] = (f"references/{len(ref_file):06d}.npy", hashlib.sha256(ref_data).hexdigest())
                (base / ref_file[key][0]).write_bytes(ref_data)
            ref_rel, ref_sha = ref_file[key]
        rows.append({"spectrum_id": m.spectrum_id, "group_id": m.group_id, "treatment": m.treatment,
                     "sample": m.sample, "angle": m.angle, "polarity": m.polarity, "replicate": m.replicate,
                     "pair_id": pairs.iloc[i], "path": rel, "reference_path": ref_rel,
                     "content_sha256": shas[i], "reference_sha256": ref_sha,
                     "source_file": m.file, "source_column": m.column, **facts[i]})  # fmt: skip
    manifest = pd.DataFrame(rows)
    _check_partners(manifest, meta, path)
    atomic_write_text(root / layout.MANIFEST_ALL, manifest.to_csv(index=False, lineterminator="\n"))
    return manifest


def write_grid_and_stats(
    root: Path, train_raw: np.ndarray, manifest: pd.DataFrame, feats: pd.DataFrame | None, train: list[str]
) -> None:
    from godrun.data.synth import _lambda_from_moments, _npy_any, npz_bytes, wavelength_grid, write_metadata

    wl = wavelength_grid()
    x = train_raw.astype(np.float32).astype(np.float64)
    stats = _lambda_from_moments(x.mean(axis=0), x.std(axis=0), wl)
    atomic_write_bytes(root / layout.LAMBDA_STATS, npz_bytes(stats))
    atomic_write_bytes(root / layout.WAVELENGTH_GRID, _npy_any(wl))
    write_metadata(root, feats, manifest, train)


IMPORT_LINEAGE = files.IMPORT_LINEAGE
IMPORT_AUDIT = files.IMPORT_AUDIT


def import_lineage(opts: ImportOptions, meta: pd.DataFrame, reader: Reader, groups: Sequence[str], unit: str) -> dict:
    return {
        "metadata_sha256": sha256_file(opts.metadata),
        "source_files": dict(sorted(reader.hashes.items())),
        "unit": unit,
        "source_units": sorted(reader.units),
        "converted": bool(opts.to_unit) and sorted(reader.units) != [opts.to_unit],
        "grid": {"min_nm": layout.GRID_MIN_NM, "max_nm": layout.GRID_MAX_NM, "points": layout.GRID_POINTS},
        "resampling": "bin mean of the piecewise-linear interpolant (band integrals kept), a measurement on the grid's "
        "points taken as is; godrun/data/resample.py",
        "fill": opts.fill,
        "panel_groups": list(groups),
        "panel_references": opts.references or "reference_file",
        "training_references": "reference_file where given, else none (Noise2Noise on replicate pairs)",
        "spectra": len(meta),
    }


def import_audit(opts: ImportOptions, manifest: pd.DataFrame, lineage: dict) -> str:
    filled = manifest[
        (manifest["measured_min_nm"] > layout.GRID_MIN_NM) | (manifest["measured_max_nm"] < layout.GRID_MAX_NM)
    ]
    loo = opts.references == "replicate-mean"
    lines = [
        "# Import audit",
        "",
        f"- {len(manifest)} spectra from {len(lineage['source_files'])} file(s) under `{opts.spectra_dir}`, "
        f"metadata `{opts.metadata}` (sha256 `{lineage['metadata_sha256']}`).",
        f"- unit: **{lineage['unit']}** (read from the files or declared: {', '.join(lineage['source_units'])}; "
        + ("converted on request)." if lineage["converted"] else "no conversion)."),
        f"- resampled onto {layout.GRID_MIN_NM:g}-{layout.GRID_MAX_NM:g} nm, {layout.GRID_POINTS} points: "
        f"{lineage['resampling']}.",
        f"- fill: `{opts.fill}`; {len(filled)} spectra measured over less than the grid"
        + (f" (e.g. `{filled['spectrum_id'].iloc[0]}`)" if len(filled) else "")
        + "; each row's measured range is in manifest_all.csv (measured_min_nm, measured_max_nm).",
        f"- panel groups: {', '.join(f'`{g}`' for g in lineage['panel_groups'])} (whole groups).",
        "- panel references: "
        + ("the mean of the other replicates of the same sample (leave-one-out): the reference holds the noise "
           "of n-1 replicates, so PSNR against it is lower than against the truth by up to "
           "10*log10(1 + 1/(n-1)) dB for a perfect prediction." if loo else "the rows' reference_file."),
        f"- training rows with a reference: {_train_refs(manifest, lineage)}"
        " (the others train on their Noise2Noise partner; the dip loss takes its windows from their group's mean).",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def _train_refs(manifest: pd.DataFrame, lineage: dict) -> int:
    train = ~manifest["group_id"].isin(lineage["panel_groups"])
    return int((train & (manifest["reference_path"] != "")).sum())
