"""Attacks on `godrun data import` found by red-teaming: each exits 2 naming the file/line, nothing left in OUT."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from godrun.cli import main as godrun_main
from godrun.data.spectra_io import parse_spectrum_file
from godrun.errors import InputError

X = np.arange(195.0, 806.0, 1.0)


def _dataset(tmp_path: Path, groups=("g1", "g2", "g3"), reps: int = 2) -> tuple[Path, Path]:
    sp = tmp_path / "sp"
    sp.mkdir()
    rng = np.random.default_rng(0)
    rows = ["file,group_id,replicate"]
    for g in groups:
        for r in range(reps):
            body = "\n".join(f"{a},{0.5 + 0.01 * rng.standard_normal():.5f}" for a in X)
            (sp / f"{g}_{r}.csv").write_text(f"nm,Abs\n{body}\n")
            rows.append(f"{g}_{r}.csv,{g},{r}")
    meta = tmp_path / "META.csv"
    meta.write_text("\n".join(rows) + "\n")
    return sp, meta


def _import(sp: Path, meta: Path, out: Path, *extra: str) -> int:
    args = ["data", "import", str(sp), "--metadata", str(meta), "--out", str(out)]
    args += ["--panel-group", "g3", "--references", "replicate-mean", *extra]
    return godrun_main(args)


def _refused(tmp_path: Path, sp: Path, meta: Path, capsys, *needles: str, out: Path | None = None) -> None:
    out = out or tmp_path / "OUT"
    before = set(os.listdir(out.parent))
    assert _import(sp, meta, out) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert set(os.listdir(out.parent)) == before  # neither OUT nor its temp folder


def test_the_attack_fixture_imports(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    assert _import(sp, meta, tmp_path / "OUT") == 0


@pytest.mark.parametrize("cell", ["inf", "-inf", "nan", "1e30"])
def test_replicate_not_a_finite_small_integer_is_refused_naming_the_line(tmp_path, capsys, cell):
    sp, meta = _dataset(tmp_path)
    meta.write_text(meta.read_text().replace("g1_1.csv,g1,1", f"g1_1.csv,g1,{cell}"))
    _refused(tmp_path, sp, meta, capsys, "line 3", "replicate")


def test_duplicate_metadata_column_is_refused(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([lines[0] + ",group_id"] + [ln + ",other" for ln in lines[1:]]) + "\n")
    _refused(tmp_path, sp, meta, capsys, "duplicate column", "group_id")


def test_metadata_row_with_more_cells_than_the_header_is_refused_naming_its_line(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    meta.write_text(meta.read_text().replace("g1_0.csv,g1,0", "g1_0.csv,g1,0,extra,more"))
    _refused(tmp_path, sp, meta, capsys, "line 2", "5 cells")


def test_metadata_line_numbers_count_quoted_newlines(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    lines = meta.read_text().splitlines()
    rows = [lines[0] + ",sample"] + [ln + ',"a\nb"' if i == 0 else ln + ",s" for i, ln in enumerate(lines[1:])]
    meta.write_text("\n".join(rows).replace("g1_1.csv,g1,1", "g1_1.csv,g1,x") + "\n")
    _refused(tmp_path, sp, meta, capsys, "line 4", "replicate 'x'")  # the quoted newline makes row 2 two lines


def test_out_inside_the_spectra_folder_is_refused(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    _refused(tmp_path, sp, meta, capsys, "inside SPECTRA_DIR", out=sp / "OUT")


def test_a_second_wavelength_column_that_differs_is_not_read_as_a_spectrum():
    text = "nm,A,nm,B\n" + "\n".join(f"{a},1,{a + 0.5},2" for a in X)
    with pytest.raises(InputError, match=r"f\.csv.*column 'nm'.*wavelength"):
        parse_spectrum_file(text.encode(), "f.csv")


def test_percent_values_declared_as_transmittance_are_refused_not_made_negative_absorbance(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    for f in sp.iterdir():  # 50.x %T values under a `T` (fraction) header
        f.write_text(f.read_text().replace("nm,Abs", "nm,T").replace(",0.", ",50."))
    out = tmp_path / "OUT"
    assert _import(sp, meta, out, "--to-unit", "absorbance") == 2
    err = capsys.readouterr().err
    assert "g1_0.csv" in err and "transmittance 50" in err and "%T" in err, err
    assert sorted(os.listdir(tmp_path)) == ["META.csv", "sp"]


def _jdx(body: str, extra: str = "") -> bytes:
    head = "##TITLE=t\n##JCAMP-DX=4.24\n##DATA TYPE=UV/VIS SPECTRUM\n##XUNITS=NANOMETERS\n##YUNITS=ABSORBANCE\n"
    return (head + extra + body + "\n##END=\n").encode()


def test_jcamp_peak_table_is_refused_not_interpolated_as_a_spectrum():
    body = "##NPOINTS=13\n##PEAK TABLE=(XY..XY)\n" + " ".join(f"{a},0.5" for a in range(200, 801, 50))
    with pytest.raises(InputError, match=r"p\.jdx: .*PEAK TABLE"):
        parse_spectrum_file(_jdx(body), "p.jdx")


def test_jcamp_link_file_of_several_blocks_is_refused_saying_so():
    block = _jdx(
        "##FIRSTX=200\n##LASTX=800\n##DELTAX=1\n##NPOINTS=601\n##XYDATA=(X++(Y..Y))\n"
        + "\n".join(f"{a} {a}" for a in range(200, 801))
    ).decode()
    link = "##TITLE=link\n##JCAMP-DX=5.00\n##DATA TYPE=LINK\n##BLOCKS=2\n" + block + block + "##END=\n"
    with pytest.raises(InputError, match=r"l\.jdx: .*2 blocks"):
        parse_spectrum_file(link.encode(), "l.jdx")


@pytest.mark.parametrize(
    ("header", "key", "needle"),
    [
        ("nm,s1,s1", "s1", "2 columns named 's1'"),  # the metadata's name picks no one column
        ("nm,2,,s3", "2", "2 columns named '2'"),  # an unnamed column is called by its index: the same name
        ("nm,3,2,1", "1", "both the name of column 3 and the index of column 1"),
    ],
)
def test_a_column_key_that_names_two_columns_is_refused(header, key, needle):
    text = header + "\n" + "\n".join(",".join([f"{a}", *(str(k) for k in range(1, header.count(",") + 1))]) for a in X)
    table = parse_spectrum_file(text.encode(), "f.csv")
    with pytest.raises(InputError, match=needle):
        table.column(key, "META line 2: file f.csv")


def test_an_infinite_film_feature_is_refused_naming_its_line(tmp_path, capsys):
    from godrun.data import layout

    sp, meta = _dataset(tmp_path)
    lines = meta.read_text().splitlines()
    rows = [lines[0] + "," + ",".join(layout.DOSE_FEATURE_COLUMNS)]
    for ln in lines[1:]:
        first = "inf" if ln.startswith("g2_") else "1.0"
        rows.append(ln + "," + ",".join([first] + ["1.0"] * (len(layout.DOSE_FEATURE_COLUMNS) - 1)))
    meta.write_text("\n".join(rows) + "\n")
    _refused(tmp_path, sp, meta, capsys, "line 4", layout.DOSE_FEATURE_COLUMNS[0], "not a finite number")


def test_a_refused_import_leaves_no_parent_folders_it_made_for_out(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    (sp / "g1_0.csv").write_text("not a spectrum\n")
    assert _import(sp, meta, tmp_path / "new" / "deeper" / "OUT") == 2
    assert "g1_0.csv" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["META.csv", "sp"]


@pytest.mark.parametrize("ref", ["g1_0.csv", "self"])
def test_a_panel_reference_that_is_one_of_the_imported_spectra_is_refused(tmp_path, capsys, ref):
    """A training spectrum as a panel target is leakage; the panel spectrum itself as its target makes the raw
    input a perfect prediction. Both are measured spectra, not references."""
    sp, meta = _dataset(tmp_path)
    lines = meta.read_text().splitlines()
    rows = [lines[0] + ",reference_file"]
    for ln in lines[1:]:
        name = ln.split(",")[0]
        rows.append(ln + "," + ((name if ref == "self" else ref) if ln.startswith("g3") else ""))
    meta.write_text("\n".join(rows) + "\n")
    _refused(tmp_path, sp, meta, capsys, "line 6", "same spectrum as")


def test_a_cary_multi_sample_export_names_its_spectra_by_the_sample_line():
    """Cary-style: a line of sample names (each over its x column) above `Wavelength (nm),Abs` repeated."""
    head = '"blank","","sample A",""\n"Wavelength (nm)","Abs","Wavelength (nm)","Abs"\n'
    text = head + "\n".join(f"{a},0.5,{a},0.6" for a in X) + "\n\nMethod\nCollection Time: 1/1/2026\n"
    table = parse_spectrum_file(text.encode(), "cary.csv")
    assert table.columns == ["blank", "sample A"] and table.unit == "absorbance"
    np.testing.assert_array_equal(table.column("sample A", "META"), np.full(X.size, 0.6))


def test_a_spectrum_sampled_more_coarsely_than_max_gap_is_refused_not_drawn_as_a_line():
    from godrun.data.resample import MAX_GAP_NM, resample

    grid = np.linspace(200.0, 800.0, 601)
    with pytest.raises(InputError, match=r"two\.npy: .*gap of 600 nm"):
        resample(np.array([200.0, 800.0]), np.array([1.0, 2.0]), grid, "two.npy")
    x = np.concatenate([np.arange(190.0, 400.0), np.arange(400.0 + MAX_GAP_NM + 1, 811.0)])  # one hole in the grid
    with pytest.raises(InputError, match=r"hole\.csv: .*399-411 nm"):
        resample(x, np.ones_like(x), grid, "hole.csv")
    x = np.arange(150.0, 811.0, MAX_GAP_NM)  # coarse but within the limit: interpolated
    assert np.isfinite(resample(x, np.ones_like(x), grid, "coarse.csv")).all()


# --------------------------------------------------------------------------- adopt


@pytest.fixture(scope="module")
def seed_layout(tmp_path_factory) -> Path:
    """A synthetic seed-layout dataset with its panel (built once; each test copies it)."""
    root = tmp_path_factory.mktemp("seed") / "X"
    assert godrun_main(["data", "synth", "--scale", "0.02", "--out", str(root)]) == 0
    assert godrun_main(["data", "panel", "--root", str(root)]) == 0
    return root


@pytest.mark.parametrize("hashes", ["{nope", "[1, 2]"])
def test_adopt_with_a_bad_manifest_hashes_file_writes_nothing(tmp_path, capsys, seed_layout, hashes):
    import shutil

    import pandas as pd

    root = tmp_path / "X"
    shutil.copytree(seed_layout, root)
    for rel in ("data/spectra_for_fold/manifest_all.csv", "data/validation_panel.csv"):
        df = pd.read_csv(root / rel, dtype=str, keep_default_na=False)
        df.drop(columns=["content_sha256", "reference_sha256"]).to_csv(root / rel, index=False)
    (root / "data/manifest_hashes.json").write_text(hashes)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert godrun_main(["data", "adopt", str(root)]) == 2
    assert "manifest_hashes.json" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_the_metadata_table_may_live_in_the_spectra_folder(tmp_path):
    sp, meta = _dataset(tmp_path)
    inside = meta.rename(sp / "META.csv")
    assert _import(sp, inside, tmp_path / "OUT") == 0


def test_semicolon_metadata_whose_header_holds_a_comma_is_read_by_its_semicolons(tmp_path):
    sp, meta = _dataset(tmp_path)
    lines = meta.read_text().replace(",", ";").splitlines()
    meta.write_text("\n".join([lines[0] + ";note, free text"] + [ln + ";a, b" for ln in lines[1:]]) + "\n")
    assert _import(sp, meta, tmp_path / "OUT") == 0


@pytest.mark.parametrize(("start", "stop"), [(200.0, 800.0), (190.0, 810.0), (300.0, 800.0)])
def test_a_measurement_sampled_on_the_grid_points_is_taken_as_is_not_smoothed(start, stop):
    """Averaging the interpolant over 1 nm bins centred on 1 nm samples is a [1/8, 3/4, 1/8] filter: it cut
    white noise's std by 23 % and correlated neighbours before the denoiser saw the data."""
    from godrun.data.resample import resample

    grid = np.linspace(200.0, 800.0, 601)
    x = np.arange(start, stop + 0.5, 1.0) * 1000.0 / 1000.0
    y = np.random.default_rng(3).standard_normal(x.size)
    got = resample(x, y, grid, "on-grid.csv", fill="edge")
    inside = (x >= 200.0) & (x <= 800.0)
    np.testing.assert_array_equal(got[np.isin(grid, x)], y[inside])
    np.testing.assert_array_equal(got[grid < start], np.full(int((grid < start).sum()), y[0]))  # edge fill


