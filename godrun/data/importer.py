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
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.contract import files
from godrun.data import layout as L
from godrun.data import resample as R
from godrun.data import units as U
from godrun.data.loader import _RowFiles
from godrun.data.spectra_io import Table, parse_spectrum_file
from godrun.errors import InputError, reading
from godrun.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file

REQUIRED = ("file", "group_id", "replicate")
MAX_METADATA_BYTES = 256 << 20
MAX_REPLICATE = 1 << 31
MAX_SOURCE_BYTES = 64 << 20  # one instrument file (a table of many spectra); larger ones are split by the user
SPECTRUM_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", ".asc", ".prn", ".jdx", ".dx", ".jcamp", ".npy")
REFERENCE_METHODS = ("replicate-mean",)
TEXT_DEFAULTS = {"treatment": "0", "angle": "na", "polarity": "na"}


@dataclass
class ImportOptions:
    spectra_dir: Path
    metadata: Path
    out: Path
    panel_groups: list[str] = field(default_factory=list)
    references: str | None = None
    unit: str | None = None
    to_unit: str | None = None
    fill: str = "none"


class _MetaFiles(_RowFiles):
    """The loader's confined reader, its messages naming the metadata line instead of a manifest row; a file
    may hold a table of many spectra, so it may be larger than one spectrum's .npy (MAX_SOURCE_BYTES)."""

    max_bytes = MAX_SOURCE_BYTES

    def where(self, row: int, sid: str, rel: str) -> str:
        return f"{self.manifest} line {row + 1}: file {rel}"


@dataclass
class _Source:
    sha256: str
    table: Table


class _Reader:
    """Reads, parses and resamples the META rows' files; each file parsed once (many-column tables)."""

    def __init__(self, opts: ImportOptions, check_dataset_unit: bool = True) -> None:
        self.opts = opts
        self.check_dataset_unit = check_dataset_unit
        self.files = _MetaFiles(opts.metadata, opts.spectra_dir, 0, verify=False)
        self.sources: dict[str, _Source] = {}
        self.hashes: dict[str, str] = {}  # every source file read (here or by a worker process) -> sha256
        self.grid = np.linspace(L.GRID_MIN_NM, L.GRID_MAX_NM, L.GRID_POINTS)
        self.units: dict[str, str] = {}  # unit -> first "file (line)" that had it

    def source(self, rel: str, line: int) -> _Source:
        src = self.sources.get(rel)
        if src is None:
            where = self.files.where(line - 1, "", rel)
            data = self.files._read_regular(self.files._confined(rel, where), where)
            try:
                table = parse_spectrum_file(data, rel)
            except InputError as exc:
                raise InputError(f"{self.opts.metadata} line {line}: {exc}") from None
            src = self.sources[rel] = _Source(hashlib.sha256(data).hexdigest(), table)
            self.hashes[rel] = src.sha256
        return src

    def spectrum(self, rel: str, column: str | None, line: int, row_unit: str | None) -> tuple[np.ndarray, dict]:
        """(values on the grid, facts for the manifest) of one spectrum."""
        src = self.source(rel, line)
        where = f"{self.opts.metadata} line {line}: file {rel}"
        y = src.table.column(column, where)
        unit = self._unit(src.table.unit, row_unit, where)
        target = self.opts.to_unit or unit
        y = U.convert(y, unit, target, where)
        values = R.resample(src.table.wavelengths, y, self.grid, where, self.opts.fill)
        big = np.flatnonzero(np.abs(values) > np.finfo(np.float32).max)
        if big.size:  # the layout stores float32: this would be inf there
            raise InputError(f"{where}: value {values[big[0]]:g} at {self.grid[big[0]]:g} nm is beyond float32's range")
        wl = src.table.wavelengths
        facts = {"measured_min_nm": round(float(wl[0]), 4), "measured_max_nm": round(float(wl[-1]), 4),
                 "source_unit": unit, "source_sha256": src.sha256}  # fmt: skip
        return values, facts

    def _unit(self, file_unit: str | None, row_unit: str | None, where: str) -> str:
        declared = row_unit or (U.canonical(self.opts.unit, "--unit") if self.opts.unit else None)
        if file_unit and declared and file_unit != declared:
            raise InputError(f"{where}: the file states {file_unit}, the metadata/--unit says {declared}")
        unit = file_unit or declared
        if unit is None:
            raise InputError(f"{where}: the file states no unit; declare it with --unit or a `unit` column")
        if self.check_dataset_unit and not self.opts.to_unit and self.units and unit not in self.units:
            first = next(iter(self.units.items()))
            raise InputError(
                f"{where}: unit {unit}, but {first[1]} is {first[0]}: one unit per dataset (convert with --to-unit)"
            )
        self.units.setdefault(unit, where)
        return unit


