"""Per-dip errors on a panel: how far raw and each checkpoint measure every reference dip, and where the error is.

    PYTHONPATH=$PWD .venv/bin/python bench/dip_errors.py CORPUS [CHECKPOINT ...] [--around NM]

CORPUS is a `godrun data synth` directory (its data/validation_panel.csv is the panel). For every dip gate 3's
detector finds on a clean reference, grouped by centre (5 nm), prints per source (raw, then each checkpoint)
the signed relative area and depth errors of gate 3's measurement (mean and sd over the panel's spectra) and
the fraction beyond gate 3's tolerance. A second table gives the rms error per ROI band, as measured and
smoothed with a 5 nm Gaussian (the low-frequency part that moves the guard-band baselines gate 3 fits).
With --around NM, first the errors in 6 nm bins around the dip centred at NM: the mean over its spectra and
the sd across them, the guard band left of its window and the window marked (docs/noise.md, gate 3 on
unseen seeds); with --template K ..., the same dip's gate-3 errors on a template prior's fit (template_prior).
docs/learning-quality.md (the demo section) reads these tables.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter1d

from godrun.data import layout
from godrun.evaluator.panel import checkpoint_candidates, load_panel
from godrun.gates.metrics import Dip, detect_dips, measure_dip
from godrun.spec import Gates

BANDS_NM = ((300, 330), (330, 360), (360, 390), (390, 450), (450, 500))
LOW_PASS_NM = 5.0
GROUP_NM = 5.0
BIN_NM = 6.0
TEMPLATE_NM = (280.0, 430.0)


def load(corpus: Path, checkpoints: list[Path]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(wavelengths, clean references, {source: predictions}) with raw first; checkpoints predict as the evaluator's."""
    p = load_panel(
        corpus / layout.PANEL_MANIFEST,
        corpus / layout.SPECTRA_DIR,
        wavelength_grid=corpus / layout.WAVELENGTH_GRID,
        metadata_csv=corpus / layout.DOSE_FEATURES,
    )
    sources = {"raw": p.raw} | {c.name: c.predict(p) for c in checkpoint_candidates(checkpoints)}
    return p.wavelengths, p.reference, sources


def dip_errors(wl: np.ndarray, ref: np.ndarray, sources: dict[str, np.ndarray], gates: Gates) -> list[dict]:
    """One row per (dip centre, source): signed relative area/depth errors and gate 3's failure fraction."""
    cfg = gates.detector
    errs: dict[tuple[float, str], list[tuple[float, float]]] = defaultdict(list)
    for i, r in enumerate(ref):
        for dip in detect_dips(r, wl, cfg):
            centre = round(dip.center_nm / GROUP_NM) * GROUP_NM
            for name, y in sources.items():
                m = measure_dip(y[i], wl, dip, cfg)
                errs[(centre, name)].append(((m.area - dip.area) / dip.area, (m.depth - dip.depth) / dip.depth))
    rows = []
    for (centre, name), v in sorted(errs.items()):
        a = np.array(v)
        fail = ~(np.abs(a) <= gates.roi_tolerance).all(axis=1)  # NaN (unmeasurable) fails, as in gate 3
        rows.append(
            {
                "dip_nm": centre,
                "source": name,
                "n": len(a),
                "area_mean": a[:, 0].mean(),
                "area_sd": a[:, 0].std(),
                "depth_mean": a[:, 1].mean(),
                "depth_sd": a[:, 1].std(),
                "fail": fail.mean(),
            }
        )
    return rows


def band_errors(wl: np.ndarray, ref: np.ndarray, sources: dict[str, np.ndarray]) -> list[dict]:
    """rms error per ROI band, as is and low-passed (Gaussian, LOW_PASS_NM)."""
    sigma = LOW_PASS_NM / float(np.median(np.diff(wl)))
    rows = []
    for name, y in sources.items():
        err = np.asarray(y, dtype=np.float64) - ref
        low = gaussian_filter1d(err, sigma, axis=1)
        for lo, hi in BANDS_NM:
            m = (wl >= lo) & (wl < hi)
            rms, rms_low = np.sqrt((err[:, m] ** 2).mean()), np.sqrt((low[:, m] ** 2).mean())
            rows.append({"band_nm": f"{lo}-{hi}", "source": name, "rms": rms, "rms_low_pass": rms_low})
    return rows


def dip_near(reference: np.ndarray, wl: np.ndarray, centre: float, gates: Gates) -> Dip | None:
    """The reference's dip centred within GROUP_NM / 2 of `centre`, if it has one."""
    return next(
        (d for d in detect_dips(reference, wl, gates.detector) if abs(d.center_nm - centre) <= GROUP_NM / 2), None
    )


