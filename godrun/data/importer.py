"""`godrun data import SPECTRA_DIR --metadata META.csv --out OUT`: an instrument's files as a seed-layout dataset.

META.csv (comma-, semicolon- or tab-separated, UTF-8 or UTF-16 with its BOM) has one row per spectrum: `file`
(relative to SPECTRA_DIR), `group_id`, `replicate` (an integer); optional `column` (which spectrum of a
many-column table: its header name or 1-based index), `spectrum_id` (default: the file's path, `:column`
added), `sample` (default: the group_id), `treatment`, `angle`, `polarity`, `unit`, `reference_file` (a clean
reference, read like a spectrum; `FILE::COLUMN` picks a column of a many-column table), and the FiLM
dose/geometry feature columns (all of them or none; constant within a group). A spectrum file (by its suffix)
in SPECTRA_DIR that no row names is refused: a forgotten row would silently drop a measurement.

Each file is read confined to SPECTRA_DIR (no `..`, no absolute path, no symlink out, regular files of at most
64 MiB), parsed (spectra_io.py), converted to one unit (units.py) and resampled onto the 601-point grid
(resample.py). Noise2Noise pairs: the replicates of one sample (group_id + sample + polarity), in replicate
order, two by two (an odd last one joins the pair before it). The panel's references are the rows' reference_file, or
with `--references replicate-mean` the mean of the *other* replicates of the same sample (the spectrum is
left out of its own reference, so its noise is not in it; the reference keeps the noise of n − 1 replicates,
variance σ²/(n − 1), which lowers the panel's PSNR against the truth's by about 10·log10(1 + 1/(n−1)) at most
for a perfect denoiser — stated in the import audit). Training rows need no reference.

OUT gets the seed's layout, built in a temp folder beside OUT and renamed into place at the end: any bad
input exits 2 naming the file (and META line) with nothing left in OUT; an existing non-empty OUT is refused.

The parts: import_meta.py (the metadata table), import_read.py (reading the spectrum files), import_layout.py
(pairs, references, the layout's files, lineage and audit), import_out.py (the atomic output folder).
"""

from __future__ import annotations

from pathlib import Path

from godrun.data import layout, resample, units
from godrun.data.import_layout import (
    IMPORT_AUDIT,
    IMPORT_LINEAGE,
    check_panel_references,
    import_audit,
    import_lineage,
    references,
    write_grid_and_stats,
    write_spectra,
)
from godrun.data.import_meta import dose_features, read_metadata, refuse_repeated_spectra, refuse_unlisted
from godrun.data.import_out import output_folder
from godrun.data.import_read import ImportOptions, Reader, read_all
from godrun.errors import InputError
from godrun.fsio import atomic_write_json, atomic_write_text

REFERENCE_METHODS = ("replicate-mean",)

__all__ = ["ImportOptions", "import_dataset"]


def import_dataset(opts: ImportOptions) -> dict:
    """Build OUT (see the module doc); returns a summary. Nothing is left behind on failure."""
    if opts.references not in (None, *REFERENCE_METHODS):
        raise InputError(f"--references {opts.references!r}: choose from {', '.join(REFERENCE_METHODS)}")
    if opts.fill not in resample.FILLS:
        raise InputError(f"--fill {opts.fill!r}: choose from {', '.join(resample.FILLS)}")
    if opts.to_unit:
        opts.to_unit = units.canonical(opts.to_unit, "--to-unit")
    if opts.unit:
        units.canonical(opts.unit, "--unit")
    if not opts.spectra_dir.is_dir():
        raise InputError(f"SPECTRA_DIR {opts.spectra_dir}: not a folder")
    if opts.out.resolve().is_relative_to(opts.spectra_dir.resolve()):
        raise InputError(f"--out {opts.out}: inside SPECTRA_DIR {opts.spectra_dir} (would mix with the spectra)")
    with output_folder(opts.out) as tmp:
        summary = _build(opts, tmp)
    return summary


def _build(opts: ImportOptions, root: Path) -> dict:
    meta = read_metadata(opts.metadata)
    feats = dose_features(meta, opts.metadata)
    from godrun.data.panel import build_panel, panel_groups_for

    groups = panel_groups_for(meta, opts.panel_groups)
    reader = Reader(opts)
    n = len(meta)
    raw, facts, shas = read_all(opts, meta, root / layout.SPECTRA_DIR, reader)
    refuse_repeated_spectra(meta, shas, opts.metadata)
    in_panel = meta["group_id"].isin(groups).to_numpy()
    refuse_unlisted(opts.spectra_dir, meta, opts.metadata, skip=root)
    reference, ref_keys = references(opts, meta, raw, in_panel, reader)
    manifest = write_spectra(root, meta, shas, reference, ref_keys, facts, opts.metadata)
    check_panel_references(manifest, meta, in_panel, opts.metadata)
    train_groups = [g for g in dict.fromkeys(meta["group_id"]) if g not in groups]
    write_grid_and_stats(root, raw[~in_panel], manifest, feats, train_groups)
    unit = opts.to_unit or next(iter(reader.units), "")
    lineage = import_lineage(opts, meta, reader, groups, unit)
    atomic_write_json(root / IMPORT_LINEAGE, lineage)
    atomic_write_text(root / IMPORT_AUDIT, import_audit(opts, manifest, lineage))
    hashes = build_panel(root, verify_files=True, panel_groups=groups)
    return {"spectra": n, "panel_groups": groups, "unit": unit, "hashes": hashes,
            "panel_rows": int(in_panel.sum()), "train_rows": int((~in_panel).sum())}  # fmt: skip
