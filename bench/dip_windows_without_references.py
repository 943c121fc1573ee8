"""Where the dip loss can find its windows when training rows have no clean reference.

The dip loss measures prediction and target in gate 3's windows, which the trainer takes from each row's clean
reference. Without one (a real dataset: replicates only) the windows must come from what the data have. On the
synthetic corpus, whose clean references are known, this compares gate 3's windows found on
  * the partner replicate alone (what the loss does when it is given no windows: detection on its target),
  * the pair's mean (two replicates),
  * the group's replicate mean (every replicate of the group: the choice in godrun/trainer/dataset.py
    replicate_mean_references),
against the windows on the clean reference: recall (a reference window overlapped by a found one), spurious
windows (found, overlapping no reference window) per spectrum, and the mean |edge error| (nm) of matched ones.

    python bench/dip_windows_without_references.py [scale] [seed]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from godrun.data import layout
from godrun.data.cli import synth_into
from godrun.data.loader import load_corpus
from godrun.gates.metrics import dip_windows
from godrun.spec import SEED_DETECTOR
from godrun.trainer.dataset import partners, replicate_mean_references

MAX_DIPS = 4


def compare(found: np.ndarray, truth: np.ndarray, wl: np.ndarray) -> tuple[float, float, float]:
    """(recall, spurious per spectrum, mean |edge error| nm) of `found` windows against `truth` [N, M, 2]."""
    hit = total = spurious = 0
    errors: list[float] = []
    for f_rows, t_rows in zip(found, truth, strict=True):
        t_ok = [w for w in t_rows if w[0] >= 0]
        f_ok = [w for w in f_rows if w[0] >= 0]
        total += len(t_ok)
        for t in t_ok:
            over = [f for f in f_ok if f[0] <= t[1] and t[0] <= f[1]]
            if over:
                hit += 1
                best = min(over, key=lambda f: abs(f[0] - t[0]) + abs(f[1] - t[1]))
                errors.append((abs(wl[best[0]] - wl[t[0]]) + abs(wl[best[1]] - wl[t[1]])) / 2)
        spurious += sum(not any(f[0] <= t[1] and t[0] <= f[1] for t in t_ok) for f in f_ok)
    return hit / max(total, 1), spurious / len(found), float(np.mean(errors)) if errors else float("nan")


def main(argv: list[str]) -> None:
    scale = float(argv[0]) if argv else 0.1
    seed = int(argv[1]) if len(argv) > 1 else 0
    with tempfile.TemporaryDirectory() as tmp:
        synth_into(Path(tmp), scale, seed, False)
        c = load_corpus(Path(tmp) / layout.MANIFEST_ALL, Path(tmp) / layout.SPECTRA_DIR)
    wl, cfg = c.wavelengths, SEED_DETECTOR
    groups = c.meta["group_id"].astype(str).to_numpy()
    partner = partners(c.meta)
    truth = dip_windows(c.reference.astype(np.float64), wl, cfg, MAX_DIPS)
    no_ref = np.zeros(len(groups), bool)
    sources = {
        "partner replicate": c.raw[partner],
        "pair mean (2)": (c.raw + c.raw[partner]) / 2,
        "group replicate mean": replicate_mean_references(c.raw, c.reference, no_ref, groups),
    }
    print(f"synthetic corpus scale {scale} seed {seed}: {len(groups)} spectra, {int((truth[..., 0] >= 0).sum())} "
          f"reference dips; gate-3 detector {cfg}")  # fmt: skip
    print(f"{'windows from':<22} {'recall':>7} {'spurious/spectrum':>18} {'edge error nm':>14}")
    for name, y in sources.items():
        r, s, e = compare(dip_windows(y.astype(np.float64), wl, cfg, MAX_DIPS), truth, wl)
        print(f"{name:<22} {r:7.3f} {s:18.3f} {e:14.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
