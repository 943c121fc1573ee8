"""Learning quality against the gates: raw, classical denoisers and trained models side by side.

    PYTHONPATH=$PWD .venv/bin/python bench/quality.py [--scale 0.2] [--seed 7] [--epochs 15] [--steps 40]
        [--noise-profile default|skspec-fit|PATH]
        [--runs n2n-small,clean-small,n2n-medium,clean-medium] [--set FIELD=VALUE ...] [--out bench-out/quality]

Run kinds: n2n (Noise2Noise), clean (clean targets), n2nnoref (Noise2Noise with the training manifest's
clean references removed: the dip loss's windows then come from each group's replicate mean).

Synthesises a corpus (`godrun data synth --scale --seed`; seed 7 by default: seed 1 was used to tune the
noise weighting), judges raw and every classical denoiser on its panel, then trains the seed's recipe at CPU sizes
(small: d_model 16, 2 layers, d_state 8; medium: 32, 4, 16) with Noise2Noise and with clean targets,
all on the same fixed budget (bs 32, --epochs x --steps, lr 3e-3 -> 3e-4, EMA 0.99, no warm start) and
loss weights x noise std outside the ROI (--noise-weight-power 0.5).
Prints one table (every gate metric and the verdict; trained runs at their best epoch by the trainer's
ranking and at their last epoch), whether the ROI ratio stayed >= 0.9 after it first passed, and the
N2N-vs-clean PSNR gap; writes learning curves (PSNR, SAM, ROI ratio, spurious dips, downstream error
per epoch) to <out>/learning_curves.png and the table to <out>/table.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from godrun.data import layout
from godrun.data.loader import load_corpus
from godrun.evaluator.denoisers import DENOISERS
from godrun.fsio import atomic_write_text
from godrun.gates.metrics import evaluate_gates, panel_metrics
from godrun.spec import Gates, Recipe
from godrun.trainer.presets import rooted

SIZES: dict[str, dict[str, Any]] = {
    "small": {"d_model": 16, "n_layers": 2, "d_state": 8},
    "medium": {"d_model": 32, "n_layers": 4, "d_state": 16},
}
BUDGET: dict[str, Any] = {
    "bs": 32,
    "lr": 3e-3,
    "lr_min": 3e-4,
    "ema_decay": 0.99,
    "amp": False,
    "init_checkpoint": None,
    "noise_weight_power": 0.5,  # loss weights ∝ noise std outside the ROI (docs/learning-quality.md)
}
CURVES = (
    ("panel_psnr_mean", "PSNR (dB)"),
    ("panel_sam_mean", "SAM (deg)"),
    ("panel_roi_ratio", "ROI ratio"),
    ("panel_spurious", "spurious dips"),
    ("panel_downstream_err", "downstream error"),
)
COLUMNS = ("psnr", "psnr_std", "sam", "tail", "roi", "spurious", "downstream", "ds_raw", "verdict")


def corpus(root: Path, scale: float, seed: int, noise_profile: str = "default") -> None:
    from godrun.cli import main

    if (root / layout.PANEL_MANIFEST).is_file():
        return
    args = ["--out", str(root), "--scale", str(scale), "--seed", str(seed), "--noise-profile", noise_profile]
    if main(["data", "synth", *args]) != 0:
        raise SystemExit("corpus synthesis failed")
    if main(["data", "panel", "--root", str(root)]) != 0:
        raise SystemExit("panel construction failed")


def _row(name: str, pred: np.ndarray, reference: np.ndarray, raw: np.ndarray, wl: np.ndarray) -> dict[str, Any]:
    df = panel_metrics(pred, reference, raw, wl, Gates())
    v = evaluate_gates(df, Gates())
    return {
        "run": name,
        "psnr": v.psnr_mean,
        "psnr_std": v.psnr_std,
        "sam": v.sam_mean,
        "tail": v.tail_ratio,
        "roi": v.roi_ratio,
        "spurious": v.spurious_peaks,
        "downstream": float(df["downstream_err"].mean()),
        "ds_raw": float(df["downstream_err_raw"].mean()),
        "verdict": v.verdict + ("" if v.verdict == "pass" else f" ({','.join(v.failed_gates)})"),
    }


def classical(root: Path) -> list[dict[str, Any]]:
    panel = load_corpus(
        root / layout.PANEL_MANIFEST, root / layout.SPECTRA_DIR, wavelength_grid=root / layout.WAVELENGTH_GRID
    )
    raw, reference, wl = panel.raw.astype(np.float64), panel.reference.astype(np.float64), panel.wavelengths
    rows = [
        _row("raw" if name == "identity" else name, f(raw, wl), reference, raw, wl) for name, f in DENOISERS.items()
    ]
    return [*rows, _row("clean reference", reference, reference, raw, wl)]


def train_run(
    root: Path, out: Path, name: str, epochs: int, steps: int, seed: int, extra: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One training run on the fixed budget; `extra` overrides recipe fields (--set)."""
    from godrun.trainer.loop import train

    kind, size = name.split("-")
    over: dict[str, Any] = {**BUDGET, **(extra or {}), **SIZES[size], "epochs": epochs, "steps_per_epoch": steps}
    over["early_stop_patience"] = 0
    over |= {"film_hidden_dim": 16, "device": "cpu", "seed": seed}
    if kind == "clean":
        over |= {"noise2noise": False, "noise2noise_pairwise": False}
    if kind == "n2nnoref":  # Noise2Noise without clean training references (a real dataset's case)
        over["train_manifest"] = str(without_references(root))
    over |= {"log_dir": f"logs/{name}", "checkpoint_dir": f"checkpoints/{name}", "audit_log": f"logs/{name}/audit.log"}
    recipe = rooted(Recipe.model_validate(Recipe().model_dump() | over), root, out)
    return train(recipe, log=False).history


