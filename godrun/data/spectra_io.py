"""Readers for the spectrum files instruments export: delimited text, JCAMP-DX, .npy.

`parse_spectrum_file(data, name)` turns a file's bytes into a `Table`: the wavelengths in nm (increasing)
and one or more value columns, with the y-unit when the file states one. Every problem is an InputError
naming the file (and the line when there is one).

Delimited text (.csv, .tsv, .txt, .dat, .asc, anything not below):
* UTF-8 (a byte-order mark is dropped), UTF-16 with a byte-order mark, or, failing those, Latin-1; CRLF, CR
  or LF line ends; numbers may be quoted (a quoted cell may hold the delimiter), may have Fortran `D`
  exponents (`1.0D-03`) and digit groups of three (`1,234.5`, `1.234,5`): a column's decimal mark is the
  later mark of a number holding both, or the other one of a mark repeated in a number; otherwise a comma
  is decimal (in a comma-delimited file: when no number of the column has a point), so a lone `"1,234"`
  there reads 1.234;
* blank lines and comment lines (starting with `#`, `%`, `//` or `*`) are skipped; the lines before the
  first line of two or more numbers are the header (its last line names the columns), the text after the last
  one a footer (unless it begins like a number: a malformed row is refused);
* the delimiter is the first of tab, `;`, `,` and white space that splits the first data line into at
  least two numbers; with a tab, `;` or white-space delimiter a decimal comma (`0,123`) is read as a point;
* the first column is the x axis, each further column one spectrum (a two-column file is one spectrum);
  further columns equal to the x axis (x, y, x, y ... exports) are dropped (a differing one is refused); when
  the value columns' labels repeat (`Abs`, `Abs`), a header line above naming a sample over each x column
  (Cary-style) names them;
* x unit: from the first header cell (`nm`, `µm`/`um`/`micron`, `cm-1`/`1/cm`/`wavenumber`), else nm;
  y unit: from a value column's header cell when it names one (units.py's names), else undeclared.
JCAMP-DX (.jdx, .dx, or text starting with `##`): parsed by the `jcamp` package, which applies ##XFACTOR
and ##YFACTOR; ##XUNITS and ##YUNITS give the units. A LINK file of one block is that block; of several,
refused (one spectrum per file); a ##PEAK TABLE (peak positions, not a spectrum) and ##NTUPLES are refused;
`$$` comments are dropped (data lines included) before the parser sees the text.
.npy: a [2, L] or [L, 2] array (wavelength nm, value) or a [L] vector on the 601-point grid; no unit.

The x axis must be finite and monotonic (a decreasing one is reversed); a wavelength repeated on the next row
with the same values (a row an exporter wrote twice) counts once, with other values it is refused naming the
file, line and wavelength (averaging would hide a stitched or misaligned scan); values must be finite.
A wavenumber axis becomes nm as 1e7 / x, a µm axis as 1000 · x.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from godrun.data import units
from godrun.errors import InputError
from godrun.inputs import parse_npy

COMMENT_PREFIXES = ("#", "%", "//", "*")
JCAMP_SUFFIXES = (".jdx", ".dx", ".jcamp")
_NUMBER = re.compile(
    r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eEdD][+-]?\d+)?$|^[+-]?(nan|inf|infinity)$"
    r"|^[+-]?\d{1,3}([.,]\d{3})+([.,]\d*)?([eEdD][+-]?\d+)?$",  # digit groups: 1,234.5 or 1.234,5
    re.IGNORECASE,
)
_FORTRAN_EXPONENT = re.compile(r"(?<=[0-9.])[dD](?=[+-]?[0-9])")  # 1.0D-03


@dataclass
class Table:
    """One file's spectra: x in nm increasing [L], values [L, C], column names, the y unit if stated."""

    wavelengths: np.ndarray
    values: np.ndarray
    columns: list[str]
    unit: str | None = None
    x_unit: str = "nm"
    notes: list[str] = field(default_factory=list)

    def column(self, key: str | None, where: str) -> np.ndarray:
        """The spectrum of column `key` (a header name or a 1-based index among the value columns)."""
        if key is None or key == "":
            if self.values.shape[1] != 1:
                raise InputError(
                    f"{where}: holds {self.values.shape[1]} spectra; name one in the metadata's `column` "
                    f"(a header name or 1..{self.values.shape[1]})"
                )
            return self.values[:, 0]
        if self.columns.count(key) > 1:
            raise InputError(f"{where}: {self.columns.count(key)} columns named {key!r}; rename one in the file")
        if key in self.columns:
            at = self.columns.index(key)
            if key.isdigit() and 1 <= int(key) <= self.values.shape[1] and int(key) != at + 1:
                raise InputError(
                    f"{where}: column {key!r} is both the name of column {at + 1} and the index of column {key}; "
                    "rename the column in the file"
                )
            return self.values[:, at]
        if key.isdigit() and 1 <= int(key) <= self.values.shape[1]:
            return self.values[:, int(key) - 1]
        raise InputError(
            f"{where}: no spectrum column {key!r} (has {self.columns[:5]}{'...' * (len(self.columns) > 5)})"
        )


