"""`godrun data import`: readers, units, resampling on analytic spectra, pairs, references, atomic refusal."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from godrun.cli import main as godrun_main
from godrun.data import layout
from godrun.data.resample import resample
from godrun.data.spectra_io import parse_spectrum_file
from godrun.errors import InputError

GRID = np.linspace(200.0, 800.0, 601)


def _gauss(x: np.ndarray, c: float, fwhm: float, a: float) -> np.ndarray:
    return a * np.exp(-0.5 * ((x - c) / (fwhm / 2.3548)) ** 2)


def _shape(x: np.ndarray) -> np.ndarray:
    return 0.6 + 0.1 * (x - 500) / 300 - _gauss(x, 420, 18, 0.08) - _gauss(x, 360, 9, 0.05)


# --------------------------------------------------------------------------- resampling


def _bin_means(f, grid: np.ndarray) -> np.ndarray:
    """Direct numerical bin means of f over the grid's bins (fine midpoint rule): the independent reference."""
    edges = np.concatenate([[grid[0] - 0.5], (grid[1:] + grid[:-1]) / 2, [grid[-1] + 0.5]])
    out = []
    for a, b in itertools.pairwise(edges):
        t = np.linspace(a, b, 401)
        out.append(np.trapezoid(f(t), t) / (b - a))
    return np.array(out)


def test_resample_finer_source_is_the_bin_mean_and_keeps_band_integrals():
    x = np.linspace(190.0, 810.0, 6201)  # 0.1 nm: finer than the grid
    got = resample(x, _shape(x), GRID, "analytic")
    np.testing.assert_allclose(got, _bin_means(_shape, GRID), atol=1e-5)  # linear-interpolant error at 0.1 nm
    band = (GRID >= 340) & (GRID <= 440)  # the dip band's integral, grid vs the analytic function
    t = np.linspace(339.5, 440.5, 20001)
    np.testing.assert_allclose(got[band].sum() * 1.0, np.trapezoid(_shape(t), t), rtol=1e-5)


def test_resample_finer_noise_is_averaged_not_picked():
    rng = np.random.default_rng(0)
    x = np.linspace(200.0, 800.0, 12001)  # 0.05 nm, 20 points per bin
    noise = 0.01 * rng.standard_normal(x.size)
    got = resample(x, _shape(x) + noise, GRID, "noisy")
    picked = np.interp(GRID, x, _shape(x) + noise) - _shape(GRID)
    assert np.std(got - _bin_means(_shape, GRID)) < 0.4 * np.std(picked)


def test_resample_coarser_source_interpolates():
    x = np.arange(195.0, 806.0, 5.0)  # 5 nm: coarser than the grid
    y = 0.3 + 0.001 * x  # linear: interpolation and bin means are exact
    np.testing.assert_allclose(resample(x, y, GRID, "coarse"), 0.3 + 0.001 * GRID, atol=1e-12)
    smooth = resample(x, _shape(x), GRID, "coarse")
    np.testing.assert_allclose(smooth, np.interp(GRID, x, _shape(x)), atol=2e-3)


def test_resample_refuses_partial_range_unless_filled():
    x = np.linspace(300.0, 800.0, 501)
    with pytest.raises(InputError, match=r"part.csv: measured 300-800 nm does not cover the grid 200-800 nm"):
        resample(x, _shape(x), GRID, "part.csv")
    filled = resample(x, _shape(x), GRID, "part.csv", fill="edge")
    assert np.all(filled[GRID < 300] == pytest.approx(_shape(np.array([300.0]))[0]))


# --------------------------------------------------------------------------- readers


def _csv(rows: list[str], sep: str = ",") -> bytes:
    return ("\n".join(rows) + "\n").encode()


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("Wavelength (nm),Absorbance\n" + "".join(f"{w},{0.5 + w / 1e4}\n" for w in range(190, 811)), "absorbance"),
        ("# exported\n\nnm;A\n" + "".join(f"{w},0;{0.5 + w / 1e4:.4f}\n".replace(".", ",") for w in range(190, 811)),
         "absorbance"),
        ("\ufeffwl\tT\r\n" + "".join(f"{w}\t{0.5 + w / 1e4}\r\n" for w in range(190, 811)), "transmittance"),
        ("".join(f"  {w}   {0.5 + w / 1e4}\n" for w in range(190, 811)), None),
    ],
    ids=["comma-header", "semicolon-decimal-comma", "tab-bom-crlf", "whitespace-no-header"],
)  # fmt: skip
def test_delimited_variants_read_the_same_spectrum(text: str, unit: str | None):
    t = parse_spectrum_file(text.encode("utf-8"), "f.csv")
    assert t.unit == unit and t.values.shape == (621, 1)
    np.testing.assert_allclose(t.values[:, 0], 0.5 + t.wavelengths / 1e4, atol=1e-4)
    assert t.wavelengths[0] == 190 and t.wavelengths[-1] == 810


