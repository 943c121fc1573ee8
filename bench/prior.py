"""The subspace prior's cost: its batched least squares against the per-row form it replaced, side by side.

`_Columns.solve` builds each row's normal equations with the windows as the batch (each point's outer product
a aᵀ, formed once per fit, weighted by the kept points: one matrix product per window). The form before it
multiplied the kept points into a [B, W, n, p] copy of the columns per row and took a batched product per row
and window; it is kept here only as the comparison. Prints ms per solve for both (the same inputs, best of
`--repeat`), their ratio and the largest difference of the fits they give, and the prior's forward (training
mode: the fit the trainer runs each step) at the demo's and the bench's batch sizes, on a prior fitted to a
synthetic corpus (default profile).

    python bench/prior.py [--threads 1] [--repeat 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from godrun.contract import files
from godrun.data.cli import main as data_main
from godrun.data.loader import load_corpus
from godrun.model.subspace import N_LEVEL, RIDGE, SubspacePrior, _Columns, _combine, _robust_keep, _unit_columns
from godrun.trainer.dataset import partners


def solve_per_row(a: torch.Tensor, keep: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The form `_Columns.solve` replaced: the kept points times a [B, W, n, p] copy of the columns, per row."""
    akt = (keep[..., None] * a).transpose(-1, -2)
    ridge = torch.eye(a.shape[-1], dtype=a.dtype) * RIDGE
    return torch.linalg.solve(akt @ a + ridge, (akt @ b[..., None]).squeeze(-1))


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def fitted_prior(root: Path) -> tuple[SubspacePrior, torch.Tensor]:
    """A prior (the recipe's rank 8, window 151) fitted to a scale-0.05 synthetic corpus; its raw spectra."""
    data_main(["synth", "--out", str(root), "--scale", "0.05", "--seed", "0", "--panel"])
    folder = root / files.SPECTRA_DIR
    corpus = load_corpus(root / files.MANIFEST_TRAIN, folder, require_references=False)
    raw = np.asarray(corpus.raw, np.float64)
    prior = SubspacePrior(raw.shape[1], 8, 151)
    prior.fit(raw, partners(corpus.meta))
    return prior.train(), torch.from_numpy(raw).float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        prior, raw = fitted_prior(Path(tmp))
    a = _unit_columns(prior.basis.double() * prior.weight.double()[..., None])
    n_win, n, n_cols = a.shape
    columns = _Columns(a)
    print(
        f"prior: {n_win} windows of {n} points, {n_cols} columns ({N_LEVEL} level + rank {n_cols - N_LEVEL}); "
        f"{args.threads} thread(s), best of {args.repeat}"
    )
    print(f"{'rows':>5} {'per-row ms':>11} {'batched ms':>11} {'ratio':>6} {'max |Δfit|':>11} {'forward ms':>11}")
    for rows in (32, 40, 256):
        x = raw[:rows]
        idx = prior._index()
        b = x.double()[:, idx].view(-1, n_win, n) * prior.weight.double()
        keep = _robust_keep(columns, b)
        diff = (_combine(a, solve_per_row(a, keep, b)) - _combine(a, columns.solve(keep, b))).abs().max().item()
        old = best_ms(lambda: solve_per_row(a, keep, b), args.repeat)  # noqa: B023 (called at once)
        new = best_ms(lambda: columns.solve(keep, b), args.repeat)  # noqa: B023
        fwd = best_ms(lambda: prior(x, x), max(3, args.repeat // 4))  # noqa: B023
        print(f"{rows:>5} {old:>11.2f} {new:>11.2f} {old / new:>6.1f} {diff:>11.1e} {fwd:>11.1f}")


if __name__ == "__main__":
    main()
