"""Readers for the user's files: each one is an input boundary (godrun.errors.reading).

A malformed file, a wrong dtype, a wrong shape or a table without rows becomes an InputError (exit 2)
whose message names the file (and the row or column when there is one), never a traceback.
numpy and pandas are imported on use, so that torch-free, numpy-free callers can import this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from godrun.errors import InputError, reading

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a spectrum, a grid or a weight may hold


def _name(path: str | os.PathLike[str], label: str) -> str:
    return f"{label} {os.fspath(path)}" if label else os.fspath(path)


def read_text(path: str | os.PathLike[str], label: str = "") -> str:
    """The file as UTF-8 text."""
    with reading(path, label):
        return Path(path).read_text(encoding="utf-8")


def read_json(path: str | os.PathLike[str], label: str = "") -> Any:
    with reading(path, label):
        return json.loads(Path(path).read_text(encoding="utf-8"))


def read_csv(
    path: str | os.PathLike[str],
    label: str = "",
    *,
    required: Sequence[str] = (),
    dtype: dict[str, Any] | None = None,
    min_rows: int = 1,
) -> pd.DataFrame:
    """A UTF-8 CSV with at least `min_rows` data rows and every `required` column."""
    import pandas as pd

    with reading(path, label):
        df = pd.read_csv(Path(path), dtype=dtype, encoding="utf-8", encoding_errors="strict")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{_name(path, label)}: lacks column(s) {', '.join(missing)} (has {list(df.columns)})")
    if len(df) < min_rows:
        raise InputError(f"{_name(path, label)}: has {len(df)} data row(s), needs at least {min_rows}")
    return df


def numeric_column(df: pd.DataFrame, column: str, path: str | os.PathLike[str], label: str = "") -> np.ndarray:
    """Column `column` as float64; a cell that is not a number is named by its 1-based data row."""
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(df[column], errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(np.isnan(values) & df[column].notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{_name(path, label)} row {i + 1}: {column} {df[column].iloc[i]!r} is not a number")
    return values


def check_numeric(arr: np.ndarray, where: str) -> np.ndarray:
    """`arr` if it holds real numbers (not strings, objects or complex numbers)."""
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{where}: holds {arr.dtype} values, expected numbers")
    return arr


def load_array(path: str | os.PathLike[str], label: str = "", *, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A numeric .npy array (no pickles), optionally of exactly `shape`."""
    import numpy as np

    with reading(path, label):
        arr = np.load(Path(path), allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise InputError(f"{_name(path, label)}: an .npz archive, expected one .npy array")
    check_numeric(arr, _name(path, label))
    if shape is not None and arr.shape != shape:
        raise InputError(f"{_name(path, label)}: shape {arr.shape}, expected {shape}")
    return arr


def load_npz(path: str | os.PathLike[str], label: str = "", *, keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every array of a .npz archive (no pickles); each of `keys` must be there and numeric."""
    import numpy as np

    with reading(path, label):
        z = np.load(Path(path), allow_pickle=False)
    if isinstance(z, np.ndarray):
        raise InputError(f"{_name(path, label)}: a single .npy array, expected an .npz archive")
    with z, reading(path, label):
        arrays = {k: z[k] for k in z.files}  # reads (and checks) every member now, while the file is open
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise InputError(f"{_name(path, label)}: no `{missing[0]}` array (has {sorted(arrays)})")
    for k in keys:
        check_numeric(arrays[k], f"{_name(path, label)} `{k}`")
    return arrays
