"""Per epoch: the panel's PSNR and the EMA model's error on the panel and on training rows (docs/noise.md).

    PYTHONPATH=$PWD .venv/bin/python bench/decline.py [--seed 11] [--scale 0.2] [--noise-profile skspec-fit]
        [--run clean-small|n2n-small] [--epochs 15] [--steps 40] [--set FIELD=VALUE ...] [--out bench-out/decline]

bench/quality.py's run on its budget, with one line per epoch: panel PSNR, the rms error against the clean
references of the panel and of the first 256 training rows (raw's beside them), the loss's MSE and dip terms and
the gates passed. A decline on the training rows as well as on the panel is not over-fitting; a loss term far
above the model's error says what drives the gradient. How the mid-run decline under skspec-fit was traced to
the cutout's target (`--set cutout_prob=0`) and to the warm-up both scans of a Noise2Noise pair share.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from quality import _field, corpus, train_run

from godrun.model.inference import denoise
from godrun.trainer import dataset as ds
from godrun.trainer import loop

ROWS = 256


def rms_errors(model: torch.nn.Module, data: ds.SplitData, t: loop.Trainer) -> tuple[float, float]:
    """(model, raw) rms error against the clean references on the first ROWS rows, the model as the panel and
    the evaluator apply it (despike, network, guarded prior, unsupported dips filled)."""
    idx = torch.arange(min(ROWS, len(data)))
    cond = None if data.cond is None else data.cond[idx]
    params = {"offset": data.offset[idx].numpy(), "scale": data.scale[idx].numpy()}
    pred = denoise(model, data.x[idx], params, cond, t.recipe, t.wl, batch_size=64, device=torch.device("cpu"))
    pred = pred.astype(np.float64)
    reference, raw = data.reference[idx].double().numpy(), data.raw[idx].double().numpy()
    return float(np.sqrt(((pred - reference) ** 2).mean())), float(np.sqrt(((raw - reference) ** 2).mean()))


def traced_end_epoch() -> None:
    """Wrap the trainer's end of epoch to print one JSON line (before the panel judges the epoch)."""
    original = loop.Trainer._end_epoch

    def end_epoch(self: loop.Trainer, epoch: int, losses: dict[str, float], t0: float, t_train: float) -> bool:
        model = self.ema.module if self.ema is not None else self.model
        train, train_raw = rms_errors(model, self.train_data, self)
        panel, panel_raw = rms_errors(model, self.panel, self)
        done = original(self, epoch, losses, t0, t_train)
        h: dict[str, Any] = self.history[-1]
        row = {"epoch": epoch, "psnr": round(h["panel_psnr_mean"], 2), "panel_rms": f"{panel:.3g}"}
        row |= {"panel_raw": f"{panel_raw:.3g}", "train_rms": f"{train:.3g}", "train_raw": f"{train_raw:.3g}"}
        row |= {"mse": f"{losses['mse']:.3g}", "dip": f"{losses.get('dip') or 0:.3g}", "gates": h["panel_gates_passed"]}
        print(json.dumps(row), flush=True)
        return done

    loop.Trainer._end_epoch = end_epoch  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--scale", type=float, default=0.2)
    p.add_argument("--noise-profile", default="skspec-fit")
    p.add_argument("--run", default="clean-small", help="a bench/quality.py run kind: clean-small, n2n-small, ...")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--set", action="append", default=[], type=_field, help="recipe FIELD=VALUE")
    p.add_argument("--out", type=Path, default=Path("bench-out/decline"))
    a = p.parse_args()
    root = a.out / f"corpus-s{a.seed}-x{a.scale}-{Path(a.noise_profile).stem}"
    corpus(root, a.scale, a.seed, a.noise_profile)
    traced_end_epoch()
    tag = "-".join(f"{k}={v}" for k, v in a.set) or "recipe"
    print(f"corpus seed {a.seed} scale {a.scale} profile {a.noise_profile}; {a.run}; {tag}")
    train_run(root, a.out / f"runs-{a.run}-{tag}", a.run, a.epochs, a.steps, a.seed, dict(a.set))


if __name__ == "__main__":
    main()
