"""`godrun data adopt ROOT`: write the missing content_sha256/reference_sha256 columns into a seed-layout dataset.

The seed's manifests (manifest_all.csv, manifest_train.csv, validation_panel.csv, whichever are there) name
their files but not their hashes, and every godrun stage checks each file against those hashes. adopt reads
every file a row names (confined below data/spectra_for_fold, regular, a finite 601-point .npy, like every
load), and only once every row of every manifest has passed writes the columns: a missing or unreadable file,
or a hash already in a manifest that does not match its file, refuses the whole adoption (exit 2, nothing
written). A panel without grid_sha256/dose_sha256 gets them (the wavelength grid's sha256 and each group's
dose-feature row pin, as `godrun data panel` writes them). Existing cells are checked, never replaced; a row
without a reference_path keeps an empty reference_sha256. data/adopt_audit.md states what was added;
data/manifest_hashes.json, when there, gets the manifests' new sha256. Adopting an adopted dataset writes
nothing (its audit stays).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.contract import files
from godrun.data import layout
from godrun.data.loader import HASH_COLUMNS, PIN_COLUMNS, _RowFiles, read_manifest
from godrun.errors import InputError, reading
from godrun.fsio import atomic_write_json, atomic_write_text, sha256_bytes

MANIFESTS = (layout.MANIFEST_ALL, layout.MANIFEST_TRAIN, layout.PANEL_MANIFEST)
ADOPT_AUDIT = files.ADOPT_AUDIT


def _read_text_table(path: Path) -> pd.DataFrame:
    with reading(path, "manifest"):
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def _hash_rows(path: Path, table: pd.DataFrame, files: _RowFiles, cache: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """`table` with both hash columns filled (existing cells checked); and how many cells were added."""
    files.manifest = path
    out = table.copy()
    added = 0
    for col, src in (("content_sha256", "path"), ("reference_sha256", "reference_path")):
        if col not in out.columns:  # where synth puts it: before the panel's pins
            pins = [c for c in PIN_COLUMNS if c in out.columns]
            out.insert(out.columns.get_loc(pins[0]) if pins else len(out.columns), col, "")
        for i, (sid, rel, have) in enumerate(zip(out["spectrum_id"], out[src], out[col], strict=True)):
            if not rel:
                if src == "path":
                    raise InputError(f"{files.where(i + 1, sid, '(none)')}: empty path")
                continue
            digest = cache.get(rel)
            if digest is None:
                vec, digest = files.read(rel, i + 1, sid, None)
                if not np.isfinite(vec).all():
                    raise InputError(f"{files.where(i + 1, sid, rel)}: contains NaN or Inf")
                cache[rel] = digest
            if have and have.lower() != digest:
                raise InputError(f"{files.where(i + 1, sid, rel)}: {col} {have} in the manifest, the file is {digest}")
            added += not have
            out.loc[out.index[i], col] = digest
    return out, added


def adopt(root: Path) -> list[str]:
    """Fill the hash columns of ROOT's manifests (see the module doc); returns the lines to print."""
    present = [m for m in MANIFESTS if (root / m).is_file()]
    if not present:
        raise InputError(f"{root}: no manifest of the seed's layout ({', '.join(map(str, MANIFESTS))})")
    hashes = _manifest_hashes(root / layout.MANIFEST_HASHES)  # read first: a bad one refuses before any write
    files = _RowFiles(root / present[0], root / layout.SPECTRA_DIR, layout.GRID_POINTS, verify=False)
    cache: dict[str, str] = {}
    done: dict[Path, tuple[str, int, int]] = {}
    for rel in present:
        read_manifest(root / rel)  # required columns, unique spectrum_ids
        table, added = _hash_rows(root / rel, _read_text_table(root / rel), files, cache)
        if rel == layout.PANEL_MANIFEST and not set(PIN_COLUMNS) <= set(table.columns):
            from godrun.data.panel import pin_inputs

            table = pin_inputs(table, root)  # the grid and dose features its verdict reads
            added += len(PIN_COLUMNS) * len(table)
        done[rel] = (table.to_csv(index=False, lineterminator="\n"), added, len(table))
    changed = {rel: text for rel, (text, _, _) in done.items() if (root / rel).read_bytes() != text.encode()}
    if not changed:  # adopted already: nothing to write, and the audit of the adoption stays as it was
        return [f"{sha256_bytes(text.encode())}  {rel} (already adopted)" for rel, (text, _, _) in done.items()]
    for rel, text in changed.items():
        atomic_write_text(root / rel, text)
    if hashes is not None:
        hashes.update({str(rel): sha256_bytes(text.encode()) for rel, (text, _, _) in done.items()})
        atomic_write_json(root / layout.MANIFEST_HASHES, hashes)
    atomic_write_text(root / ADOPT_AUDIT, _audit(done, len(cache)))
    return [
        f"{sha256_bytes(text.encode())}  {rel} ({added} hash cells added)" for rel, (text, added, _) in done.items()
    ]


def _manifest_hashes(path: Path) -> dict | None:
    """data/manifest_hashes.json when there (a JSON object), else None."""
    if not path.is_file():
        return None
    with reading(path, "manifest hashes"):
        hashes = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(hashes, dict):
        raise InputError(f"manifest hashes {path}: a JSON {type(hashes).__name__}, expected an object")
    return hashes


def _audit(done: dict[Path, tuple[str, int, int]], n_files: int) -> str:
    lines = [
        "# Adoption audit",
        "",
        f"`godrun data adopt` hashed {n_files} file(s) (each read confined below `{layout.SPECTRA_DIR}`, a finite "
        f"{layout.GRID_POINTS}-point .npy) and wrote the columns {', '.join(HASH_COLUMNS)} into:",
        "",
    ]
    lines += [f"- `{rel}`: {rows} rows, {added} hash cells added (existing cells checked)" for rel, (_, added, rows) in
              done.items()]  # fmt: skip
    return "\n".join([*lines, ""])
