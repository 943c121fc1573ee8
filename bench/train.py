"""Training throughput on CPU: spectra/s and peak RSS per preset, and epochs/minute of the demo preset.

    .venv/bin/python bench/train.py [--threads 2] [--full-bs 8] [--skip-full] [--corpus DIR]

Rows: `tiny` and `demo` presets (a few optimiser steps each, after one warm-up step) and the seed's full
model size (d_model 384, n_layers 8, d_state 16) for ONE step at a small batch (--full-bs, default 8;
the seed's bs 600 is a GPU batch). Steps use the real loss (dip + derivative terms) on random
spectra shaped like the corpus. Peak RSS is the process high-water mark after each row (it only grows).
With --corpus (a workspace made by `godrun data synth` + `panel`) the demo preset is also trained for
real for two epochs, giving epochs/minute including the per-epoch panel.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from godrun.model.inference import build_model
from godrun.trainer.losses import SpectralLoss
from godrun.trainer.presets import preset_recipe, rooted


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


FakeBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]


def fake_batch(bs: int, n_cond: int, gen: torch.Generator) -> FakeBatch:
    wl = torch.linspace(200, 800, 601)
    base = 0.6 + 0.1 * torch.sin(wl / 90.0)
    dip = 1 - 0.08 * torch.exp(-0.5 * ((wl - 400.0) / 6.0) ** 2)
    clean = (base * dip).expand(bs, -1)
    x = clean + 0.02 * torch.randn(bs, 601, generator=gen)
    off, sc = x.median(1).values, x.std(1)
    norm = (x - off[:, None]) / sc[:, None]
    tgt = (clean + 0.02 * torch.randn(bs, 601, generator=gen) - off[:, None]) / sc[:, None]
    cond = torch.randn(bs, n_cond, generator=gen) if n_cond else None
    return norm, tgt, cond, off, sc, wl


def time_steps(name: str, steps: int, **override) -> tuple[float, float]:
    recipe = preset_recipe(name, init_checkpoint=None, **override)
    torch.manual_seed(0)
    model = build_model(recipe)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    n_cond = len(recipe.film_features) if recipe.geometry_film else 0
    x, y, cond, off, sc, wl = fake_batch(recipe.bs, n_cond, torch.Generator().manual_seed(0))
    loss_fn = SpectralLoss(recipe, wl, None)
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and is not counted
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.amp):
            pred = model(x, cond)
        loss, _ = loss_fn(pred, y, off, sc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    per_step = float(np.mean(times[1:])) if steps else times[0]
    return recipe.bs / per_step, per_step


def demo_epochs_per_minute(corpus: Path) -> tuple[float, float]:
    from godrun.trainer.loop import train

    out = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    try:
        recipe = rooted(preset_recipe("demo", init_checkpoint=None, epochs=2, early_stop_patience=0), corpus, out)
        t0 = time.perf_counter()
        result = train(recipe, log=False)
        minutes = (time.perf_counter() - t0) / 60.0
        return len(result.history) / minutes, float(np.mean([r["spectra_per_s"] for r in result.history]))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--full-bs", type=int, default=8)
    p.add_argument("--skip-full", action="store_true")
    p.add_argument("--corpus", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU")
    print(f"{'preset':<26} {'bs':>4} {'s/step':>8} {'spectra/s':>10} {'peak RSS MiB':>13}")
    rows: list[tuple[str, int, dict[str, object]]] = [("tiny", args.steps, {}), ("demo", args.steps, {})]
    if not args.skip_full:
        rows.append(("seed (full size, 1 step)", 1, {"bs": args.full_bs, "device": "cpu"}))
    for label, steps, over in rows:
        name = label.split()[0]
        rate, per_step = time_steps(name, steps, **over)
        bs = over.get("bs", preset_recipe(name).bs)
        print(f"{label:<26} {bs:>4} {per_step:>8.3f} {rate:>10.3g} {peak_rss_mib():>13.0f}", flush=True)
    if args.corpus is not None:
        epm, sps = demo_epochs_per_minute(args.corpus)
        print(f"demo preset on {args.corpus}: {epm:.2f} epochs/minute ({sps:.0f} spectra/s incl. data, excl. panel)")


if __name__ == "__main__":
    main()