def parse_spectrum_file(data: bytes, name: str) -> Table:
    """The spectra in a file's bytes (`name` is used for its suffix and in messages)."""
    if not data.strip():
        raise InputError(f"{name}: empty file")
    lower = name.lower()
    if lower.endswith(".npy") or data[:6] == b"\x93NUMPY":
        return _npy(data, name)
    text = _decode(data, name)
    if lower.endswith(JCAMP_SUFFIXES) or text.lstrip().startswith("##"):
        return _jcamp(text, name)
    return _delimited(text, name)


def _decode(data: bytes, name: str) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its byte-order mark (some instruments' exports)
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError(f"{name}: not decodable UTF-16 text") from None
    if b"\x00" in data[:4096]:
        raise InputError(f"{name}: binary content (NUL bytes), not a text table")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# --------------------------------------------------------------------------- .npy


def _npy(data: bytes, name: str) -> Table:
    arr = parse_npy(data, name)  # no pickles; a header claiming more than the bytes hold is refused
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name}: expected a numeric .npy array")
    arr = arr.astype(np.float64)
    if arr.ndim == 1:
        from godrun.data import layout

        if arr.shape[0] != layout.GRID_POINTS:
            raise InputError(f"{name}: a 1-D .npy must have the grid's {layout.GRID_POINTS} points, has {arr.shape[0]}")
        x = np.linspace(layout.GRID_MIN_NM, layout.GRID_MAX_NM, layout.GRID_POINTS)
        return _checked(x, arr[:, None], ["value"], None, "nm", name, None)
    if arr.ndim == 2 and 2 in arr.shape:
        xy = arr if arr.shape[0] == 2 else arr.T
        return _checked(xy[0], xy[1][:, None], ["value"], None, "nm", name, None)
    raise InputError(f"{name}: .npy of shape {arr.shape}; expected [L], [2, L] or [L, 2]")


# --------------------------------------------------------------------------- JCAMP-DX


def _jcamp(text: str, name: str) -> Table:
    import contextlib

    import jcamp

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the parser prints its checks; we make our own
            d = jcamp.read(io.StringIO(re.sub(r"\$\$[^\r\n]*", "", text)))  # `$$`: a comment to the line's end
        children = d.get("children") or []
        if len(children) > 1:
            raise InputError(f"{name}: a LINK file of {len(children)} blocks; one spectrum per file (split it)")
        d = children[0] if children else d
        if "peak table" in d or "peak assignments" in d:  # sticks at peak positions: no spectrum to resample
            raise InputError(f"{name}: ##PEAK TABLE data (peak positions), not a measured spectrum (##XYDATA)")
        x = np.asarray(d["x"], dtype=np.float64)
        y = np.asarray(d["y"], dtype=np.float64)
    except InputError:
        raise
    except Exception as exc:  # the parser raises anything on a malformed file
        raise InputError(f"{name}: not a readable JCAMP-DX file ({type(exc).__name__}: {exc})") from None
    if x.size == 0 and "ntuples" in d:
        raise InputError(f"{name}: ##NTUPLES data (JCAMP-DX 5) is not read; export it as ##XYDATA")
    if x.size == 0 or x.shape != y.shape:
        raise InputError(f"{name}: JCAMP-DX data block gives {x.size} x and {y.size} y values")
    npoints = d.get("npoints")
    if isinstance(npoints, int | float) and int(npoints) != x.size:
        raise InputError(f"{name}: ##NPOINTS={int(npoints)} but the data block holds {x.size} points")
    x_unit = units.x_unit_of(str(d.get("xunits", "nm")), name)
    y_raw = d.get("yunits")
    unit = units.canonical(str(y_raw), f"{name}: ##YUNITS") if y_raw not in (None, "") else None
    return _checked(x, y[:, None], [str(d.get("title", "value"))], unit, x_unit, name, None)


# --------------------------------------------------------------------------- delimited text