def test_utf16_and_quoted_numbers_read():
    text = "wl\tA\r\n" + "".join(f"{w}\t0,{w}\r\n" for w in range(190, 811))
    t = parse_spectrum_file(text.encode("utf-16"), "u16.txt")
    assert t.unit == "absorbance" and t.values[0, 0] == pytest.approx(0.19)
    quoted = '"wl","A"\n' + "".join(f'"{w}","0.5"\n' for w in range(190, 811))
    assert parse_spectrum_file(quoted.encode(), "q.csv").values.shape == (621, 1)


def test_instrument_headers_footers_and_xy_pairs():
    rows = "".join(f"{w}.00,{0.5 + w / 1e4:.4f},{w}.00,{0.6:.4f},\n" for w in range(190, 811))
    cary = "Baseline,,Sample1,,\nWavelength (nm),Abs,Wavelength (nm),Abs,\n" + rows + "\nMethod Log\nScan rate,600\n"
    t = parse_spectrum_file(cary.encode(), "cary.csv")
    assert t.values.shape == (621, 2) and t.unit == "absorbance" and t.values[0, 1] == 0.6
    ocean = "SpectraSuite Data File\nIntegration Time (usec): 100000\nNumber of Pixels in Spectrum: 2048\n2048\n"
    ocean += ">>>>>Begin Spectral Data<<<<<\n" + "".join(f"{w}.5\t{w * 2}\n" for w in range(190, 811))
    ocean += ">>>>>End Spectral Data<<<<<\n"
    t = parse_spectrum_file(ocean.encode(), "ocean.txt")
    assert t.values.shape == (621, 1) and t.wavelengths[0] == 190.5
    with pytest.raises(InputError, match="line 5: not a row of 2 numbers"):
        parse_spectrum_file(b"wl,A\n200,1\n201,1\n202,1\n203,x\n", "bad.csv")


def test_wavenumber_and_micrometre_axes_become_nm_and_descending_is_reversed():
    wn = np.linspace(50000.0, 12000.0, 800)  # 200-833 nm, descending in nm after 1e7/x? ascending in cm-1 reversed
    text = "Wavenumber (cm-1),Abs\n" + "".join(f"{k},{0.1}\n" for k in wn)
    t = parse_spectrum_file(text.encode(), "ir.csv")
    assert t.x_unit == "cm-1" and np.all(np.diff(t.wavelengths) > 0)
    np.testing.assert_allclose(t.wavelengths[[0, -1]], [200.0, 1e7 / 12000.0])
    um = "Wavelength (um),Abs\n" + "".join(f"{w / 1000},{0.1}\n" for w in range(810, 189, -1))
    t = parse_spectrum_file(um.encode(), "um.csv")
    np.testing.assert_allclose(t.wavelengths[[0, -1]], [190.0, 810.0])


def test_many_column_table_selects_a_column_by_name_or_index():
    text = "Wavelength,a,b\n" + "".join(f"{w},{w + 1},{-w}\n" for w in range(190, 811))
    t = parse_spectrum_file(text.encode(), "m.csv")
    assert t.column("b", "w")[0] == -190 and t.column("1", "w")[0] == 191
    assert t.unit is None  # sample names, not units; ("A" and "T" would be too)
    with pytest.raises(InputError, match="holds 2 spectra"):
        t.column(None, "m.csv")


def _jdx(yfactor: float = 0.001, xunits: str = "NANOMETERS", yunits: str = "ABSORBANCE") -> str:
    ys = [round((0.5 + w / 1e4) / yfactor) for w in range(190, 811)]
    lines = ["##TITLE=t", "##JCAMP-DX=4.24", f"##XUNITS={xunits}", f"##YUNITS={yunits}", "##XFACTOR=1"]
    lines += [f"##YFACTOR={yfactor}", "##FIRSTX=190", "##LASTX=810", "##NPOINTS=621", "##XYDATA=(X++(Y..Y))"]
    lines += [f"{190 + k} " + " ".join(map(str, ys[k : k + 8])) for k in range(0, 621, 8)]
    return "\n".join([*lines, "##END="]) + "\n"


