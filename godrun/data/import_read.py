"""Reading the files META.csv names: confined, parsed once per file, converted to one unit, resampled onto the
grid; many rows are read by one process per CPU."""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.data import layout, resample, units
from godrun.data.loader import _RowFiles
from godrun.data.spectra_io import Table, parse_spectrum_file
from godrun.errors import InputError

MAX_SOURCE_BYTES = 64 << 20  # one instrument file (a table of many spectra); larger ones are split by the user


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


class Reader:
    """Reads, parses and resamples the META rows' files; each file parsed once (many-column tables)."""

    def __init__(self, opts: ImportOptions, check_dataset_unit: bool = True) -> None:
        self.opts = opts
        self.check_dataset_unit = check_dataset_unit
        self.files = _MetaFiles(opts.metadata, opts.spectra_dir, 0, verify=False)
        self.sources: dict[str, _Source] = {}
        self.hashes: dict[str, str] = {}  # every source file read (here or by a worker process) -> sha256
        self.grid = np.linspace(layout.GRID_MIN_NM, layout.GRID_MAX_NM, layout.GRID_POINTS)
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
        y = units.convert(y, unit, target, where)
        values = resample.resample(src.table.wavelengths, y, self.grid, where, self.opts.fill)
        big = np.flatnonzero(np.abs(values) > np.finfo(np.float32).max)
        if big.size:  # the layout stores float32: this would be inf there
            raise InputError(f"{where}: value {values[big[0]]:g} at {self.grid[big[0]]:g} nm is beyond float32's range")
        wl = src.table.wavelengths
        facts = {"measured_min_nm": round(float(wl[0]), 4), "measured_max_nm": round(float(wl[-1]), 4),
                 "source_unit": unit, "source_sha256": src.sha256}  # fmt: skip
        return values, facts

    def _unit(self, file_unit: str | None, row_unit: str | None, where: str) -> str:
        declared = row_unit or (units.canonical(self.opts.unit, "--unit") if self.opts.unit else None)
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


def row_unit(cell: str, line: int, opts: ImportOptions) -> str | None:
    return units.canonical(cell, f"{opts.metadata} line {line}: unit") if cell else None


ROWS_PER_WORKER = 400  # below this many rows per process, one process reads them all


def read_all(
    opts: ImportOptions, meta: pd.DataFrame, base: Path, reader: Reader
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
    raw = np.concatenate([p[0] for p in parts])
    facts = [f for p in parts for f in p[1]]
    shas = [h for p in parts for h in p[2]]
    for p in parts:
        reader.hashes.update(p[3])
    _check_one_unit(opts, meta, facts, reader)
    return raw, facts, shas


def _read_chunk(
    opts: ImportOptions, rows: list[tuple], start: int, base: Path, reader: Reader | None
) -> tuple[np.ndarray, list[dict], list[str], dict[str, str]]:
    from godrun.data.synth import npy_bytes

    reader = reader or Reader(opts, check_dataset_unit=False)
    raw = np.empty((len(rows), layout.GRID_POINTS))
    facts, shas = [], []
    for k, (file, column, line, unit_cell) in enumerate(rows):
        raw[k], f = reader.spectrum(file, column, line, row_unit(unit_cell, line, opts))
        data = npy_bytes(raw[k].astype(np.float32))
        fd = os.open(base / f"spectra/{start + k:06d}.npy", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        facts.append(f)
        shas.append(hashlib.sha256(data).hexdigest())
    return raw, facts, shas, reader.hashes


def _check_one_unit(opts: ImportOptions, meta: pd.DataFrame, facts: list[dict], reader: Reader) -> None:
    found = [f["source_unit"] for f in facts]
    if not opts.to_unit:
        bad = [i for i, u in enumerate(found) if u != found[0]]
        if bad:
            i = bad[0]
            where = f"{opts.metadata} line {int(meta['meta_line'].iloc[i])}: file {meta['file'].iloc[i]}"
            raise InputError(
                f"{where}: unit {found[i]}, but line {int(meta['meta_line'].iloc[0])} is {found[0]}: "
                "one unit per dataset (convert with --to-unit)"
            )
    for i, u in enumerate(found):
        reader.units.setdefault(u, f"{opts.metadata} line {int(meta['meta_line'].iloc[i])}")