def without_references(root: Path) -> Path:
    """The training manifest with reference_path/reference_sha256 emptied (relative to `root`)."""
    rel = layout.SPECTRA_DIR / "manifest_train_noref.csv"
    train = pd.read_csv(root / layout.MANIFEST_TRAIN, dtype=str, keep_default_na=False)
    train[["reference_path", "reference_sha256"]] = ""
    atomic_write_text(root / rel, train.to_csv(index=False, lineterminator="\n"))
    return rel


def _history_row(name: str, h: dict[str, Any]) -> dict[str, Any]:
    passed = int(h["panel_gates_passed"])
    return {
        "run": name,
        "psnr": h["panel_psnr_mean"],
        "psnr_std": h["panel_psnr_std"],
        "sam": h["panel_sam_mean"],
        "tail": h["panel_tail_ratio"],
        "roi": h["panel_roi_ratio"],
        "spurious": h["panel_spurious"],
        "downstream": h["panel_downstream_err"],
        "ds_raw": h["panel_downstream_err_raw"],
        "verdict": "pass" if passed == 4 else f"fail ({passed}/4 gates)",
    }


def best_row(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch the trainer ranked best (gates passed first, then the composite score)."""
    return next(h for h in history if int(h["epoch"]) == int(history[-1]["best_epoch"]))


def roi_held(history: list[dict[str, Any]], floor: float = 0.9) -> str:
    """Whether the ROI ratio stayed >= floor at every epoch after the run first passed all four gates,
    and which later epochs failed a gate anyway (e.g. on a spurious dip)."""
    first = next((int(h["epoch"]) for h in history if int(h["panel_gates_passed"]) == 4), None)
    if first is None:
        return "never passed all gates"
    after = [h for h in history if int(h["epoch"]) >= first]
    low = min(float(h["panel_roi_ratio"]) for h in after)
    failed = [f"{h['epoch']} ({int(h['panel_spurious'])} spurious)" for h in after if int(h["panel_gates_passed"]) < 4]
    text = f"first pass epoch {first}; min ROI ratio after {low:.3f} ({'held' if low >= floor else 'DROPPED'})"
    return text + (f"; failed a gate again at epochs {', '.join(failed)}" if failed else "; passed every epoch after")


def plot(histories: dict[str, list[dict[str, Any]]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0 * len(CURVES), 3.4))
    axes = fig.subplots(1, len(CURVES))
    for ax, (key, label) in zip(axes, CURVES, strict=True):
        for name, hist in histories.items():
            ax.plot([h["epoch"] for h in hist], [h[key] for h in hist], marker=".", label=name)
        if key == "panel_downstream_err":  # raw's error: gate 4's bound
            first = next(iter(histories.values()))
            ax.axhline(first[0]["panel_downstream_err_raw"], color="grey", ls="--", lw=0.8)
        ax.set_title(label)
        ax.set_xlabel("epoch")
    axes[2].axhline(0.9, color="red", ls=":", lw=0.8)
    axes[0].axhline(18.0, color="red", ls=":", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)


def _field(text: str) -> tuple[str, Any]:
    """--set FIELD=VALUE: a recipe field and its YAML-typed value (checked when the recipe is built)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or key not in Recipe.model_fields:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with a recipe field, got {text!r}")
    return key, yaml.safe_load(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--runs", default="n2n-small,clean-small,n2n-medium,clean-medium")
    p.add_argument("--set", action="append", default=[], type=_field, help="recipe FIELD=VALUE for every run")
    p.add_argument("--out", type=Path, default=Path("bench-out/quality"))
    p.add_argument("--noise-profile", default="default", help="instrument noise profile of the corpus (docs/noise.md)")
    a = p.parse_args()
    extra = dict(a.set)
    a.out.mkdir(parents=True, exist_ok=True)
    tag = "" if a.noise_profile == "default" else f"-{Path(a.noise_profile).stem}"
    root = a.out / f"corpus-s{a.seed}-x{a.scale}{tag}"
    corpus(root, a.scale, a.seed, a.noise_profile)
    rows = classical(root)
    histories: dict[str, list[dict[str, Any]]] = {}
    notes = []
    for name in a.runs.split(","):
        hist = train_run(root, a.out / "runs", name, a.epochs, a.steps, a.seed, extra)
        histories[name] = hist
        best = best_row(hist)
        rows += [_history_row(f"{name} best (ep {best['epoch']})", best), _history_row(f"{name} last", hist[-1])]
        notes.append(f"{name}: {roi_held(hist)}")
        plot(histories, a.out / "learning_curves.png")
    table = pd.DataFrame(rows).set_index("run")[list(COLUMNS)]
    text = table.to_string(float_format="%.4g")
    gaps = []
    for size in SIZES:
        n2n, clean = histories.get(f"n2n-{size}"), histories.get(f"clean-{size}")
        if n2n and clean:
            gap = clean[-1]["panel_psnr_mean"] - n2n[-1]["panel_psnr_mean"]
            gaps.append(f"{size}: clean - N2N PSNR gap at the last epoch {gap:+.2f} dB")
        noref = histories.get(f"n2nnoref-{size}")
        if n2n and noref:
            d = {k: n2n[-1][f"panel_{k}"] - noref[-1][f"panel_{k}"] for k in ("psnr_mean", "sam_mean", "roi_ratio")}
            gaps.append(
                f"{size}: N2N with - without clean training references at the last epoch: PSNR "
                f"{d['psnr_mean']:+.2f} dB, SAM {d['sam_mean']:+.3f} deg, ROI {d['roi_ratio']:+.3f}"
            )
    header = f"corpus scale {a.scale} seed {a.seed} noise profile {a.noise_profile}; "
    header += f"budget {a.epochs} epochs x {a.steps} steps x bs {BUDGET['bs']}"
    header += "".join(f"; {k} {v}" for k, v in extra.items())
    report = "\n".join([header, "", text, "", *notes, *gaps])
    print(report)
    atomic_write_text(a.out / "table.md", report + "\n")
    print(f"\nlearning curves: {a.out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