def test_jcamp_honours_yfactor_and_units():
    t = parse_spectrum_file(_jdx().encode(), "s.jdx")
    assert t.unit == "absorbance" and t.values.shape == (621, 1)
    np.testing.assert_allclose(t.values[:, 0], 0.5 + t.wavelengths / 1e4, atol=1e-3)
    t2 = parse_spectrum_file(_jdx(yfactor=0.0001, yunits="TRANSMITTANCE").encode(), "s.dx")
    assert t2.unit == "transmittance"
    np.testing.assert_allclose(t2.values[:, 0], 0.5 + t2.wavelengths / 1e4, atol=1e-4)
    with pytest.raises(InputError, match="unknown unit 'FURLONGS'"):
        parse_spectrum_file(_jdx(yunits="FURLONGS").encode(), "s.jdx")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty file"),
        (b"wl,A\n200,0.1\n201,nan\n202,0.1\n", "line 3: value of column 'A' is NaN"),
        (b"wl,A\n200,0.1\n202,0.1\n201,0.1\n", "line 4: wavelengths not monotonic"),
        (b"wl,A\n200,0.1\n201,0.1\n201,0.2\n", "line 4: wavelength 201 nm repeated"),
        (b"wl,A\n200,0.1\n201,0.1,7\n", "line 3: not a row of 2 numbers"),
        (b"wl,A\nx,y\n", "no line of two or more numbers"),
        (b"\x00\x01\x02garbage", "binary content"),
        (b"##TITLE=x\n##XYDATA=(X++(Y..Y))\n1 2 3\n", "JCAMP-DX"),
        (b"wl,A\n200,5,0,1\n201,5,0,1\n", "the header has 2 columns, the data rows 4"),
        (b"wl,A\n200,0.1\n201,inf\n", "line 3: value of column 'A' is NaN or infinite"),
    ],
    ids=[
        "empty",
        "nan",
        "non-monotonic",
        "duplicate",
        "ragged",
        "no-numbers",
        "binary",
        "jcamp-broken",
        "decimal-comma-in-csv",
        "inf",
    ],
)
def test_bad_files_are_refused_naming_the_line(data: bytes, match: str):
    with pytest.raises(InputError, match=match):
        parse_spectrum_file(data, "bad.csv" if not data.startswith(b"##") else "bad.jdx")


# --------------------------------------------------------------------------- the command


def _dataset(folder: Path, groups: dict[str, int], *, unit_header: str = "Absorbance") -> Path:
    """Spectra files (two-column CSV) and META.csv: `groups` {group_id: replicates}; returns META's path."""
    rng = np.random.default_rng(7)
    spectra = folder / "spectra"
    spectra.mkdir(parents=True)
    x = np.arange(190.0, 811.0, 0.5)
    rows = ["file,group_id,replicate,sample"]
    for gi, (gid, n) in enumerate(groups.items()):
        clean = _shape(x) - _gauss(x, 380 + 20 * gi, 12, 0.05)
        for r in range(n):
            name = f"{gid}_{r}.csv"
            y = clean + 0.002 * rng.standard_normal(x.size)
            body = "".join(f"{a:.1f},{b:.6f}\n" for a, b in zip(x, y, strict=True))
            (spectra / name).write_text(f"Wavelength (nm),{unit_header}\n{body}")
            rows.append(f"{name},{gid},{r},s{gi}")
    meta = folder / "META.csv"
    meta.write_text("\n".join(rows) + "\n")
    return meta


def _import(folder: Path, meta: Path, out: Path, *extra: str) -> int:
    argv = ["data", "import", str(folder / "spectra"), "--metadata", str(meta), "--out", str(out)]
    return godrun_main([*argv, "--panel-group", "g3", "--references", "replicate-mean", *extra])


