"""Read a manifest into float32 arrays + metadata, with a consolidated on-disk cache.

The first load reads one .npy per spectrum and per clean reference, validates every row (file present,
expected length, finite values, content_sha256 when the manifest has it, unique spectrum_id) and writes
one .npz holding both arrays. The cache key is the sha256 of the manifest bytes, the root directory, the
expected length and the size+mtime of every file the manifest names, so any change reloads. Bad rows
raise InputError naming the row number (1-based data row), spectrum_id and file.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.errors import InputError
from godrun.fsio import atomic_path
from godrun.inputs import check_numeric, load_array, numeric_column, read_csv, read_json

REQUIRED_COLUMNS = ("spectrum_id", "group_id", "path", "reference_path")
CACHE_VERSION = "1"


@dataclass
class Corpus:
    spectra: np.ndarray  # float32 [N, L]
    references: np.ndarray  # float32 [N, L]
    meta: pd.DataFrame  # manifest rows, same order
    wavelengths: np.ndarray  # float64 [L]


def read_manifest(manifest: str | os.PathLike[str]) -> pd.DataFrame:
    path = Path(manifest)
    dtype = {"spectrum_id": str, "group_id": str, "pair_id": str, "sample": str}
    meta = read_csv(path, "manifest", required=REQUIRED_COLUMNS, dtype=dtype)
    dup = meta["spectrum_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((meta["spectrum_id"] == meta["spectrum_id"].iloc[i]).to_numpy())[0])
        sid = meta["spectrum_id"].iloc[i]
        raise InputError(f"manifest {path} row {i + 1}: duplicate spectrum_id {sid!r} (first at row {first + 1})")
    return meta


def _read_vector(
    path: Path, expected_length: int, row: int, sid: str, manifest: Path, want_sha: str | None
) -> np.ndarray:
    where = f"manifest {manifest} row {row} (spectrum_id {sid!r}), file {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{where}: file not found") from None
    except OSError as exc:
        raise InputError(f"{where}: cannot read ({exc})") from exc
    if want_sha and hashlib.sha256(data).hexdigest() != want_sha:
        raise InputError(f"{where}: content does not match content_sha256 in the manifest")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{where}: not a readable .npy ({exc})") from exc
    check_numeric(arr, where)
    if arr.ndim != 1 or arr.shape[0] != expected_length:
        raise InputError(f"{where}: shape {arr.shape}, expected ({expected_length},)")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: contains NaN or Inf")
    return arr.astype(np.float32, copy=False)


def _cache_key(manifest: Path, root: Path, meta: pd.DataFrame, expected_length: int, grid_sha: str) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{root.resolve()}|{expected_length}|{grid_sha}|".encode())
    h.update(manifest.read_bytes())
    base = os.fspath(root)
    for rel in (*meta["path"], *meta["reference_path"]):
        try:
            st = os.stat(os.path.join(base, rel))  # plain strings: pathlib is several times slower here
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(f"{rel}:missing;".encode())
    return h.hexdigest()


def _load_cached(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["spectra"], z["references"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, spectra: np.ndarray, refs: np.ndarray) -> None:
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, spectra=spectra, references=refs)
    except OSError:
        pass  # a read-only cache folder only costs speed


def load_wavelengths(path: str | os.PathLike[str] | None, expected_length: int) -> np.ndarray:
    if path is None:
        return np.linspace(200.0, 800.0, expected_length)
    p = Path(path)
    wl = load_array(p, "wavelength grid", shape=(expected_length,)).astype(np.float64)
    if not np.all(np.isfinite(wl)) or np.any(np.diff(wl) <= 0):
        raise InputError(f"wavelength grid {p}: must be finite and strictly increasing")
    return wl


def load_corpus(
    manifest: str | os.PathLike[str],
    root_dir: str | os.PathLike[str],
    *,
    wavelength_grid: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_length: int = 601,
) -> Corpus:
    """Load every row of `manifest` (paths relative to root_dir); cache under cache_dir or <root>/.cache."""
    manifest, root = Path(manifest), Path(root_dir)
    meta = read_manifest(manifest)
    wl = load_wavelengths(wavelength_grid, expected_length)
    cache = Path(cache_dir) if cache_dir is not None else root / ".cache"
    key = _cache_key(manifest, root, meta, expected_length, hashlib.sha256(wl.tobytes()).hexdigest())
    cache_file = cache / f"corpus_{key[:32]}.npz"
    if cache_file.is_file():
        hit = _load_cached(cache_file)
        if hit is not None and hit[0].shape == (len(meta), expected_length) == hit[1].shape:
            return Corpus(hit[0], hit[1], meta, wl)
    spectra = np.empty((len(meta), expected_length), np.float32)
    refs = np.empty_like(spectra)
    shas = meta["content_sha256"] if "content_sha256" in meta.columns else pd.Series([None] * len(meta))
    ref_seen: dict[str, np.ndarray] = {}
    rows = zip(meta["spectrum_id"], meta["path"], meta["reference_path"], shas, strict=True)
    for i, (sid, rel, ref_rel, sha) in enumerate(rows):
        want = sha if isinstance(sha, str) else None
        spectra[i] = _read_vector(root / str(rel), expected_length, i + 1, sid, manifest, want)
        ref = ref_seen.get(ref_rel)
        if ref is None:
            ref = ref_seen[ref_rel] = _read_vector(root / str(ref_rel), expected_length, i + 1, sid, manifest, None)
        refs[i] = ref
    _write_cache(cache_file, spectra, refs)
    return Corpus(spectra, refs, meta, wl)


def load_dose_features(csv: str | os.PathLike[str], features: Sequence[str], groups: Iterable[str]) -> pd.DataFrame:
    """The requested feature columns indexed by group_id; every group in `groups` must be present."""
    path = Path(csv)
    df = read_csv(path, "dose features", required=("group_id",), dtype={"group_id": str})
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