# --------------------------------------------------------------------------- metadata


def read_metadata(path: Path) -> pd.DataFrame:
    """META.csv as text columns (no NaN: empty cells are ""), with `meta_line` the row's line in the file."""
    with reading(path, "metadata"):
        st = os.stat(path)  # a FIFO or device would block or never end: regular files only
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"metadata {path}: not a regular file")
    if st.st_size > MAX_METADATA_BYTES:
        raise InputError(f"metadata {path}: {st.st_size} bytes, more than the {MAX_METADATA_BYTES} allowed")
    df = _metadata_table(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"metadata {path}: lacks column(s) {', '.join(missing)} (has {list(df.columns)})")
    if df.empty:
        raise InputError(f"metadata {path}: no rows")
    for col in REQUIRED:
        empty = df[col] == ""
        if empty.any():
            raise InputError(f"metadata {path} line {int(df['meta_line'][empty].iloc[0])}: empty {col}")
    rep = pd.to_numeric(df["replicate"], errors="coerce")
    bad = ~np.isfinite(rep) | (rep < 0) | (rep >= MAX_REPLICATE) | (rep != rep.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"metadata {path} line {int(df['meta_line'].iloc[i])}: replicate {df['replicate'].iloc[i]!r} is not an "
            f"integer 0..{MAX_REPLICATE - 1}"
        )
    df["replicate"] = rep.astype(int)
    for col in ("column", "spectrum_id", "sample", "unit", "reference_file", *TEXT_DEFAULTS):
        if col not in df.columns:
            df[col] = ""
    df["sample"] = df["sample"].where(df["sample"] != "", df["group_id"])
    for col, default in TEXT_DEFAULTS.items():
        df[col] = df[col].where(df[col] != "", default)
    default_id = df["file"] + np.where(df["column"] != "", ":" + df["column"], "")
    df["spectrum_id"] = df["spectrum_id"].where(df["spectrum_id"] != "", default_id)
    _refuse_duplicates(df, path)
    return df


def _metadata_table(path: Path) -> pd.DataFrame:
    """META's cells as stripped text, with `meta_line` each row's first line (quoted cells may span lines);
    a duplicate column name or a row with more non-empty cells than the header is refused."""
    with reading(path, "metadata"):
        data = path.read_bytes()
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")  # spreadsheets' "Unicode text" export
        text = data.decode("utf-16" if utf16 else "utf-8-sig")
    first = text.split("\n", 1)[0]
    # spreadsheets export `;` or tabs too: the delimiter that splits the header into the required columns
    split = {d: {c.strip().strip('"').lstrip("\ufeff") for c in first.split(d)} for d in (",", ";", "\t")}
    sep = next((d for d in split if set(REQUIRED) <= split[d]), next((d for d in split if d in first), ","))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True)
    records: list[tuple[int, list[str]]] = []
    try:
        line = 1
        for cells in reader:
            if any(c.strip() for c in cells):
                records.append((line, [c.strip() for c in cells]))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"metadata {path} line {reader.line_num}: {exc}") from None
    if not records:
        raise InputError(f"metadata {path}: empty (no header line)")
    header = [c.lstrip("\ufeff") for c in records[0][1]]
    while header and not header[-1]:
        header.pop()  # a trailing delimiter
    if "meta_line" in header:
        raise InputError(f"metadata {path} line {records[0][0]}: column name 'meta_line' is reserved (rename it)")
    dup = next((c for c in header if c and header.count(c) > 1), None)
    if dup is not None:
        raise InputError(f"metadata {path} line {records[0][0]}: duplicate column {dup!r}")
    rows = []
    for line, cells in records[1:]:
        if len(cells) > len(header) and any(cells[len(header) :]):
            raise InputError(f"metadata {path} line {line}: {len(cells)} cells, the header has {len(header)}")
        rows.append([*cells[: len(header)], *[""] * (len(header) - len(cells)), line])
    names = [c or f"unnamed_{k + 1}" for k, c in enumerate(header)]
    df = pd.DataFrame(rows, columns=[*names, "meta_line"]).astype({"meta_line": int})
    df[names] = df[names].astype(str)
    return df