def test_import_writes_the_seed_layout_with_pairs_and_leave_one_out_references(tmp_path: Path):
    meta = _dataset(tmp_path, {"g1": 4, "g2": 5, "g3": 4})
    out = tmp_path / "ws"
    assert _import(tmp_path, meta, out) == 0
    all_ = pd.read_csv(out / layout.MANIFEST_ALL, keep_default_na=False)
    train = pd.read_csv(out / layout.MANIFEST_TRAIN, keep_default_na=False)
    panel = pd.read_csv(out / layout.PANEL_MANIFEST, keep_default_na=False)
    assert set(panel.group_id) == {"g3"} and set(train.group_id) == {"g1", "g2"} and len(all_) == 13
    assert (train.reference_path == "").all() and (panel.reference_path != "").all()
    # pairs: two by two in replicate order, the odd fifth joins the last pair
    assert train.groupby("pair_id").size().tolist() == [2, 2, 2, 3]
    # each panel reference is the mean of the *other* replicates of its sample
    base = out / layout.SPECTRA_DIR
    vals = np.stack([np.load(base / p) for p in panel.path])
    for i, rel in enumerate(panel.reference_path):
        expected = (vals.sum(0) - vals[i]) / (len(vals) - 1)
        np.testing.assert_allclose(np.load(base / rel), expected, atol=1e-6)
    assert all_.measured_min_nm.eq(190.0).all() and all_.measured_max_nm.eq(810.5).all()
    hashes = json.loads((out / layout.MANIFEST_HASHES).read_text())
    assert hashes["panel_groups"] == ["g3"]
    lineage = json.loads((out / "data/import_lineage.json").read_text())
    assert lineage["unit"] == "absorbance" and lineage["panel_references"] == "replicate-mean"
    assert "leave-one-out" in (out / "data/import_audit.md").read_text()
    assert (out / layout.WAVELENGTH_GRID).is_file() and (out / layout.LAMBDA_STATS).is_file()
    assert godrun_main(["data", "check", "--root", str(out)]) == 0


def test_semicolon_metadata_with_bom_and_crlf(tmp_path: Path):
    meta = _dataset(tmp_path, {"g1": 2, "g2": 2, "g3": 2})
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_text().replace(",", ";").replace("\n", "\r\n").encode())
    assert _import(tmp_path, meta, tmp_path / "ws") == 0
    assert len(pd.read_csv(tmp_path / "ws" / layout.MANIFEST_ALL)) == 6


def test_import_converts_units_on_request(tmp_path: Path):
    meta = _dataset(tmp_path, {"g1": 2, "g2": 2, "g3": 2})
    out = tmp_path / "ws"
    assert _import(tmp_path, meta, out, "--to-unit", "%T") == 0
    all_ = pd.read_csv(out / layout.MANIFEST_ALL, keep_default_na=False)
    v = np.load(out / layout.SPECTRA_DIR / all_.path.iloc[0])
    assert 10 < v.mean() < 40  # 10^-0.6 * 100 = 25 %T
    assert json.loads((out / "data/import_lineage.json").read_text())["unit"] == "percent_transmittance"


def _bad(tmp_path: Path, capsys, mutate, match: str, *extra: str) -> None:
    meta = _dataset(tmp_path, {"g1": 2, "g2": 2, "g3": 2})
    mutate(tmp_path, meta)
    out = tmp_path / "ws"
    assert _import(tmp_path, meta, out, *extra) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ws")] == []  # no temp folder left