def test_adopting_twice_changes_nothing_the_second_time_and_keeps_the_audit(tmp_path, seed_layout):
    import shutil

    import pandas as pd

    root = tmp_path / "X"
    shutil.copytree(seed_layout, root)
    rel = "data/spectra_for_fold/manifest_all.csv"
    df = pd.read_csv(root / rel, dtype=str, keep_default_na=False)
    df.drop(columns=["content_sha256", "reference_sha256"]).to_csv(root / rel, index=False)
    assert godrun_main(["data", "adopt", str(root)]) == 0
    audit = (root / "data/adopt_audit.md").read_text()
    assert "manifest_all.csv`: " in audit and " 0 hash cells added" not in audit.split("manifest_all.csv`")[1][:40]
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    assert godrun_main(["data", "adopt", str(root)]) == 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()} == files


def test_a_metadata_column_named_meta_line_is_refused_not_a_crash(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([lines[0] + ",meta_line"] + [ln + ",7" for ln in lines[1:]]) + "\n")
    _refused(tmp_path, sp, meta, capsys, "line 1", "meta_line", "reserved")


def test_jcamp_comments_on_data_lines_are_comments():
    """`$$` starts a comment anywhere in a JCAMP-DX line, data lines included (the parser failed on them)."""
    body = "##FIRSTX=200\n##LASTX=800\n##NPOINTS=601\n##XYDATA=(X++(Y..Y))\n"
    body += "\n".join(f"{a} {a - 100} $$ checked" for a in range(200, 801))
    table = parse_spectrum_file(_jdx(body, extra="##YFACTOR=0.001\n"), "c.jdx")
    np.testing.assert_allclose(table.values[:, 0], (np.arange(200, 801) - 100) * 0.001)