def _delimited(text: str, name: str) -> Table:
    lines = text.splitlines()
    header: list[str] = []
    start = None
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith(COMMENT_PREFIXES):
            continue
        if _split_numbers(s) is not None:
            start = i
            break
        header.append(s)
    if start is None:
        raise InputError(f"{name}: no line of two or more numbers (wavelength and value columns)")
    delim, decimal_comma, ncol = _split_numbers(lines[start].strip())  # type: ignore[misc]
    stop = len(lines)
    while stop > start and not lines[stop - 1].strip():
        stop -= 1  # trailing blank lines
    kept: Sequence[int] = range(start, stop)  # a range, not a list: a large table's line numbers cost nothing
    values = _fast_parse(lines[start:stop], delim, decimal_comma, ncol)
    if values is None:  # comment or blank lines inside the data, a footer (or a malformed row): the careful path
        end = min(_data_end(lines, start), stop)
        kept = [i for i in range(start, end) if lines[i].strip() and not lines[i].lstrip().startswith(COMMENT_PREFIXES)]
        values = _fast_parse([lines[i] for i in kept], delim, decimal_comma, ncol)
    if values is None:
        _raise_bad_line(lines, kept, start, delim, ncol, name)
        values = _cell_parse(lines, kept, delim, ncol, name)
    _check_header_width(header[-1] if header else "", delim, ncol, name)
    names = _header_names(header[-1] if header else "", delim, ncol)
    x_unit = units.x_unit_of(names[0], name) if names[0] else "nm"
    unit = _unit_from_names(names[1:], name)
    if len(header) >= 2:
        names = _sample_names_above(header[-2], delim, names)
    line_no = np.asarray(kept) + 1
    same_x = [k for k in range(1, ncol) if np.array_equal(values[:, k], values[:, 0])]
    if same_x:  # x, y, x, y ... (one wavelength column per spectrum, as some instruments export): keep the y
        keep = [k for k in range(1, ncol) if k not in same_x]
        values = values[:, [0, *keep]]
        names = [names[0], *(names[k] for k in keep)]
    second_x = next((n for n in names[1:] if units.is_x_header(n)), None)
    if second_x is not None:  # x, y, x', y' with differing x axes: x' is no spectrum
        raise InputError(
            f"{name}: column {second_x!r} is a second wavelength axis that differs from the first; "
            "one wavelength column per file (or identical ones)"
        )
    return _checked(values[:, 0], values[:, 1:], names[1:], unit, x_unit, name, line_no)


def _data_end(lines: list[str], start: int) -> int:
    """One past the last line of the data block: text after the last row of numbers is a footer (instrument
    settings, an end marker) when its first line does not itself begin like a number (that is a malformed row)."""
    last = len(lines) - 1
    while last > start and _split_numbers(lines[last].strip()) is None:
        last -= 1
    after = [ln.strip() for ln in lines[last + 1 :] if ln.strip()]
    if after and re.match(r"^[+\-.,\d]", after[0]):
        return len(lines)
    return last + 1


def _cells(line: str, delim: str | None) -> list[str]:
    """A line's cells, stripped; a quoted cell may hold the delimiter ("1,234.5" in a comma-delimited file)."""
    if delim is None:
        return [c.strip('"') for c in line.split()]
    if '"' not in line:
        return [c.strip() for c in line.split(delim)]
    return [c.strip() for c in next(csv.reader([line], delimiter=delim, skipinitialspace=True), [])]


def _split_numbers(line: str) -> tuple[str | None, bool, int] | None:
    """(delimiter, decimal comma, columns) when `line` is a row of numbers, else None."""
    for delim in ("\t", ";", ",", None):
        if delim is not None and delim not in line:
            continue
        cells = _cells(line, delim)
        if cells and cells[-1] == "" and delim is not None:
            cells = cells[:-1]  # a trailing delimiter
        if len(cells) < 2:  # a lone number (a pixel count in a header) is not a data row
            continue
        if all(_NUMBER.match(c) for c in cells):
            comma = delim != "," and any("," in c for c in cells)
            return delim, comma, len(cells)
    return None