def around(wl: np.ndarray, ref: np.ndarray, sources: dict[str, np.ndarray], centre: float, gates: Gates) -> list[dict]:
    """The spectra whose reference has a dip centred within GROUP_NM / 2 of `centre`: per 6 nm bin from 20 nm left
    of its window to 20 nm right of it, each source's mean error (the shared part) and the sd over those spectra
    of the bin's mean error (the part that differs per spectrum: what moves gate 3's guard-band baselines)."""
    dips = {i: d for i, r in enumerate(ref) if (d := dip_near(r, wl, centre, gates)) is not None}
    if not dips:
        return []
    rows, dip = list(dips), next(iter(dips.values()))
    out = []
    for lo in np.arange(dip.left_nm - 20.0, dip.right_nm + 20.0, BIN_NM):
        m = (wl >= lo) & (wl < lo + BIN_NM)
        for name, y in sources.items():
            e = (np.asarray(y, np.float64) - ref)[rows][:, m].mean(axis=1)
            where = "guard" if lo + BIN_NM > dip.left_nm - gates.detector.guard_nm and lo < dip.left_nm else ""
            where = where or ("window" if dip.left_nm <= lo < dip.right_nm else "")
            out.append(
                {
                    "bin_nm": f"{lo:.0f}-{lo + BIN_NM:.0f}",
                    "part": where,
                    "source": name,
                    "n": len(rows),
                    "mean_err": float(e.mean()),
                    "sd_err": float(e.std()),
                }
            )
    return out


def template_prior(
    corpus: Path, wl: np.ndarray, ref: np.ndarray, raw: np.ndarray, centre: float, k: int, gates: Gates
) -> np.ndarray:
    """What a strong shape prior could do for the dip centred at `centre` (a bound for a learnt denoiser, not a
    denoiser): each of its panel spectra's TEMPLATE_NM segment replaced by the inverse-noise-variance least-squares
    fit of its sample's mean training reference, a quadratic baseline and the first k principal components of
    those references. The noise variance per wavelength comes from the training rows' raw - reference (rows with
    a reference only). Returns gate 3's relative area and depth errors [n, 2] of the dip on the fitted spectra."""
    from godrun.data.loader import load_corpus

    train = load_corpus(
        corpus / layout.MANIFEST_TRAIN, corpus / layout.SPECTRA_DIR, wavelength_grid=corpus / layout.WAVELENGTH_GRID
    )
    panel = pd.read_csv(corpus / layout.PANEL_MANIFEST, dtype=str, keep_default_na=False)
    known = np.ones(len(train.raw), bool) if train.has_reference is None else train.has_reference
    seg = (wl >= TEMPLATE_NM[0]) & (wl <= TEMPLATE_NM[1])
    weight = np.sqrt(1.0 / ((train.raw - train.reference)[known][:, seg].astype(np.float64) ** 2).mean(axis=0))
    x = (wl[seg] - wl[seg].mean()) / wl[seg].std()
    errors = []
    for i, r in enumerate(ref):
        dip = dip_near(r, wl, centre, gates)
        if dip is None:
            continue
        same = known & (train.meta["sample"] == panel.loc[i, "sample"]).to_numpy()
        refs = train.reference[same][:, seg].astype(np.float64)
        mean = refs.mean(axis=0)
        modes = np.linalg.svd(refs - mean, full_matrices=False)[2][:k]
        basis = np.column_stack([mean, np.ones_like(x), x, x * x, *modes])
        coef = np.linalg.lstsq(basis * weight[:, None], raw[i, seg] * weight, rcond=None)[0]
        y = raw[i].astype(np.float64)
        y[seg] = basis @ coef
        m = measure_dip(y, wl, dip, gates.detector)
        errors.append(((m.area - dip.area) / dip.area, (m.depth - dip.depth) / dip.depth))
    return np.array(errors)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", type=Path, help="a `godrun data synth` directory")
    p.add_argument("checkpoints", type=Path, nargs="*", help="checkpoints to compare with raw")
    p.add_argument("--around", type=float, help="also: the errors around the dip centred at this wavelength (nm)")
    p.add_argument(
        "--template",
        type=int,
        nargs="*",
        default=[],
        metavar="K",
        help="with --around: gate 3 on a template prior's fit with K principal components (see template_prior)",
    )
    a = p.parse_args()
    wl, ref, sources = load(a.corpus, a.checkpoints)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        if a.around is not None:
            table = pd.DataFrame(around(wl, ref, sources, a.around, Gates()))
            if table.empty:
                raise SystemExit(f"no reference dip centred at {a.around} nm on this panel")
            for k in a.template:
                e = template_prior(a.corpus, wl, ref, sources["raw"], a.around, k, Gates())
                fail = float((~(np.abs(e) <= Gates().roi_tolerance).all(axis=1)).mean())
                print(
                    f"template prior, {k} components: area sd {e[:, 0].std():.3f}, depth sd {e[:, 1].std():.3f}, "
                    f"beyond gate 3's tolerance {fail:.2f} of {len(e)}"
                )
            print(
                table.pivot_table(
                    index=["bin_nm", "part"], columns="source", values=["mean_err", "sd_err"], sort=False
                ).to_string()
            )
            print()
        print(pd.DataFrame(dip_errors(wl, ref, sources, Gates())).to_string(index=False))
        print()
        print(pd.DataFrame(band_errors(wl, ref, sources)).to_string(index=False))


if __name__ == "__main__":
    main()
