"""Second round of attacks on `godrun data import`: digit groups, Fortran exponents, repeated wavelengths, macOS's
own files among the spectra, and what red-teaming found after. Bad input: exit 2 naming the file and line,
nothing left beside OUT."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_data_import_attacks import X, _dataset, _import, _refused

from godrun.data.spectra_io import parse_spectrum_file
from godrun.errors import InputError


def _table(rows: list[str], head: str = "nm,Abs") -> np.ndarray:
    t = parse_spectrum_file((head + "\n" + "\n".join(rows) + "\n").encode(), "f.csv")
    assert t.values.shape == (len(X), 1), t.values.shape  # one spectrum, not a column per digit group
    return t.values[:, 0]


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ('"1,234.5"', 1234.5),  # comma-delimited, thousands comma in a quoted cell
        ('"1.234,5"', 1234.5),  # European: thousands point, decimal comma
        ('"0,5"', 0.5),  # decimal comma, quoted (no point anywhere)
        ('"12,345,678.25"', 12345678.25),
    ],
)
def test_quoted_numbers_with_digit_groups_in_a_comma_delimited_file(cell, value):
    np.testing.assert_array_equal(_table([f'"{a}",{cell}' for a in X]), np.full(len(X), value))


@pytest.mark.parametrize(("sep", "cell"), [(";", "1.234,5"), ("\t", "1,234.5"), (";", '"1.234,5"')])
def test_digit_groups_with_other_delimiters(sep, cell):
    rows = [f"{a}{sep}{cell}" for a in X]
    np.testing.assert_array_equal(_table(rows, f"nm{sep}Abs"), np.full(len(X), 1234.5))


def test_misplaced_digit_groups_are_refused_naming_the_line():
    rows = [f'"{a}","1,234.5"' for a in X]
    rows[10] = f'"{X[10]}","12,34.5"'
    with pytest.raises(InputError, match=r"f\.csv line 12: .*12,34\.5"):
        _table(rows)


def test_fortran_d_exponents_are_read():
    np.testing.assert_allclose(_table([f"{int(a)}.0D+00,1.5D-03" for a in X]), 1.5e-3)
    np.testing.assert_allclose(_table([f'"{a}","2.0d-01"' for a in X]), 0.2)


def test_a_row_written_twice_counts_once_and_a_repeated_wavelength_with_other_values_is_refused():
    rows = [f"{a},{a / 1000:.3f}" for a in X]
    twice = [*rows[:100], rows[99], *rows[100:]]
    t = parse_spectrum_file(("nm,Abs\n" + "\n".join(twice)).encode(), "f.csv")
    np.testing.assert_array_equal(t.wavelengths, X)
    other = [*rows[:100], f"{X[99]},9.0", *rows[100:]]
    with pytest.raises(
        InputError, match=r"f\.csv line 102: wavelength 294 nm repeated with other values than at line 101"
    ):
        parse_spectrum_file(("nm,Abs\n" + "\n".join(other)).encode(), "f.csv")


def test_a_decreasing_axis_with_a_row_written_twice_is_reversed_and_read():
    rows = [f"{a},{a / 1000:.3f}" for a in X[::-1]]
    t = parse_spectrum_file(("nm,Abs\n" + "\n".join([*rows[:5], rows[4], *rows[5:]])).encode(), "f.csv")
    np.testing.assert_array_equal(t.wavelengths, X)
    np.testing.assert_allclose(t.values[:, 0], X / 1000)


def test_a_spectrum_of_quoted_cells_imports(tmp_path):
    sp, meta = _dataset(tmp_path)
    plain = sp / "g1_0.csv"
    rows = plain.read_text().splitlines()
    (sp / "g1_0.csv").write_text("nm,Abs\n" + "\n".join(f'"{r.split(",")[0]}","{r.split(",")[1]}"' for r in rows[1:]))
    assert _import(sp, meta, tmp_path / "OUT") == 0


# --------------------------------------------------------------------------- macOS's files


def _apple_double(sp):
    (sp / "._g1_0.csv").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (sp / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (sp / "__MACOSX").mkdir()
    (sp / "__MACOSX" / "._g2_0.csv").write_bytes(b"\x00\x05\x16\x07")


def test_macos_appledouble_and_ds_store_files_among_the_spectra_are_skipped(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    _apple_double(sp)
    assert _import(sp, meta, tmp_path / "OUT") == 0, capsys.readouterr().err


@pytest.mark.parametrize("named", ["._g1_0.csv", ".DS_Store", "__MACOSX/._g2_0.csv"])
def test_a_metadata_row_naming_a_macos_file_is_refused_clearly(tmp_path, capsys, named):
    sp, meta = _dataset(tmp_path)
    _apple_double(sp)
    meta.write_text(meta.read_text() + f"{named},g1,7\n")
    _refused(tmp_path, sp, meta, capsys, "line 8", repr(named), "macOS metadata file")
    assert not os.path.exists(tmp_path / "OUT")


# --------------------------------------------------------------------------- the output folder


@pytest.mark.parametrize(
    ("out", "needle"),
    [
        ("afile/OUT", "afile is not a folder"),  # a parent that is a file
        ("x" * 300, "--out"),  # a name longer than the file system allows
        ("/proc/godrun-import-test", "--out /proc/godrun-import-test"),  # a place nothing can be made in
    ],
)
def test_an_out_that_cannot_be_made_is_bad_input_not_a_traceback(tmp_path, capsys, out, needle):
    sp, meta = _dataset(tmp_path)
    (tmp_path / "afile").write_text("")
    before = sorted(os.listdir(tmp_path))
    assert _import(sp, meta, tmp_path / out) == 2
    assert needle in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == before


# --------------------------------------------------------------------------- one measurement twice


@pytest.mark.parametrize("row", ["./g1_0.csv,g1,2", "copy.csv,g1,2", "./g1_0.csv,g3,2"])
def test_one_measurement_imported_twice_is_refused_naming_both_lines(tmp_path, capsys, row):
    """Under another spelling or as a copy, in the same sample (a Noise2Noise pair of a spectrum with itself)
    or in the panel (leakage)."""
    sp, meta = _dataset(tmp_path)
    (sp / "copy.csv").write_bytes((sp / "g1_0.csv").read_bytes())
    meta.write_text(meta.read_text() + row + "\n")
    _refused(tmp_path, sp, meta, capsys, "line 8", "same spectrum as line 2", "imported twice")


def test_a_row_with_a_cell_too_many_and_one_with_a_cell_too_few_are_refused_not_realigned():
    """The cells were counted over the whole table: a row one short and a later one one long read as a shifted
    table (or a misleading 'wavelength repeated')."""
    for sep, name in ((",", "f.csv"), (" ", "f.txt")):
        rows = [f"{a}{sep}0.5{sep}0.6" for a in X]
        rows[10], rows[20] = f"{X[10]}{sep}0.5{sep}0.6{sep}0.7", f"{X[20]}{sep}0.5"
        with pytest.raises(InputError, match=rf"{name} line 12: not a row of 3 numbers"):
            parse_spectrum_file(("nm A B\n".replace(" ", sep) + "\n".join(rows)).encode(), name)