def _refuse_duplicates(df: pd.DataFrame, path: Path) -> None:
    keys = (
        (["spectrum_id"], "spectrum_id"),
        (["file", "column"], "file/column"),
        (["group_id", "sample", "polarity", "replicate"], "group_id/sample/polarity/replicate"),
    )
    for cols, what in keys:
        dup = df.duplicated(cols, keep="first")
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            key = tuple(df[c].iloc[i] for c in cols)
            first = int(df["meta_line"][(df[cols] == df[cols].iloc[i]).all(axis=1)].iloc[0])
            raise InputError(
                f"metadata {path} line {int(df['meta_line'].iloc[i])}: duplicate {what} {key} (first at line {first})"
            )
    for col in ("spectrum_id", "group_id", "sample", *TEXT_DEFAULTS):  # written into manifests and summaries
        bad = df[col].str.contains(r"[\x00-\x1f\x7f]", regex=True)
        if bad.any():
            raise InputError(f"metadata {path} line {int(df['meta_line'][bad].iloc[0])}: {col} has control characters")


def dose_features(df: pd.DataFrame, path: Path) -> pd.DataFrame | None:
    """The FiLM features per group when META has all of them (None when it has none); constant per group."""
    have = [c for c in L.DOSE_FEATURE_COLUMNS if c in df.columns]
    if not have:
        return None
    if len(have) != len(L.DOSE_FEATURE_COLUMNS):
        lack = [c for c in L.DOSE_FEATURE_COLUMNS if c not in have]
        raise InputError(f"metadata {path}: has FiLM feature column(s) {have[0]}... but lacks {', '.join(lack)}")
    rows = {}
    for gid, g in df.groupby("group_id", sort=False):
        vals = {}
        for c in have:
            v = pd.to_numeric(g[c], errors="coerce")
            bad = ~np.isfinite(v.to_numpy(dtype=float))
            if bad.any():
                line = int(g["meta_line"].to_numpy()[bad][0])
                raise InputError(f"metadata {path} line {line}: {c} {g[c].to_numpy()[bad][0]!r} is not a finite number")
            if v.nunique() > 1:
                raise InputError(f"metadata {path} group {gid!r}: {c} differs between its rows")
            vals[c] = float(v.iloc[0])
        rows[gid] = vals
    out = pd.DataFrame.from_dict(rows, orient="index")[list(L.DOSE_FEATURE_COLUMNS)]
    out.index.name = "group_id"
    return out


def refuse_unlisted(spectra_dir: Path, meta: pd.DataFrame, path: Path, skip: Path | None = None) -> None:
    """A spectrum file in SPECTRA_DIR that no metadata row names (as `file` or `reference_file`) is refused:
    a forgotten row would silently drop a measurement. Other files (notes, licences) are left alone."""
    listed = set(meta["file"]) | {r.partition("::")[0] for r in meta["reference_file"] if r}
    listed = {os.path.normpath(f) for f in listed}
    skip_real = os.path.realpath(skip) if skip else None
    meta_real = os.path.realpath(path)  # the metadata table itself may sit among the spectra
    for folder, dirs, names in os.walk(spectra_dir):  # symlinked folders are not walked into
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(folder, d)) != skip_real)
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), spectra_dir)
            if os.path.realpath(os.path.join(folder, name)) == meta_real:
                continue
            if name.lower().endswith(SPECTRUM_SUFFIXES) and os.path.normpath(rel) not in listed:
                raise InputError(f"{spectra_dir / rel}: a spectrum file with no row in metadata {path}")


# --------------------------------------------------------------------------- pairs and references


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