def test_metadata_saved_as_excel_unicode_text_utf16_tabs_is_read(tmp_path):
    sp, meta = _dataset(tmp_path)
    meta.write_bytes(meta.read_text().replace(",", "\t").replace("\n", "\r\n").encode("utf-16"))  # BOM + UTF-16LE
    assert _import(sp, meta, tmp_path / "OUT") == 0


def test_a_value_beyond_float32_is_refused_naming_the_source_file_and_line(tmp_path, capsys):
    sp, meta = _dataset(tmp_path)
    lines = (sp / "g2_1.csv").read_text().splitlines()
    lines[50] = lines[50].split(",")[0] + ",1e40"  # finite as read; inf once stored as the layout's float32
    (sp / "g2_1.csv").write_text("\n".join(lines) + "\n")
    _refused(tmp_path, sp, meta, capsys, "META.csv line 5: file g2_1.csv", "float32")  # not the temp's .npy


def test_a_one_letter_unit_header_beside_a_column_stating_another_unit_is_refused():
    """`nm,A,%T`: the %T column's unit was applied to the absorbance column too."""
    text = "nm,A,%T\n" + "\n".join(f"{a},0.5,50" for a in X)
    with pytest.raises(InputError, match=r"f\.csv: its columns state different units"):
        parse_spectrum_file(text.encode(), "f.csv")
    samples = "nm,A,B,C\n" + "\n".join(f"{a},1,2,3" for a in X)  # sample names A, B, C: no unit stated
    assert parse_spectrum_file(samples.encode(), "g.csv").unit is None


@pytest.mark.parametrize("column", ["group_id", "sample"])
def test_control_characters_in_an_identifier_column_are_refused(tmp_path, capsys, column):
    """A quoted newline in a group_id went into every manifest, summary and label."""
    sp, meta = _dataset(tmp_path)
    lines = meta.read_text().splitlines()
    rows = [lines[0] + ",sample"] + [ln + ",s" for ln in lines[1:]]
    bad = '"g\n1"'
    rows[1] = rows[1].replace(",g1,", f",{bad},") if column == "group_id" else rows[1][:-2] + "," + bad
    meta.write_text("\n".join(rows) + "\n")
    _refused(tmp_path, sp, meta, capsys, "line 2", f"{column} has control characters")
