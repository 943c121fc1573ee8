"""Readers for the user's files: each one is an input boundary (godrun.errors.reading).

A malformed file, a wrong dtype, a wrong shape or a table without rows becomes an InputError (exit 2)
whose message names the file (and the row or column when there is one), never a traceback. Every file is
read through godrun.fsio.read_bytes: confined (no symlink followed below the run volume), regular files
only (a FIFO is refused, never waited on), at most MAX_INPUT_BYTES; an .npy header is checked against the
bytes that follow it before any array is allocated.
numpy and pandas are imported on use, so that torch-free, numpy-free callers can import this module.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from godrun.errors import InputError, reading
from godrun.fsio import read_bytes

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a spectrum, a grid or a weight may hold
MAX_INPUT_BYTES = 1 << 30  # a table, grid or archive larger than this is not one of ours


def _name(path: str | os.PathLike[str], label: str) -> str:
    return f"{label} {os.fspath(path)}" if label else os.fspath(path)


def read_text(path: str | os.PathLike[str], label: str = "") -> str:
    """The file as UTF-8 text."""
    with reading(path, label):
        return read_bytes(path, max_bytes=MAX_INPUT_BYTES).decode("utf-8")


def read_json(path: str | os.PathLike[str], label: str = "") -> Any:
    with reading(path, label):
        return json.loads(read_bytes(path, max_bytes=MAX_INPUT_BYTES).decode("utf-8"))


def read_csv(
    path: str | os.PathLike[str],
    label: str = "",
    *,
    required: Sequence[str] = (),
    dtype: dict[str, Any] | type | None = None,
    min_rows: int = 1,
    data: bytes | None = None,
) -> pd.DataFrame:
    """A UTF-8 CSV with at least `min_rows` data rows and every `required` column (`data`: its bytes, read already)."""
    import pandas as pd

    with reading(path, label):
        if data is None:
            data = read_bytes(path, max_bytes=MAX_INPUT_BYTES)
        df = pd.read_csv(io.BytesIO(data), dtype=dtype, encoding="utf-8", encoding_errors="strict")
    header = next(csv.reader([data.decode("utf-8-sig", errors="replace").partition("\n")[0].rstrip("\r")]), [])
    dup = next((c for c in header if c and header.count(c) > 1), None)
    if dup is not None:  # pandas would rename the second `dup.1` and read the first: which one did the user mean?
        raise InputError(f"{_name(path, label)}: duplicate column {dup!r} in the header")
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


def parse_npy(data: bytes, where: str) -> np.ndarray:
    """The array of an .npy file's bytes (no pickles); a header whose shape the bytes do not hold is refused
    before anything is allocated (a header may claim (601, 2**40))."""
    import numpy as np

    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f".npy format version {version} is not read here")
        shape, fortran, dtype = read_header[version](buf)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError) as exc:
        raise InputError(f"{where}: not a readable .npy ({exc})") from exc
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{where}: holds {dtype} values, expected numbers")
    count = 1
    for n in shape:
        count *= int(n)
    # a negative or absurd dimension can multiply to the right byte count: (-1, -601), (2**64, 0)
    if any(not 0 <= int(n) < 2**31 for n in shape) or count * dtype.itemsize != len(data) - buf.tell():
        raise InputError(f"{where}: its header claims shape {shape} of {dtype}, the file holds {len(data)} bytes")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=buf.tell())
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def load_array(path: str | os.PathLike[str], label: str = "", *, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A numeric .npy array (no pickles), optionally of exactly `shape`."""

    with reading(path, label):
        data = read_bytes(path, max_bytes=MAX_INPUT_BYTES)
    if data[:2] == b"PK":
        raise InputError(f"{_name(path, label)}: an .npz archive, expected one .npy array")
    arr = parse_npy(data, _name(path, label))
    if shape is not None and arr.shape != shape:
        raise InputError(f"{_name(path, label)}: shape {arr.shape}, expected {shape}")
    return arr


def load_npz(path: str | os.PathLike[str], label: str = "", *, keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every array of a .npz archive (no pickles); each of `keys` must be there and numeric."""

    with reading(path, label):
        data = read_bytes(path, max_bytes=MAX_INPUT_BYTES)
    if data[:6] == b"\x93NUMPY":
        raise InputError(f"{_name(path, label)}: a single .npy array, expected an .npz archive")
    arrays: dict[str, np.ndarray] = {}
    with reading(path, label, extra=(zipfile.BadZipFile,)), zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if info.file_size > MAX_INPUT_BYTES:
                raise InputError(f"{_name(path, label)}: member {info.filename} unpacks to {info.file_size} bytes")
            key = info.filename.removesuffix(".npy")
            arrays[key] = parse_npy(z.read(info), f"{_name(path, label)} `{key}`")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise InputError(f"{_name(path, label)}: no `{missing[0]}` array (has {sorted(arrays)})")
    for k in keys:
        check_numeric(arrays[k], f"{_name(path, label)} `{k}`")
    return arrays