def _append(meta: Path, line: str) -> None:
    meta.write_text(meta.read_text() + line + "\n")


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing-file", "line 8: file nothere.csv: file not found"),
        ("duplicate-id", "line 8: duplicate spectrum_id"),
        ("unknown-unit", "unknown unit 'Furlongs'"),
        ("nan", "g1_0.csv line 3: value of column 'Absorbance' is NaN"),
        ("partial", "g1_0.csv: measured 300-810.5 nm does not cover the grid 200-800 nm"),
        ("symlink-out", "leading outside"),
        ("dotdot", "without `..`"),
        ("huge", "more than the 67108864 a spectrum may have"),
        ("empty", "g1_0.csv: empty file"),
        ("no-column", "lacks column(s) replicate"),
        ("mixed-units", "one unit per dataset"),
        ("lonely", "has one replicate and no reference_file"),
        ("unknown-panel", "--panel-group 'g3': no spectra"),
        ("unlisted", "extra.csv: a spectrum file with no row in metadata"),
        ("fifo-meta", "not a regular file"),
    ],
)
def test_bad_input_exits_2_naming_the_file_and_leaves_nothing(tmp_path: Path, capsys, case: str, match: str):
    spectra = tmp_path / "spectra"

    def mutate(_: Path, meta: Path) -> None:
        if case == "missing-file":
            _append(meta, "nothere.csv,g1,5,s0")
        elif case == "duplicate-id":
            _append(meta, "g1_0.csv,g2,9,s9")
        elif case == "unknown-unit":
            (spectra / "g2_1.csv").write_text((spectra / "g2_1.csv").read_text().replace("Absorbance", "Furlongs"))
            meta.write_text(meta.read_text().replace("sample", "sample,unit").replace(",s1\n", ",s1,Furlongs\n"))
        elif case == "nan":
            lines = (spectra / "g1_0.csv").read_text().splitlines()
            lines[2] = lines[2].split(",")[0] + ",nan"
            (spectra / "g1_0.csv").write_text("\n".join(lines) + "\n")
        elif case == "partial":
            lines = (spectra / "g1_0.csv").read_text().splitlines()
            (spectra / "g1_0.csv").write_text("\n".join([lines[0], *lines[221:]]) + "\n")
        elif case == "symlink-out":
            secret = tmp_path / "secret.csv"
            secret.write_text((spectra / "g1_0.csv").read_text())
            (spectra / "g1_0.csv").unlink()
            os.symlink(secret, spectra / "g1_0.csv")
        elif case == "dotdot":
            meta.write_text(meta.read_text().replace("g1_0.csv", "../META.csv"))
        elif case == "huge":
            os.truncate(spectra / "g1_0.csv", (64 << 20) + 1)  # sparse: nothing is written
        elif case == "empty":
            (spectra / "g1_0.csv").write_text("")
        elif case == "no-column":
            meta.write_text(meta.read_text().replace("replicate", "rep"))
        elif case == "mixed-units":
            text = (spectra / "g2_1.csv").read_text().replace("Absorbance", "Transmittance")
            (spectra / "g2_1.csv").write_text(text)
        elif case == "lonely":
            (spectra / "lonely.csv").write_text(
                (spectra / "g1_0.csv").read_text().replace(",0.", ",1.")
            )  # another spectrum
            _append(meta, "lonely.csv,g9,0,lonely")
        elif case == "fifo-meta":
            meta.unlink()
            os.mkfifo(meta)
        elif case == "unlisted":
            (spectra / "extra.csv").write_text((spectra / "g1_0.csv").read_text())
        elif case == "unknown-panel":
            meta.write_text(meta.read_text().replace(",g3,", ",g4,"))

    _bad(tmp_path, capsys, mutate, match)


def test_existing_non_empty_out_is_refused_and_kept(tmp_path: Path, capsys):
    meta = _dataset(tmp_path, {"g1": 2, "g2": 2, "g3": 2})
    out = tmp_path / "ws"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _import(tmp_path, meta, out) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_panel_rows_without_references_are_refused(tmp_path: Path, capsys):
    meta = _dataset(tmp_path, {"g1": 2, "g2": 2, "g3": 2})
    argv = ["data", "import", str(tmp_path / "spectra"), "--metadata", str(meta), "--out", str(tmp_path / "ws")]
    assert godrun_main([*argv, "--panel-group", "g3"]) == 2
    assert "has no reference_file; give one per panel row or --references replicate-mean" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def test_dose_features_in_the_metadata_become_the_film_files(tmp_path: Path):
    from godrun.spec import FILM_FEATURES

    meta = _dataset(tmp_path, {"g1": 2, "g2": 2, "g3": 2})
    lines = meta.read_text().splitlines()
    dose = {"g1": 0.2, "g2": 0.6, "g3": 1.0}
    rows = [lines[0] + "," + ",".join(FILM_FEATURES)]
    rows += [
        ln + "," + ",".join(str(dose[ln.split(",")[1]] + k) for k in range(len(FILM_FEATURES))) for ln in lines[1:]
    ]
    meta.write_text("\n".join(rows) + "\n")
    out = tmp_path / "ws"
    assert _import(tmp_path, meta, out) == 0
    feats = pd.read_csv(out / layout.DOSE_FEATURES).set_index("group_id")
    assert list(feats.columns) == list(FILM_FEATURES) and feats.loc["g2", FILM_FEATURES[0]] == 0.6
    stats = json.loads((out / layout.DOSE_STATS).read_text())
    assert stats["groups"] == 2 and stats["features"][FILM_FEATURES[0]]["mean"] == pytest.approx(0.4)  # train only
    weights = pd.read_csv(out / layout.DOSE_SAMPLING_WEIGHTS).set_index("group_id")["weight"]
    assert weights["g2"] > weights["g1"]  # the higher dose drawn more, as the synthetic corpus does


