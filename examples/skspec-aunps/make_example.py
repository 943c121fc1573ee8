"""Rebuild this example from scikit-spectra 0.3.2.2's `skspec/data/aunps_water.csv` (see ATTRIBUTION.md).

    python examples/skspec-aunps/make_example.py PATH/TO/aunps_water.csv

The source is one table, a column per time point (raw detector counts, 200-850 nm, 1 nm); its time series has
four plateaus: water alone (15:40-16:00), then three stages of the gold-nanoparticle run. Ten spectra of the
first two plateaus are kept in the instrument's own table format (the columns copied verbatim); eight of the
third are written as JCAMP-DX (##XYDATA=(X++(Y..Y)) with ##XFACTOR/##YFACTOR) and eight of the fourth as
two-column text with a semicolon delimiter and decimal commas, as European instruments write them. META.csv
names each spectrum's group and replicate.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLATEAUS = {  # group -> first and last source column (1-based, the header's time stamps)
    "water_blank": (1, 10),
    "aunp_stage1": (27, 36),
    "aunp_stage2": (60, 67),
    "aunp_stage3": (69, 76),
}


def _jcamp(stamp: str, wl: list[str], counts: list[str]) -> str:
    yfactor = 0.01
    ys = [round(float(c) / yfactor) for c in counts]
    lines = [
        f"##TITLE=AuNPs in water, {stamp} (scikit-spectra aunps_water.csv)",
        "##JCAMP-DX=4.24",
        "##DATA TYPE=UV/VIS SPECTRUM",
        "##XUNITS=NANOMETERS",
        "##YUNITS=COUNTS",
        "##XFACTOR=1",
        f"##YFACTOR={yfactor}",
        f"##FIRSTX={float(wl[0]):g}",
        f"##LASTX={float(wl[-1]):g}",
        f"##NPOINTS={len(wl)}",
        "##XYDATA=(X++(Y..Y))",
    ]
    for k in range(0, len(ys), 10):
        lines.append(f"{float(wl[k]):g} " + " ".join(str(y) for y in ys[k : k + 10]))
    lines.append("##END=")
    return "\r\n".join(lines) + "\r\n"  # CRLF, as Windows instrument software writes


def main(source: str) -> None:
    rows = list(csv.reader(Path(source).read_text(encoding="utf-8").splitlines()))
    header, body = rows[0], rows[1:]
    wl = [r[0] for r in body]
    spectra = HERE / "spectra"
    meta = [["file", "column", "group_id", "sample", "replicate"]]
    for group, (a, b) in PLATEAUS.items():
        cols = list(range(a, b + 1))
        if group in ("water_blank", "aunp_stage1"):
            out = spectra / f"{group}.csv"
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow([header[0], *(header[c] for c in cols)])
                w.writerows([r[0], *(r[c] for c in cols)] for r in body)
            meta += [[out.name, header[c], group, group, str(k)] for k, c in enumerate(cols)]
            continue
        (spectra / group).mkdir(parents=True, exist_ok=True)
        for k, c in enumerate(cols):
            stamp = header[c]
            counts = [r[c] for r in body]
            if group == "aunp_stage2":
                name = f"{group}/r{k:02d}.jdx"
                (spectra / name).write_bytes(_jcamp(stamp, wl, counts).encode())
            else:
                name = f"{group}/r{k:02d}.txt"
                text = f"# AuNPs in water {stamp}\nWellenlaenge [nm];Intensitaet (counts)\n"
                text += "".join(
                    f"{w.replace('.', ',')};{v.replace('.', ',')}\n" for w, v in zip(wl, counts, strict=True)
                )
                (spectra / name).write_text(text, encoding="utf-8")
            meta.append([name, "", group, group, str(k)])
    with (HERE / "META.csv").open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(meta)


if __name__ == "__main__":
    main(sys.argv[1])
