"""Read a manifest into float32 arrays + metadata, every file checked against the manifest on every load.

The manifest is the truth: its `content_sha256` and `reference_sha256` columns name the exact bytes of every
noisy spectrum and every clean reference, so the sha256 of the manifest (what `panel.expectedHash` pins)
covers the whole panel. With `verify` (the default) each file is hashed as it is read and must match; there
is no on-disk cache to trust, so nothing but the files the manifest names can reach a verdict. Without
`verify` (spec.data.verify: false, for the trainer only) the hashes are not recomputed.

Row paths are relative to the root folder and stay inside it (no absolute paths, no `..`, no symlink leading
out); only regular files are read (opened non-blocking, so a FIFO cannot hang a stage), at most
MAX_FILE_BYTES each. Bad rows raise InputError naming the row number (1-based data row), spectrum_id and file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from godrun.errors import InputError, reading
from godrun.fsio import ConfinementError, confinement_root, open_file, read_bytes
from godrun.inputs import MAX_INPUT_BYTES, load_array, numeric_column, parse_npy, read_csv, read_json

REQUIRED_COLUMNS = ("spectrum_id", "group_id", "path", "reference_path")
# What a panel pins besides its files: the wavelength grid (one sha256 on every row) and each row's group's
# dose-feature row (dose_row_sha256). The panel manifest's sha256 (expectedHash) thereby pins them too.
PIN_COLUMNS = ("grid_sha256", "dose_sha256")
_HEX64 = re.compile(r"[0-9a-f]{64}")
HASH_COLUMNS = ("content_sha256", "reference_sha256")
MAX_FILE_BYTES = 1 << 20  # a 601-point float64 .npy is 4.9 KB; anything near this is not a spectrum


@dataclass
class Corpus:
    raw: np.ndarray  # float32 [N, L]: the measured spectra, the model's input
    reference: np.ndarray  # float32 [N, L]: their clean targets
    meta: pd.DataFrame  # manifest rows, same order
    wavelengths: np.ndarray  # float64 [L]
    has_reference: np.ndarray | None = None  # bool [N]; rows without one hold NaN in `reference`


def read_manifest(manifest: str | os.PathLike[str], *, need_hashes: bool = False) -> pd.DataFrame:
    path = Path(manifest)
    text_columns = (
        "spectrum_id",
        "group_id",
        "pair_id",
        "sample",
        "path",
        "reference_path",
        *HASH_COLUMNS,
        *PIN_COLUMNS,
    )
    required = REQUIRED_COLUMNS + (HASH_COLUMNS if need_hashes else ())
    meta = read_csv(path, "manifest", required=required, dtype=dict.fromkeys(text_columns, str))
    dup = meta["spectrum_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((meta["spectrum_id"] == meta["spectrum_id"].iloc[i]).to_numpy())[0])
        sid = meta["spectrum_id"].iloc[i]
        raise InputError(f"manifest {path} row {i + 1}: duplicate spectrum_id {sid!r} (first at row {first + 1})")
    return meta


class _RowFiles:
    """Reads the files of one manifest's rows below one root: confined, regular, bounded, hashed."""

    max_bytes = MAX_FILE_BYTES  # the bound on one file (the importer's tables of many spectra get a larger one)

    def __init__(self, manifest: Path, root: Path, expected_length: int, verify: bool) -> None:
        self.manifest, self.root, self.length, self.verify = manifest, root, expected_length, verify
        self.real_root = os.path.realpath(root)
        self._real_dirs: dict[str, bool] = {}
        self._headers: dict[bytes, tuple[np.dtype, int]] = {}

    def where(self, row: int, sid: str, rel: str) -> str:
        return f"manifest {self.manifest} row {row} (spectrum_id {sid!r}), file {rel}"

    def read(self, rel: str, row: int, sid: str, want_sha: str | None) -> tuple[np.ndarray, str]:
        """(vector, sha256 of the bytes) of the file `rel`; InputError naming the row on any problem."""
        where = self.where(row, sid, rel)
        data = self._read_regular(self._confined(rel, where), where)
        digest = hashlib.sha256(data).hexdigest()
        if self.verify and want_sha is None:
            raise InputError(f"{where}: the manifest gives no sha256 for it")
        if self.verify and digest != want_sha:
            raise InputError(
                f"{where}: content does not match the manifest's sha256 (manifest {want_sha}, file {digest})"
            )
        return self._parse(data, where), digest

    def _confined(self, rel: str, where: str) -> str:
        if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in PurePosixPath(rel).parts:
            raise InputError(f"{where}: the path must be relative to {self.root} without `..`")
        if "\x00" in rel:
            raise InputError(f"{where}: the path holds a NUL byte")
        full = os.path.join(self.root, rel)
        if confinement_root() is not None:
            return full  # opened component by component from the run volume, no symlink followed (godrun.fsio)
        parent = os.path.dirname(full)
        ok = self._real_dirs.get(parent)
        if ok is None:  # one realpath per folder; a symlinked file itself is caught when it is opened
            ok = self._real_dirs[parent] = _within(os.path.realpath(parent), self.real_root)
        if not ok:
            raise InputError(f"{where}: its folder leads outside {self.root}")
        return full

    def _read_regular(self, full: str, where: str) -> bytes:
        """The bytes of a regular file (a FIFO or device is refused without blocking), at most MAX_FILE_BYTES."""
        try:
            if confinement_root() is not None:
                fd = open_file(full, os.O_RDONLY | os.O_NONBLOCK)
            else:
                fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except ConfinementError as exc:
            raise InputError(f"{where}: {exc}") from None
        except FileNotFoundError:
            raise InputError(f"{where}: file not found") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # ELOOP: the file is a symlink; allowed while it stays inside
                raise InputError(f"{where}: cannot read ({exc})") from exc
            if not _within(os.path.realpath(full), self.real_root):
                raise InputError(f"{where}: a symlink leading outside {self.root}") from None
            fd = self._open_followed(full, where)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{where}: not a regular file")
            if st.st_size > self.max_bytes:
                raise InputError(f"{where}: {st.st_size} bytes, more than the {self.max_bytes} a spectrum may have")
            data = os.read(fd, st.st_size + 1)  # one read of the size it has (+1 notices a file still growing)
            if len(data) > st.st_size:
                raise InputError(f"{where}: changed while it was read")
            return data
        except OSError as exc:
            raise InputError(f"{where}: cannot read ({exc})") from exc
        finally:
            os.close(fd)

    @staticmethod
    def _open_followed(full: str, where: str) -> int:
        try:
            return os.open(full, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise InputError(f"{where}: file not found") from None
        except OSError as exc:
            raise InputError(f"{where}: cannot read ({exc})") from exc

    def _parse(self, data: bytes, where: str) -> np.ndarray:
        """The .npy vector; the header of a known layout is recognised by its bytes (the fast path)."""
        hlen = _header_length(data)
        known = self._headers.get(data[:hlen]) if hlen else None
        if known is None:
            arr = _parse_npy(data, where)
            if arr.ndim != 1 or arr.shape[0] != self.length:
                raise InputError(f"{where}: shape {arr.shape}, expected ({self.length},)")
            if hlen:
                self._headers[data[:hlen]] = (arr.dtype, hlen)
            return arr.astype(np.float32, copy=False)
        dtype, offset = known
        if len(data) != offset + self.length * dtype.itemsize:
            raise InputError(f"{where}: {len(data)} bytes, not a ({self.length},) {dtype} .npy")
        return np.frombuffer(data, dtype=dtype, count=self.length, offset=offset)


def _within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _header_length(data: bytes) -> int:
    """Bytes of the .npy magic + header (0 when it is not a version 1 .npy)."""
    if len(data) < 10 or data[:8] != b"\x93NUMPY\x01\x00":
        return 0
    return 10 + int.from_bytes(data[8:10], "little")


def _parse_npy(data: bytes, where: str) -> np.ndarray:
    return parse_npy(data, where)


def load_wavelengths(
    path: str | os.PathLike[str] | None, expected_length: int, *, pinned: str | None = None
) -> np.ndarray:
    """The grid; with `pinned` (a manifest's grid_sha256) its bytes must hash to it, read and parsed once."""
    if path is None:
        return np.linspace(200.0, 800.0, expected_length)
    p = Path(path)
    if pinned is None:
        arr = load_array(p, "wavelength grid", shape=(expected_length,))
    else:
        with reading(p, "wavelength grid"):
            data = read_bytes(p, max_bytes=MAX_FILE_BYTES)
        digest = hashlib.sha256(data).hexdigest()
        if digest != pinned:
            raise InputError(
                f"wavelength grid {p}: content does not match the manifest's grid_sha256 "
                f"(manifest {pinned}, file {digest}); the grid is part of the pinned panel"
            )
        arr = parse_npy(data, f"wavelength grid {p}")
        if arr.shape != (expected_length,):
            raise InputError(f"wavelength grid {p}: shape {arr.shape}, expected ({expected_length},)")
    wl = arr.astype(np.float64)
    if not np.all(np.isfinite(wl)) or np.any(np.diff(wl) <= 0):
        raise InputError(f"wavelength grid {p}: must be finite and strictly increasing")
    return wl


def check_inside_grid(bounds: Iterable[tuple[str, float]], wl: np.ndarray, grid: str) -> None:
    """Every (name, nm) bound within the grid [wl[0], wl[-1]]; InputError naming the first that is not."""
    lo, hi = float(wl[0]), float(wl[-1])
    for name, value in bounds:
        if not lo <= value <= hi:
            raise InputError(f"{name} = {value:g} nm lies outside the wavelength grid {grid} ({lo:g}-{hi:g} nm)")


def load_corpus(
    manifest: str | os.PathLike[str],
    root_dir: str | os.PathLike[str],
    *,
    wavelength_grid: str | os.PathLike[str] | None = None,
    expected_length: int = 601,
    verify: bool = True,
    require_references: bool = True,
    require_pins: bool = False,
) -> Corpus:
    """Load every row of `manifest` (paths relative to root_dir), each file checked (see the module doc).

    Without `require_references` a row may leave reference_path empty (a Noise2Noise training row: replicates,
    no clean target); its `reference` row is NaN and `has_reference` False. With it, such a row is refused.
    """
    manifest, root = Path(manifest), Path(root_dir)
    meta = read_manifest(manifest, need_hashes=verify)
    if require_pins:
        missing = [c for c in PIN_COLUMNS if c not in meta.columns]
        if missing:
            raise InputError(
                f"manifest {manifest}: lacks {', '.join(missing)}; a panel pins its wavelength grid and dose "
                "features (rebuild it with `godrun data panel`)"
            )
    pinned = _one_pin(meta, "grid_sha256", manifest) if verify and "grid_sha256" in meta.columns else None
    if require_pins and wavelength_grid is None:
        raise InputError(f"manifest {manifest}: pins a wavelength grid (grid_sha256); give the grid file")
    wl = load_wavelengths(wavelength_grid, expected_length, pinned=pinned)
    files = _RowFiles(manifest, root, expected_length, verify)
    raw = np.empty((len(meta), expected_length), np.float32)
    reference = np.empty_like(raw)
    no_hash = [None] * len(meta)
    shas = meta["content_sha256"] if "content_sha256" in meta.columns else no_hash
    ref_shas = meta["reference_sha256"] if "reference_sha256" in meta.columns else no_hash
    ref_seen: dict[str, tuple[int, str]] = {}
    rows = zip(meta["spectrum_id"], meta["path"], meta["reference_path"], shas, ref_shas, strict=True)
    has_reference = np.ones(len(meta), bool)
    for i, (sid, rel, ref_rel, sha, ref_sha) in enumerate(rows):
        raw[i], _ = files.read(rel, i + 1, sid, _hex(sha))
        if not isinstance(ref_rel, str) or not ref_rel.strip():
            if require_references:
                raise InputError(f"{files.where(i + 1, sid, '(none)')}: no reference_path (this manifest needs one)")
            has_reference[i], reference[i] = False, np.nan
            continue
        seen = ref_seen.get(ref_rel)
        if seen is None:
            reference[i], digest = files.read(ref_rel, i + 1, sid, _hex(ref_sha))
            ref_seen[ref_rel] = (i, digest)
            continue
        first, digest = seen
        if verify and _hex(ref_sha) != digest:  # one reference file, so every row must claim its one hash
            raise InputError(f"{files.where(i + 1, sid, ref_rel)}: content does not match the manifest's sha256")
        reference[i] = reference[first]
    for name, arr, col in (("spectrum", raw, "path"), ("reference", reference, "reference_path")):
        bad = ~np.isfinite(arr).all(axis=1) & (has_reference if name == "reference" else True)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            where = files.where(i + 1, meta["spectrum_id"].iloc[i], meta[col].iloc[i])
            raise InputError(f"{where}: {name} contains NaN or Inf")
    return Corpus(raw, reference, meta, wl, has_reference)


def _one_pin(meta: pd.DataFrame, column: str, manifest: Path) -> str:
    """The one sha256 every row of `column` names (a grid is one file: rows that disagree are refused)."""
    values = meta[column].fillna("").str.strip().str.lower()
    bad = (values.eq("") | values.ne(values.iloc[0])).to_numpy()
    if bad.any() or not _HEX64.fullmatch(values.iloc[0]):
        i = int(np.flatnonzero(bad)[0]) if bad.any() else 0
        raise InputError(f"manifest {manifest} row {i + 1}: {column} must be one 64-digit sha256 on every row")
    return str(values.iloc[0])


def dose_row_sha256(row: Mapping[str, object]) -> str:
    """The pin of one group's dose-feature row: sha256 over its cells as written (column name -> text)."""
    cells = {str(k): "" if v is None or (isinstance(v, float) and v != v) else str(v) for k, v in row.items()}
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()


def dose_row_hashes(csv: str | os.PathLike[str], data: bytes | None = None) -> dict[str, str]:
    """group_id -> dose_row_sha256 of its row in dose_features.csv."""
    df = read_csv(Path(csv), "dose features", required=("group_id",), dtype=str, data=data)
    return {str(r["group_id"]): dose_row_sha256(r) for r in df.to_dict("records")}


def verified_dose_features(csv: str | os.PathLike[str], meta: pd.DataFrame, manifest: str | os.PathLike[str]) -> bytes:
    """The bytes of dose_features.csv, read once, whose rows for the manifest's groups match its dose_sha256."""
    path = Path(csv)
    with reading(path, "dose features"):
        data = read_bytes(path, max_bytes=MAX_INPUT_BYTES)
    if "dose_sha256" not in meta.columns:
        raise InputError(f"manifest {manifest}: lacks dose_sha256; it does not pin the dose features {path}")
    have = dose_row_hashes(path, data)
    for i, (group, want) in enumerate(zip(meta["group_id"], meta["dose_sha256"], strict=True)):
        got = have.get(str(group))
        if got is None or not isinstance(want, str) or got != want.strip().lower():
            raise InputError(
                f"dose features {path}: the row of group {group!r} does not match the manifest's dose_sha256 "
                f"(manifest {manifest} row {i + 1}); the dose features are part of the pinned panel"
            )
    return data


def _hex(value: object) -> str | None:
    return value.lower() if isinstance(value, str) else None


def load_dose_features(
    csv: str | os.PathLike[str], features: Sequence[str], groups: Iterable[str], *, data: bytes | None = None
) -> pd.DataFrame:
    """The requested feature columns indexed by group_id; every group in `groups` must be present.

    `data`: the file's bytes when they were read (and verified against the panel's pins) already."""
    path = Path(csv)
    df = read_csv(path, "dose features", required=("group_id",), dtype={"group_id": str}, data=data)
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise InputError(f"dose features {path} lacks feature column(s) {', '.join(missing)}")
    for f in features:
        df[f] = numeric_column(df, f, path, "dose features")
    df = df.set_index("group_id")
    if df.index.duplicated().any():
        raise InputError(f"dose features {path}: group {df.index[df.index.duplicated()][0]!r} listed twice")
    wanted = list(dict.fromkeys(groups))
    unknown = [g for g in wanted if g not in df.index]
    if unknown:
        raise InputError(f"dose features {path}: unknown group {unknown[0]!r} ({len(unknown)} unknown in all)")
    out = df.loc[wanted, list(features)].astype(np.float64)
    bad = ~np.isfinite(out.to_numpy())
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(f"dose features {path}: group {wanted[r]!r} has a non-finite {features[c]}")
    return out


def load_dose_stats(json_path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """(mean, std) per feature from dose_stats.json."""
    path = Path(json_path)
    raw = read_json(path, "dose stats")
    try:
        return {name: (float(v["mean"]), float(v["std"])) for name, v in raw["features"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"dose stats {path}: expected {{'features': {{name: {{'mean', 'std'}}}}}} ({exc})") from exc
