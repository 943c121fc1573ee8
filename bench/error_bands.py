"""Where on the grid a denoiser's error lies, and what kind it is: per band rms, low-pass rms and bias, and
each band's share of the PSNR, SAM and downstream figures.

    PYTHONPATH=$PWD .venv/bin/python bench/error_bands.py CORPUS [CHECKPOINT ...] [--band-nm 50]

CORPUS is a `godrun data synth` directory (its panel is judged, as bench/dip_errors.py reads it). Sources: raw,
the wavelet (the best classical denoiser on these panels) and each checkpoint. Table 1, per band and source:
rms error against the clean reference, its low-pass part (5 nm Gaussian: what gate 3's baselines and the
downstream bands see) and its bias (the mean error over the panel: what no per-spectrum noise explains, e.g.
a session's warm-up drift that the reference does not have). Table 2, per checkpoint: the panel's PSNR, SAM
and downstream error when the checkpoint's prediction replaces raw in one band only — the band's part in
each figure (a band whose swap raises SAM is where the model costs the spectral angle), and the figures under an
oracle shrinkage of the correction per band (oracle_shrink: a bound, it reads the clean references).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from dip_errors import LOW_PASS_NM, load
from scipy.ndimage import gaussian_filter1d

from godrun.evaluator.denoisers import DENOISERS
from godrun.gates.metrics import downstream_errors, psnr, sam_degrees
from godrun.spec import Gates


def bands(wl: np.ndarray, width: float) -> list[tuple[float, float]]:
    """[lo, hi) bands of `width` nm from the grid's start; the last one also holds the grid's end."""
    edges = np.arange(float(wl[0]), float(wl[-1]) + 1e-9, width)
    out = [(float(lo), float(lo + width)) for lo in edges if lo < wl[-1]]
    out[-1] = (out[-1][0], max(out[-1][1], float(wl[-1]) + 1e-9))
    return out


def error_table(wl: np.ndarray, ref: np.ndarray, sources: dict[str, np.ndarray], width: float) -> pd.DataFrame:
    sigma = LOW_PASS_NM / float(np.median(np.diff(wl)))
    rows = []
    for name, y in sources.items():
        err = np.asarray(y, np.float64) - ref
        low = gaussian_filter1d(err, sigma, axis=1)
        for lo, hi in bands(wl, width):
            m = (wl >= lo) & (wl < hi)
            rows.append(
                {
                    "band_nm": f"{lo:.0f}-{round(hi):.0f}",
                    "source": name,
                    "rms": float(np.sqrt((err[:, m] ** 2).mean())),
                    "rms_low_pass": float(np.sqrt((low[:, m] ** 2).mean())),
                    "bias": float(err[:, m].mean()),
                }
            )
    return pd.DataFrame(rows)


def figures(y: np.ndarray, ref: np.ndarray, raw: np.ndarray, wl: np.ndarray) -> dict[str, float]:
    ds, _ = downstream_errors(y, ref, raw, wl, Gates().detector)
    return {
        "psnr": float(psnr(y, ref).mean()),
        "sam": float(sam_degrees(y, ref).mean()),
        "downstream": float(ds.mean()),
    }


def swap_table(wl: np.ndarray, ref: np.ndarray, raw: np.ndarray, pred: np.ndarray, width: float) -> pd.DataFrame:
    rows = [{"prediction in": "nowhere (raw)", **figures(raw, ref, raw, wl)}]
    rows.append({"prediction in": "everywhere", **figures(pred, ref, raw, wl)})
    for lo, hi in bands(wl, width):
        m = (wl >= lo) & (wl < hi)
        y = raw.copy()
        y[:, m] = pred[:, m]
        rows.append({"prediction in": f"{lo:.0f}-{hi:.0f} only", **figures(y, ref, raw, wl)})
    return pd.DataFrame(rows)


def oracle_shrink(wl: np.ndarray, ref: np.ndarray, raw: np.ndarray, pred: np.ndarray, width: float):
    """The prediction with its correction (pred - raw) scaled per band by the factor in [0, 1] that minimises the
    panel's squared error against the clean references: an oracle (it reads the references), so a bound on what
    any choice of how much of the correction to apply could do. Returns (prediction, factors)."""
    out, factors = raw.astype(np.float64).copy(), []
    corr, noise = pred - raw, raw - ref
    for lo, hi in bands(wl, width):
        m = (wl >= lo) & (wl < hi)
        energy = float((corr[:, m] ** 2).sum())
        alpha = float(np.clip(-(corr[:, m] * noise[:, m]).sum() / energy, 0.0, 1.0)) if energy > 0 else 0.0
        out[:, m] += alpha * corr[:, m]
        factors.append(round(alpha, 2))
    return out, factors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", type=Path)
    p.add_argument("checkpoints", type=Path, nargs="*")
    p.add_argument("--band-nm", type=float, default=50.0)
    a = p.parse_args()
    wl, ref, sources = load(a.corpus, a.checkpoints)
    raw = sources["raw"]
    checkpoints = {k: v for k, v in sources.items() if k != "raw"}
    short = [f"{Path(k).parent.name}/{Path(k).name}" for k in checkpoints]
    labels = short if len(set(short)) == len(short) else list(checkpoints)  # two runs' best.pt: full paths
    sources = {"raw": raw, "wavelet": DENOISERS["wavelet"](raw, wl)} | dict(
        zip(labels, checkpoints.values(), strict=True)
    )
    table = error_table(wl, ref, sources, a.band_nm)
    for metric in ("rms", "rms_low_pass", "bias"):
        print(f"\n{metric} per band (transmittance units)")
        print(table.pivot(index="source", columns="band_nm", values=metric).to_string(float_format="%.1e"))
    for name, pred in sources.items():
        if name in ("raw", "wavelet"):
            continue
        print(f"\n{name}: the panel's figures with the prediction in one band, raw elsewhere")
        print(swap_table(wl, ref, raw, pred, a.band_nm).to_string(index=False, float_format="%.5g"))
        shrunk, factors = oracle_shrink(wl, ref, raw, pred, a.band_nm)
        fig = figures(shrunk, ref, raw, wl)
        print(
            f"oracle shrinkage per band {factors}: PSNR {fig['psnr']:.5g}, SAM {fig['sam']:.5g}, "
            f"downstream {fig['downstream']:.5g}"
        )


if __name__ == "__main__":
    main()