def leave_one_out_means(values: np.ndarray, df: pd.DataFrame, rows: np.ndarray, path: Path) -> np.ndarray:
    """For each of `rows` (positions): the mean of the other replicates of its sample."""
    out = np.empty((len(rows), values.shape[1]))
    keys = (df["group_id"] + "\x00" + df["sample"] + "\x00" + df["polarity"]).to_numpy()
    for n, i in enumerate(rows):
        same = np.flatnonzero(keys == keys[i])
        if len(same) < 2:
            raise InputError(
                f"metadata {path} line {int(df['meta_line'].iloc[i])}: --references replicate-mean needs two or more "
                f"replicates of sample {df['sample'].iloc[i]!r} in group {df['group_id'].iloc[i]!r}"
            )
        out[n] = (values[same].sum(axis=0) - values[i]) / (len(same) - 1)
    return out


# --------------------------------------------------------------------------- build


def _prepare_out(out: Path) -> tuple[Path, list[Path]]:
    """A temp folder beside OUT (refused when OUT exists and is not an empty folder), and the parent folders
    made for it (deepest first: removed again when the import fails)."""
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise InputError(f"--out {out}: exists and is not an empty folder (nothing was written)")
    made = [p for p in out.absolute().parents if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name[:64]}.import-", dir=out.parent)), made


def import_dataset(opts: ImportOptions) -> dict:
    """Build OUT (see the module doc); returns a summary. Nothing is left behind on failure."""
    if opts.references not in (None, *REFERENCE_METHODS):
        raise InputError(f"--references {opts.references!r}: choose from {', '.join(REFERENCE_METHODS)}")
    if opts.fill not in R.FILLS:
        raise InputError(f"--fill {opts.fill!r}: choose from {', '.join(R.FILLS)}")
    if opts.to_unit:
        opts.to_unit = U.canonical(opts.to_unit, "--to-unit")
    if opts.unit:
        U.canonical(opts.unit, "--unit")
    if not opts.spectra_dir.is_dir():
        raise InputError(f"SPECTRA_DIR {opts.spectra_dir}: not a folder")
    if opts.out.resolve().is_relative_to(opts.spectra_dir.resolve()):
        raise InputError(f"--out {opts.out}: inside SPECTRA_DIR {opts.spectra_dir} (would mix with the spectra)")
    tmp, made = _prepare_out(opts.out)
    try:
        summary = _build(opts, tmp)
        if opts.out.exists():
            opts.out.rmdir()  # empty (checked); a rename onto it would also work, but not across a race
        os.rename(tmp, opts.out)
        made = []
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty


def _build(opts: ImportOptions, root: Path) -> dict:
    meta = read_metadata(opts.metadata)
    feats = dose_features(meta, opts.metadata)
    from godrun.data.panel import build_panel, panel_groups_for

    groups = panel_groups_for(meta, opts.panel_groups)
    reader = _Reader(opts)
    n = len(meta)
    values, facts, shas = read_all(opts, meta, root / L.SPECTRA_DIR, reader)
    in_panel = meta["group_id"].isin(groups).to_numpy()
    refuse_unlisted(opts.spectra_dir, meta, opts.metadata, skip=root)
    refs, ref_keys = _references(opts, meta, values, in_panel, reader)
    manifest = _write_spectra(root, meta, shas, refs, ref_keys, facts, opts.metadata)
    _check_panel_references(manifest, meta, in_panel, opts.metadata)
    train_groups = [g for g in dict.fromkeys(meta["group_id"]) if g not in groups]
    _write_grid_and_stats(root, values[~in_panel], manifest, feats, train_groups)
    unit = opts.to_unit or next(iter(reader.units), "")
    lineage = _lineage(opts, meta, reader, groups, unit)
    atomic_write_json(root / IMPORT_LINEAGE, lineage)
    atomic_write_text(root / IMPORT_AUDIT, _audit(opts, manifest, lineage))
    hashes = build_panel(root, verify_files=True, panel_groups=groups)
    return {"spectra": n, "panel_groups": groups, "unit": unit, "hashes": hashes,
            "panel_rows": int(in_panel.sum()), "train_rows": int((~in_panel).sum())}  # fmt: skip


def _row_unit(cell: str, line: int, opts: ImportOptions) -> str | None:
    return U.canonical(cell, f"{opts.metadata} line {line}: unit") if cell else None


ROWS_PER_WORKER = 400  # below this many rows per process, one process reads them all