def _fast_parse(body: list[str], delim: str | None, comma: bool, ncol: int) -> np.ndarray | None:
    """All rows at once: each row must split into `ncol` cells, then one C-level conversion (no list of tokens:
    a 64 MiB table stays a few times its size in memory); None when a row is malformed."""
    if delim is None:
        if any(len(ln.split()) != ncol for ln in body):
            return None
    elif any(ln.count(delim) != ncol - 1 for ln in body) and any(
        ln.rstrip().removesuffix(delim).count(delim) != ncol - 1
        for ln in body  # a trailing delimiter is no cell
    ):
        return None
    text = "\n".join(body)
    if '"' in text:  # a quoted cell may hold the delimiter or digit groups: read cell by cell
        return None
    if "d" in text or "D" in text:
        text = _FORTRAN_EXPONENT.sub("e", text)
    if delim == "," or (delim is not None and not comma):
        text = text.replace(delim, " ")
    elif delim is not None:
        text = text.replace(delim, " ").replace(",", ".")
    elif comma:
        text = text.replace(",", ".")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a token it cannot read: ValueError (older numpy: a warning)
        try:
            values = np.fromstring(text, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    if values.size != len(body) * ncol:
        return None
    return values.reshape(len(body), ncol)


def _raise_bad_line(lines: list[str], kept: Sequence[int], start: int, delim: str | None, ncol: int, name: str) -> None:
    """Refuses the first of the data lines `kept` that is no row of `ncol` numbers split like line `start`."""
    for i in kept:
        s = lines[i].strip()
        got = _split_numbers(s)
        if got is None or got[2] != ncol or got[0] != delim:
            raise InputError(f"{name} line {i + 1}: not a row of {ncol} numbers like line {start + 1}: {s[:60]!r}")


def _cell_parse(lines: list[str], kept: Sequence[int], delim: str | None, ncol: int, name: str) -> np.ndarray:
    """The rows `kept` cell by cell: quoted cells, digit groups, one decimal mark per column (_decimal_mark)."""
    rows = []
    for i in kept:
        cells = _cells(lines[i].strip(), delim)
        rows.append(cells[:-1] if len(cells) == ncol + 1 and not cells[-1] else cells)
    bad = next((k for k, r in enumerate(rows) if len(r) != ncol), None)
    if bad is not None:
        raise InputError(f"{name} line {kept[bad] + 1}: {len(rows[bad])} cells, not {ncol} like the rows before")
    out = np.empty((len(rows), ncol))
    for j in range(ncol):
        mark = _decimal_mark([r[j] for r in rows], delim, name)
        for k, (i, cells) in enumerate(zip(kept, rows, strict=True)):
            v = _cell_value(cells[j], mark)
            if v is None:
                raise InputError(f"{name} line {i + 1}: {cells[j]!r} is not a number (decimal mark {mark!r})")
            out[k, j] = v
    return out


def _decimal_mark(cells: list[str], delim: str | None, name: str) -> str:
    """The decimal mark of a column's numbers: the later mark of a cell holding both (1,234.5 -> '.'), the other
    one of a mark repeated in a cell (1,234,567 -> '.'); else a comma when a cell has one and (in a
    comma-delimited file, where only quoted cells can hold a comma) no cell has a point. So "1,234" alone in a
    comma-delimited file is 1.234, as European exports quote decimal commas."""
    both = {c[max(c.rfind("."), c.rfind(","))] for c in cells if "." in c and "," in c}
    both |= {"." if c.count(",") > 1 else "," for c in cells if c.count(",") > 1 or c.count(".") > 1}
    if len(both) > 1:
        raise InputError(f"{name}: a column mixes the number styles '1,234.5' and '1.234,5' (one decimal mark)")
    if both:
        return both.pop()
    comma = any("," in c for c in cells)
    if delim == ",":
        return "," if comma and not any("." in c for c in cells) else "."
    return "," if comma else "."


def _cell_value(cell: str, mark: str) -> float | None:
    """One cell as a number with decimal mark `mark`; digit groups (of three) of the other mark are dropped."""
    s = _FORTRAN_EXPONENT.sub("e", cell.strip().strip('"').strip())
    group = "," if mark == "." else "."
    if group in s:
        if not re.fullmatch(rf"[+-]?\d{{1,3}}(\{group}\d{{3}})+", s.split(mark)[0].split("e")[0].split("E")[0]):
            return None
        s = s.replace(group, "")
    try:
        return float(s.replace(mark, "."))
    except ValueError:
        return None


def _header_cells(header: str, delim: str | None) -> list[str]:
    """The header's cells (quoted cells may hold the delimiter)."""
    if delim is None:
        return header.split()
    return next(csv.reader([header], delimiter=delim, skipinitialspace=True))


def _check_header_width(header: str, delim: str | None, ncol: int, name: str) -> None:
    """A header splitting into more than one cell but not into the data's column count: refused (a decimal
    comma inside a comma-delimited file reads as extra columns)."""
    if not header or delim is None:
        return
    cells = _header_cells(header, delim)
    if cells and not cells[-1].strip():
        cells = cells[:-1]
    if len(cells) > 1 and len(cells) != ncol:
        raise InputError(
            f"{name}: the header has {len(cells)} columns, the data rows {ncol} "
            "(decimal commas in a comma-delimited file? use `;` or tab between columns)"
        )


def _header_names(header: str, delim: str | None, ncol: int) -> list[str]:
    cells = [c.strip().strip('"') for c in _header_cells(header, delim)] if header else []
    if cells and not cells[-1] and len(cells) == ncol + 1:
        cells = cells[:-1]  # a trailing delimiter
    if len(cells) != ncol:
        cells = ([cells[0]] if len(cells) == 1 else []) + [""] * ncol
        cells = cells[:ncol]
    return [c if c or k == 0 else str(k) for k, c in enumerate(cells)]


def _sample_names_above(line: str, delim: str | None, names: list[str]) -> list[str]:
    """Cary-style exports: value columns whose labels repeat (`Abs`, `Abs`) under a line of sample names, each
    over its x column (`"blank","","sample A",""`), are named by the sample above their x column."""
    if delim is None or len(set(names[1:])) == len(names) - 1:
        return names
    above = [c.strip().strip('"') for c in _header_cells(line, delim)]
    if len(above) == len(names) + 1 and not above[-1]:
        above = above[:-1]
    if len(above) != len(names):
        return names
    return [names[0], *(above[k - 1] if not above[k] and above[k - 1] else names[k] for k in range(1, len(names)))]


def _unit_from_names(names: list[str], name: str) -> str | None:
    """The unit the value columns' headers state. In a many-column table the headers are mostly sample names,
    so a one-letter header (`A`, `T`, `R`) counts as a unit only in a two-column file, or beside a column that
    states a unit (then a different one is refused)."""
    cells = names if len(names) == 1 else [n for n in names if len(n.strip().strip('"')) > 1]
    found = {units.unit_in_header(n) for n in cells} - {None}
    if found:  # a column stating a unit: a one-letter header naming another one is no sample name
        found |= {units.unit_in_header(n) for n in names} - {None}
    if len(found) > 1:
        raise InputError(f"{name}: its columns state different units {sorted(found)}")  # type: ignore[type-var]
    return found.pop() if found else None


# --------------------------------------------------------------------------- checks


def _checked(
    x: np.ndarray, y: np.ndarray, names: list[str], unit: str | None, x_unit: str, name: str, lines: np.ndarray | None
) -> Table:
    """x converted to nm, made increasing; refuses non-finite, repeated or non-monotonic wavelengths."""
    line_of = np.arange(1, x.size + 1) if lines is None else lines
    kind = "point" if lines is None else "line"

    def line(k: int) -> str:
        return f" {kind} {int(line_of[k])}"

    bad_x = np.flatnonzero(~np.isfinite(x))
    if bad_x.size:
        raise InputError(f"{name}{line(int(bad_x[0]))}: wavelength is not a finite number")
    bad_y = np.argwhere(~np.isfinite(y))
    if bad_y.size:
        r, c = bad_y[0]
        raise InputError(f"{name}{line(int(r))}: value of column {names[c]!r} is NaN or infinite")
    if x.size < 2:
        raise InputError(f"{name}: {x.size} point(s), too few for a spectrum")
    x_nm = units.to_nm(x, x_unit, name)
    d = np.diff(x_nm)
    if np.all(d <= 0) and np.any(d < 0):
        x_nm, y, d, line_of = x_nm[::-1], y[::-1], -d[::-1], line_of[::-1]
    dup = np.flatnonzero(d == 0)
    if dup.size:  # a row written twice is one measurement; the same wavelength with other values is refused
        differ = dup[np.any(y[dup] != y[dup + 1], axis=1)]
        if differ.size:
            k = int(differ[0])
            raise InputError(
                f"{name}{line(k + 1)}: wavelength {x_nm[k]:g} nm repeated with other values than at{line(k)} "
                "(one value per wavelength)"
            )
        keep = np.ones(x_nm.size, dtype=bool)
        keep[dup + 1] = False
        x_nm, y, line_of = x_nm[keep], y[keep], line_of[keep]
        d = np.diff(x_nm)
        if x_nm.size < 2:
            raise InputError(f"{name}: {x_nm.size} distinct wavelength(s), too few for a spectrum")
    back = np.flatnonzero(d < 0)
    if back.size:
        k = int(back[0]) + 1
        raise InputError(f"{name}{line(k)}: wavelengths not monotonic ({x_nm[k - 1]:g} then {x_nm[k]:g} nm)")
    return Table(np.ascontiguousarray(x_nm), np.ascontiguousarray(y), names, unit, x_unit)
