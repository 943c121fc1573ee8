"""META.csv of `godrun data import`: the metadata table read as text (its line numbers kept), its checks, the
FiLM features per group, and the spectrum files in SPECTRA_DIR that no row names."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.data import layout
from godrun.errors import InputError, reading

REQUIRED = ("file", "group_id", "replicate")
MAX_METADATA_BYTES = 256 << 20
MAX_REPLICATE = 1 << 31
SPECTRUM_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", ".asc", ".prn", ".jdx", ".dx", ".jcamp", ".npy")
TEXT_DEFAULTS = {"treatment": "0", "angle": "na", "polarity": "na"}


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
    _refuse_macos_files(df, path)
    return df


def is_macos_metadata(rel: str) -> bool:
    """A file macOS writes beside the real ones (`._name` AppleDouble forks, `.DS_Store`, a zip's `__MACOSX/`):
    never a spectrum, whatever its suffix."""
    parts = Path(rel).parts
    return bool(parts) and ("__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] == ".DS_Store")


def _refuse_macos_files(df: pd.DataFrame, path: Path) -> None:
    for col in ("file", "reference_file"):
        bad = df[col].map(lambda f: is_macos_metadata(f.partition("::")[0]))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"metadata {path} line {int(df['meta_line'].iloc[i])}: {col} {df[col].iloc[i]!r} is a macOS metadata "
                "file (AppleDouble `._*`, `.DS_Store`, `__MACOSX/`), not a spectrum: name the spectrum file itself"
            )


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


def refuse_repeated_spectra(df: pd.DataFrame, shas: list[str], path: Path) -> None:
    """Two rows whose spectra are identical on the grid (the same file under two spellings, `./a.csv` and
    `a.csv`, or a copy): one measurement imported twice would pair a spectrum with itself (Noise2Noise learns
    the identity) or put it in training and the panel. Two real measurements are never bit-identical."""
    first: dict[str, int] = {}
    for i, sha in enumerate(shas):
        j = first.setdefault(sha, i)
        if j != i:
            raise InputError(
                f"metadata {path} line {int(df['meta_line'].iloc[i])}: file {df['file'].iloc[i]} holds the same "
                f"spectrum as line {int(df['meta_line'].iloc[j])} (file {df['file'].iloc[j]}): one measurement "
                "imported twice"
            )


def dose_features(df: pd.DataFrame, path: Path) -> pd.DataFrame | None:
    """The FiLM features per group when META has all of them (None when it has none); constant per group."""
    have = [c for c in layout.DOSE_FEATURE_COLUMNS if c in df.columns]
    if not have:
        return None
    if len(have) != len(layout.DOSE_FEATURE_COLUMNS):
        lack = [c for c in layout.DOSE_FEATURE_COLUMNS if c not in have]
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
    out = pd.DataFrame.from_dict(rows, orient="index")[list(layout.DOSE_FEATURE_COLUMNS)]
    out.index.name = "group_id"
    return out


def refuse_unlisted(spectra_dir: Path, meta: pd.DataFrame, path: Path, skip: Path | None = None) -> None:
    """A spectrum file in SPECTRA_DIR that no metadata row names (as `file` or `reference_file`) is refused:
    a forgotten row would silently drop a measurement. Other files (notes, licences) and macOS's own files
    (`._*`, `.DS_Store`, `__MACOSX/`: read_metadata refuses rows naming them) are left alone."""
    listed = set(meta["file"]) | {r.partition("::")[0] for r in meta["reference_file"] if r}
    listed = {os.path.normpath(f) for f in listed}
    skip_real = os.path.realpath(skip) if skip else None
    meta_real = os.path.realpath(path)  # the metadata table itself may sit among the spectra
    for folder, dirs, names in os.walk(spectra_dir):  # symlinked folders are not walked into
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(folder, d)) != skip_real and d != "__MACOSX")
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), spectra_dir)
            if is_macos_metadata(rel):
                continue
            if os.path.realpath(os.path.join(folder, name)) == meta_real:
                continue
            if name.lower().endswith(SPECTRUM_SUFFIXES) and os.path.normpath(rel) not in listed:
                raise InputError(f"{spectra_dir / rel}: a spectrum file with no row in metadata {path}")
