"""The learning-quality bar over many corpus seeds and both noise profiles, one line per (profile, seed).

    PYTHONPATH=$PWD .venv/bin/python bench/unseen.py [--seeds 101,202,303] [--profiles default,skspec-fit]
        [--scale 0.2] [--epochs 15] [--steps 40] [--set FIELD=VALUE ...] [--out bench-out/unseen]

For each corpus it runs `bench/quality.py`'s n2n-small run (the recipe at the small CPU size, the same budget)
and checks, per seed: the run passes all four gates at some epoch; from that epoch on it passes all four at
every epoch with the ROI ratio >= 0.9; and at the trainer's best epoch and at the last one it beats the best
classical denoiser (Savitzky-Golay, Gaussian, wavelet; the best of them on each metric) on PSNR and on SAM.
Prints one table and "k of n corpora meet the done-when"; writes it to <out>/unseen.md. Each corpus and run
lives under <out>/<profile>-s<seed>-<settings digest>: a run finished with the same settings (scale, epochs,
steps, --set, and the godrun sources' digest) is read back from its metrics.csv, an interrupted one resumes from
its last checkpoint, and other settings or changed code never read an old run. Exit 0 either way: a failure is a
measurement.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import quality

from godrun.contract import files
from godrun.fsio import atomic_write_text, code_version

ROI_FLOOR = 0.9
RUN = "n2n-small"


def history_of(out: Path) -> list[dict[str, Any]] | None:
    path = files.metrics_csv(out / "runs" / "logs" / RUN)
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) if k != "epoch" else int(v) for k, v in r.items() if v != ""} for r in rows]


def judge(history: list[dict[str, Any]], classical: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """The done-when's parts for one run (`classical`: quality.classical's rows)."""
    smoothers = [r for r in classical if r["run"] not in ("raw", "clean reference")]
    best_psnr, best_sam = max(r["psnr"] for r in smoothers), min(r["sam"] for r in smoothers)
    complete = len(history) >= epochs
    first = next((int(h["epoch"]) for h in history if int(h["panel_gates_passed"]) == 4), None)
    after = [h for h in history if first is not None and int(h["epoch"]) >= first]
    held = bool(after) and all(int(h["panel_gates_passed"]) == 4 for h in after)
    roi_min = min((float(h["panel_roi_ratio"]) for h in after), default=float("nan"))
    best, last = quality.best_row(history), history[-1]
    beats = all(h["panel_psnr_mean"] > best_psnr and h["panel_sam_mean"] < best_sam for h in (best, last))
    met = complete and held and roi_min >= ROI_FLOOR and beats
    return {
        "first_pass": first if first is not None else "never",
        "all_gates_after": "yes" if held else "no",
        "roi_min_after": roi_min,
        "psnr_best/last": f"{best['panel_psnr_mean']:.2f}/{last['panel_psnr_mean']:.2f}",
        "classical_psnr": best_psnr,
        "sam_best/last": f"{best['panel_sam_mean']:.4g}/{last['panel_sam_mean']:.4g}",
        "classical_sam": best_sam,
        "roi_last": float(last["panel_roi_ratio"]),
        "done_when": "met" if met else "NOT met" if complete else "incomplete",
    }


def settings_digest(a: argparse.Namespace, extra: dict[str, Any]) -> str:
    """What a finished run depends on besides its corpus seed and profile (the code too), as 8 hex digits."""
    settings = {"scale": a.scale, "epochs": a.epochs, "steps": a.steps, "set": extra, "code": code_version()}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


def one(seed: int, profile: str, a: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    name = Path(profile).stem
    out = a.out / f"{name}-s{seed}-{settings_digest(a, extra)}"
    tag = "" if profile == "default" else f"-{name}"
    root = out / f"corpus-s{seed}-x{a.scale}{tag}"
    quality.corpus(root, a.scale, seed, profile)
    history = history_of(out)
    if history is None or len(history) < a.epochs:
        print(f"training {RUN} on {profile} seed {seed} ...", flush=True)
        history = quality.train_run(root, out / "runs", RUN, a.epochs, a.steps, seed, extra)
    return {"profile": profile, "seed": seed, **judge(history, quality.classical(root), a.epochs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="101,202,303", help="comma-separated corpus seeds")
    p.add_argument("--profiles", default="default,skspec-fit", help="comma-separated noise profiles")
    p.add_argument("--scale", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--set", action="append", default=[], type=quality._field, help="recipe FIELD=VALUE")
    p.add_argument("--out", type=Path, default=Path("bench-out/unseen"))
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    rows = [one(seed, prof, a, dict(a.set)) for prof in a.profiles.split(",") for seed in seeds]
    table = pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}")
    met = sum(r["done_when"] == "met" for r in rows)
    header = f"{RUN}, scale {a.scale}, {a.epochs} epochs x {a.steps} steps; ROI floor {ROI_FLOOR}"
    header += "".join(f"; {k} {v}" for k, v in dict(a.set).items())
    report = f"{header}\n\n{table}\n\n{met} of {len(rows)} corpora meet the done-when"
    print(report)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "unseen.md", report + "\n")


if __name__ == "__main__":
    main()
