"""How strongly the measurement backs each dip a model predicts: real dips against spurious ones.

    PYTHONPATH=$PWD .venv/bin/python bench/dip_evidence.py [--runs bench-out/unseen] [--min-area 2e-4]

For every run `bench/unseen.py` left under --runs (<profile>-s<seed>-<digest>/, its corpus and its best and last
checkpoints), the panel is predicted with the dip check off (`dip_evidence_se` 0), gate 3's detector runs on the
predictions with its floor lowered to --min-area (near misses count: a spurious dip is rare, one at the gate's own
floor rarer), and each predicted dip is evidence-tested as `godrun/model/dipcheck.py` does (the measurement's
amplitude over its standard error, z). A dip matching a reference dip is real, the rest spurious. Prints, per
noise profile, the z of both kinds (the real ones' lowest quantiles, every spurious one) and how many each
threshold would fill; the recipe's default `dip_evidence_se` should sit in the gap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from godrun.contract import files
from godrun.data.loader import load_corpus
from godrun.gates.metrics import detect_dips, grid_step, guard_points, spurious_dips
from godrun.model import normalise
from godrun.model.dipcheck import evidence
from godrun.model.inference import load_model, predict, raw_cond_for
from godrun.model.subspace import despiked_input
from godrun.spec import Recipe

THRESHOLDS = (4.0, 6.0, 8.0, 10.0)


def run_dips(run: Path, checkpoint: Path, min_area: float) -> list[dict]:
    root = next(run.glob("corpus-*"))
    c = load_corpus(root / files.PANEL_MANIFEST, root / files.SPECTRA_DIR, wavelength_grid=root / files.WAVELENGTH_GRID)
    m = load_model(checkpoint)
    m.meta.config["dip_evidence_se"] = 0.0
    cond = raw_cond_for(m.meta, root / files.DOSE_FEATURES, c.meta["group_id"])
    wl = np.asarray(c.wavelengths, dtype=np.float64)
    pred = predict(m.model, m.meta, c.raw, cond, wl).astype(np.float64)
    xn, params = normalise.normalise(c.raw)
    with torch.no_grad():
        x = despiked_input(m.model, torch.from_numpy(xn), torch.from_numpy(params["scale"]))
    measured = normalise.denormalise(x.numpy(), params).astype(np.float64)
    recipe = m.meta.recipe(str(checkpoint))
    cfg = recipe.detector.model_copy(update={"min_area": min_area})
    guard = guard_points(grid_step(wl), cfg)
    rows = []
    for i in range(len(pred)):
        ref = detect_dips(np.asarray(c.reference[i], dtype=np.float64), wl, recipe.detector)
        for d in detect_dips(pred[i], wl, cfg):
            lo, hi = int(np.argmin(abs(wl - d.left_nm))), int(np.argmin(abs(wl - d.right_nm)))
            e = evidence(pred[i], measured[i], wl, lo, hi, guard)
            if e is not None:
                real = not spurious_dips([d], ref)
                rows.append({"centre": d.center_nm, "area": d.area, "z": e.a / e.se, "real": real})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("bench-out/unseen"))
    p.add_argument("--min-area", type=float, default=2e-4, help="the detector's floor for candidates")
    a = p.parse_args()
    rows = []
    for run in sorted(a.runs.glob("*-s*-*")):
        for ck in sorted(run.glob("runs/checkpoints/*/mamba_tiny_uv_*.pt")):
            found = run_dips(run, ck, a.min_area)
            rows += [r | {"profile": run.name.rsplit("-s", 1)[0], "run": f"{run.name}:{ck.stem}"} for r in found]
            print(f"{run.name} {ck.stem}: {len(found)} dips", flush=True)
    if not rows:
        raise SystemExit(f"no runs under {a.runs} (bench/unseen.py --out {a.runs} makes them)")
    df = pd.DataFrame(rows)
    floor = Recipe().dip_min_area
    print(f"\nrecipe default dip_evidence_se {Recipe().dip_evidence_se}; candidates from area {a.min_area}")
    for prof, g in df.groupby("profile"):
        real, spur = g[g.real], g[~g.real]
        q = np.quantile(real.z, [0.0, 0.001, 0.01, 0.5]) if len(real) else [np.nan] * 4
        print(f"\n{prof}: {len(real)} real dips, z min {q[0]:.1f}, 0.1% {q[1]:.1f}, 1% {q[2]:.1f}, median {q[3]:.1f}")
        print(f"{prof}: {len(spur)} spurious ({(spur.area >= floor).sum()} at the gate's floor {floor:g} or more)")
        if len(spur):
            print(spur.sort_values("z", ascending=False).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        for k in THRESHOLDS:
            print(f"  z <= {k:g} fills {int((spur.z <= k).sum())} spurious, {int((real.z <= k).sum())} real")


if __name__ == "__main__":
    main()