def read_all(
    opts: ImportOptions, meta: pd.DataFrame, base: Path, reader: _Reader
) -> tuple[np.ndarray, list[dict], list[str]]:
    """Every row's spectrum on the grid, its facts and the sha256 of its .npy (written to base/spectra).

    Large imports are read by one process per CPU, in contiguous chunks of rows; the first failing row (in
    META order) is the one reported, and the one-unit check runs over all rows in order afterwards.
    """
    (base / "spectra").mkdir(parents=True)
    rows = [(r.file, r.column or None, int(r.meta_line), r.unit) for r in meta.itertuples(index=False)]
    workers = min(os.cpu_count() or 1, len(rows) // ROWS_PER_WORKER)
    if workers <= 1:
        parts = [_read_chunk(opts, rows, 0, base, reader)]
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        bounds = np.linspace(0, len(rows), 4 * workers + 1).astype(int)
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            futures = [
                pool.submit(_read_chunk, opts, rows[a:b], int(a), base, None) for a, b in itertools.pairwise(bounds)
            ]
            try:
                parts = [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()
    values = np.concatenate([p[0] for p in parts])
    facts = [f for p in parts for f in p[1]]
    shas = [h for p in parts for h in p[2]]
    for p in parts:
        reader.hashes.update(p[3])
    _check_one_unit(opts, meta, facts, reader)
    return values, facts, shas


def _read_chunk(
    opts: ImportOptions, rows: list[tuple], start: int, base: Path, reader: _Reader | None
) -> tuple[np.ndarray, list[dict], list[str], dict[str, str]]:
    from godrun.data.synth import npy_bytes

    reader = reader or _Reader(opts, check_dataset_unit=False)
    values = np.empty((len(rows), L.GRID_POINTS))
    facts, shas = [], []
    for k, (file, column, line, unit_cell) in enumerate(rows):
        values[k], f = reader.spectrum(file, column, line, _row_unit(unit_cell, line, opts))
        data = npy_bytes(values[k].astype(np.float32))
        fd = os.open(base / f"spectra/{start + k:06d}.npy", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        facts.append(f)
        shas.append(hashlib.sha256(data).hexdigest())
    return values, facts, shas, reader.hashes


def _check_one_unit(opts: ImportOptions, meta: pd.DataFrame, facts: list[dict], reader: _Reader) -> None:
    units = [f["source_unit"] for f in facts]
    if not opts.to_unit:
        bad = [i for i, u in enumerate(units) if u != units[0]]
        if bad:
            i = bad[0]
            where = f"{opts.metadata} line {int(meta['meta_line'].iloc[i])}: file {meta['file'].iloc[i]}"
            raise InputError(
                f"{where}: unit {units[i]}, but line {int(meta['meta_line'].iloc[0])} is {units[0]}: "
                "one unit per dataset (convert with --to-unit)"
            )
    for i, u in enumerate(units):
        reader.units.setdefault(u, f"{opts.metadata} line {int(meta['meta_line'].iloc[i])}")


def _references(
    opts: ImportOptions, meta: pd.DataFrame, values: np.ndarray, in_panel: np.ndarray, reader: _Reader
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """{row: reference values} and {row: key} (rows sharing a key share one reference file)."""
    refs: dict[int, np.ndarray] = {}
    keys: dict[int, str] = {}
    for i, row in enumerate(meta.itertuples(index=False)):
        if row.reference_file:
            file, _, column = row.reference_file.partition("::")
            refs[i], _ = reader.spectrum(
                file, column or None, int(row.meta_line), _row_unit(row.unit, row.meta_line, opts)
            )
            keys[i] = f"file:{row.reference_file}"
    need = np.flatnonzero(in_panel & ~np.isin(np.arange(len(meta)), list(refs)))
    if need.size and opts.references == "replicate-mean":
        for j, ref in zip(need, leave_one_out_means(values, meta, need, opts.metadata), strict=True):
            refs[int(j)], keys[int(j)] = ref, f"loo:{j}"
    elif need.size:
        line = int(meta["meta_line"].iloc[need[0]])
        raise InputError(
            f"{opts.metadata} line {line}: panel spectrum (group {meta['group_id'].iloc[need[0]]!r}) has no "
            "reference_file; give one per panel row or --references replicate-mean"
        )
    return refs, keys


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


def _check_panel_references(manifest: pd.DataFrame, meta: pd.DataFrame, in_panel: np.ndarray, path: Path) -> None:
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


def _write_spectra(
    root: Path, meta: pd.DataFrame, shas: list[str], refs: dict[int, np.ndarray], ref_keys: dict[int, str],
    facts: list[dict], path: Path,
) -> pd.DataFrame:  # fmt: skip
    """Every reference as float32 .npy under data/spectra_for_fold (the spectra are there); manifest_all.csv."""
    from godrun.data.synth import npy_bytes

    base = root / L.SPECTRA_DIR
    (base / "references").mkdir()
    pairs = assign_pairs(meta)
    ref_file: dict[str, tuple[str, str]] = {}
    rows = []
    for i, m in enumerate(meta.itertuples(index=False)):
        rel = f"spectra/{i:06d}.npy"
        ref_rel = ref_sha = ""
        if i in refs:
            key = ref_keys[i]
            if key not in ref_file:
                ref_data = npy_bytes(refs[i].astype(np.float32))
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
    atomic_write_text(root / L.MANIFEST_ALL, manifest.to_csv(index=False, lineterminator="\n"))
    return manifest


def _write_grid_and_stats(
    root: Path, train_values: np.ndarray, manifest: pd.DataFrame, feats: pd.DataFrame | None, train: list[str]
) -> None:
    from godrun.data.synth import _lambda_from_moments, _npy_any, npz_bytes, wavelength_grid, write_metadata

    wl = wavelength_grid()
    x = train_values.astype(np.float32).astype(np.float64)
    stats = _lambda_from_moments(x.mean(axis=0), x.std(axis=0), wl)
    atomic_write_bytes(root / L.LAMBDA_STATS, npz_bytes(stats))
    atomic_write_bytes(root / L.WAVELENGTH_GRID, _npy_any(wl))
    write_metadata(root, feats, manifest, train)


# --------------------------------------------------------------------------- lineage and audit

IMPORT_LINEAGE = files.IMPORT_LINEAGE
IMPORT_AUDIT = files.IMPORT_AUDIT


def _lineage(opts: ImportOptions, meta: pd.DataFrame, reader: _Reader, groups: Sequence[str], unit: str) -> dict:
    return {
        "metadata_sha256": sha256_file(opts.metadata),
        "source_files": dict(sorted(reader.hashes.items())),
        "unit": unit,
        "source_units": sorted(reader.units),
        "converted": bool(opts.to_unit) and sorted(reader.units) != [opts.to_unit],
        "grid": {"min_nm": L.GRID_MIN_NM, "max_nm": L.GRID_MAX_NM, "points": L.GRID_POINTS},
        "resampling": "bin mean of the piecewise-linear interpolant (band integrals kept), a measurement on the grid's "
        "points taken as is; godrun/data/resample.py",
        "fill": opts.fill,
        "panel_groups": list(groups),
        "panel_references": opts.references or "reference_file",
        "training_references": "reference_file where given, else none (Noise2Noise on replicate pairs)",
        "spectra": len(meta),
    }


def _audit(opts: ImportOptions, manifest: pd.DataFrame, lineage: dict) -> str:
    filled = manifest[(manifest["measured_min_nm"] > L.GRID_MIN_NM) | (manifest["measured_max_nm"] < L.GRID_MAX_NM)]
    loo = opts.references == "replicate-mean"
    lines = [
        "# Import audit",
        "",
        f"- {len(manifest)} spectra from {len(lineage['source_files'])} file(s) under `{opts.spectra_dir}`, "
        f"metadata `{opts.metadata}` (sha256 `{lineage['metadata_sha256']}`).",
        f"- unit: **{lineage['unit']}** (read from the files or declared: {', '.join(lineage['source_units'])}; "
        + ("converted on request)." if lineage["converted"] else "no conversion)."),
        f"- resampled onto {L.GRID_MIN_NM:g}-{L.GRID_MAX_NM:g} nm, {L.GRID_POINTS} points: {lineage['resampling']}.",
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


def summarymeta_line(summary: dict) -> str:
    return json.dumps({k: v for k, v in summary.items() if k != "hashes"})