def test_jcamp_wavenumber_axis_and_percent_transmittance():
    wn = np.linspace(12000.0, 50000.0, 400)  # 833-200 nm
    ys = [round(50.0 / 0.01)] * 400
    lines = ["##TITLE=t", "##JCAMP-DX=5.01", "##XUNITS=1/CM", "##YUNITS=% TRANSMITTANCE", "##XFACTOR=1"]
    lines += ["##YFACTOR=0.01", f"##FIRSTX={wn[0]}", f"##LASTX={wn[-1]}", "##NPOINTS=400", "##XYDATA=(XY..XY)"]
    lines += [f"{x:.6f}, {y}" for x, y in zip(wn, ys, strict=True)]
    t = parse_spectrum_file(("\r\n".join([*lines, "##END="]) + "\r\n").encode(), "ir.jdx")
    assert t.unit == "percent_transmittance" and t.x_unit == "cm-1"
    np.testing.assert_allclose(t.wavelengths[[0, -1]], [200.0, 1e7 / 12000.0])
    np.testing.assert_allclose(t.values[:, 0], 50.0)


def test_reference_files_are_read_hashed_and_shared(tmp_path: Path):
    meta = _dataset(tmp_path, {"g1": 2, "g2": 2, "g3": 2})
    x = np.arange(190.0, 811.0, 1.0)
    table = "Wavelength,clean_a,clean_b\n" + "".join(
        f"{a},{b:.6f},{b + 0.01:.6f}\n" for a, b in zip(x, _shape(x), strict=True)
    )
    (tmp_path / "spectra" / "clean.csv").write_text(table)
    lines = meta.read_text().splitlines()
    rows = [lines[0] + ",reference_file"]
    rows += [
        ln + (",clean.csv::clean_b" if ",g3," in ln else ",clean.csv::clean_a" if ",g1," in ln else ",")
        for ln in lines[1:]
    ]
    meta.write_text("\n".join(rows) + "\n")
    argv = ["data", "import", str(tmp_path / "spectra"), "--metadata", str(meta), "--out", str(tmp_path / "ws")]
    assert godrun_main([*argv, "--panel-group", "g3", "--unit", "absorbance"]) == 0
    all_ = pd.read_csv(tmp_path / "ws" / layout.MANIFEST_ALL, keep_default_na=False).set_index("spectrum_id")
    base = tmp_path / "ws" / layout.SPECTRA_DIR
    g1, g2, g3 = (all_[all_.group_id == g] for g in ("g1", "g2", "g3"))
    assert g1.reference_path.nunique() == 1 and (g2.reference_path == "").all()  # one file per distinct reference
    np.testing.assert_allclose(
        np.load(base / g3.reference_path.iloc[0]), resample(x, _shape(x) + 0.01, GRID, "r"), atol=1e-6
    )
    assert all_.loc[g1.index[0], "reference_sha256"] != all_.loc[g3.index[0], "reference_sha256"]


def test_fill_edge_imports_a_partial_range_and_records_it(tmp_path: Path):
    meta = _dataset(tmp_path, {"g1": 2, "g2": 2, "g3": 2})
    lines = (tmp_path / "spectra" / "g1_0.csv").read_text().splitlines()
    (tmp_path / "spectra" / "g1_0.csv").write_text("\n".join([lines[0], *lines[221:]]) + "\n")  # from 300 nm
    assert _import(tmp_path, meta, tmp_path / "ws", "--fill", "edge") == 0
    all_ = pd.read_csv(tmp_path / "ws" / layout.MANIFEST_ALL, keep_default_na=False).set_index("spectrum_id")
    assert all_.loc["g1_0.csv", "measured_min_nm"] == 300.0 and all_.loc["g1_1.csv", "measured_min_nm"] == 190.0
    assert (
        "1 spectra measured over less than the grid (e.g. `g1_0.csv`)"
        in (tmp_path / "ws/data/import_audit.md").read_text()
    )
