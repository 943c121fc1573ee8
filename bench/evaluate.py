"""Evaluator figures: the verdict table on the default synthetic panel, and panel evaluation time on CPU.

    .venv/bin/python bench/evaluate.py [--corpus /tmp/godrun_bench_corpus] [--threads 2]

1. Gate by gate, with numbers, for raw (identity), the clean reference, savgol, gaussian and wavelet on the
   750-spectrum panel of a scale-1 corpus (synthesised once into --corpus, reused afterwards).
2. Seconds to evaluate the panel (inference + metrics + gates + ranking) for 1, 2 and 4 tiny checkpoints on CPU,
   and the whole `evaluate_and_write` (CSV/JSON/report) for one; goal: <= 10 s for one checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from godrun.contract import files
from godrun.evaluator import outputs
from godrun.evaluator.denoisers import DENOISERS
from godrun.evaluator.panel import (
    Candidate,
    checkpoint_candidates,
    denoiser_candidate,
    evaluate_candidates,
    evaluate_prediction,
    load_panel,
)
from godrun.spec import FILM_FEATURES, Gates, Verdict
from godrun.tables import format_plain


def ensure_corpus(root: Path) -> Path:
    if not (root / files.PANEL_MANIFEST).is_file():
        from godrun.cli import main

        t0 = time.perf_counter()
        assert main(["data", "synth", "--out", str(root), "--scale", "1"]) == 0
        assert main(["data", "panel", "--root", str(root)]) == 0
        print(f"synthesised the scale-1 corpus into {root} in {time.perf_counter() - t0:.1f} s")
    return root


def gate_row(name: str, v: Verdict, seconds: float) -> list[str]:
    checks = {c.metric: c for g in v.gates for c in g.checks}
    mark = {g.name: ("pass" if g.passed else "FAIL") for g in v.gates}
    ds = checks["downstream_err_mean"]
    return [
        name,
        f"{v.psnr_mean:.2f} / {v.psnr_std:.2f} / {v.sam_mean:.2f}  {mark['aggregate']}",
        f"{v.tail_ratio:.3f}  {mark['tail']}",
        f"{v.roi_ratio:.3f}, {v.spurious_peaks} spur  {mark['roi']}",
        f"{ds.value:.3g} vs {ds.threshold:.3g}  {mark['downstream']}",
        v.verdict.upper(),
        f"{seconds:.1f}",
    ]


def verdict_table(panel, gates: Gates) -> None:
    header = ["method", "1 PSNR mean/std, SAM", "2 tail", "3 ROI, spurious", "4 downstream (vs raw)", "verdict", "s"]
    rows = []
    methods: dict[str, Callable[[], np.ndarray]] = {
        "raw (identity)": partial(DENOISERS["identity"], panel.raw, panel.wavelengths),
        "clean reference": panel.reference.copy,
    }
    methods.update({n: partial(DENOISERS[n], panel.raw, panel.wavelengths) for n in ("savgol", "gaussian", "wavelet")})
    for name, make in methods.items():
        t0 = time.perf_counter()
        _, verdict, _ = evaluate_prediction(panel, make(), gates)
        rows.append(gate_row(name, verdict, time.perf_counter() - t0))
    print(f"\nVerdict table, {len(panel.meta)}-spectrum panel (thresholds: PSNR mean >= {gates.psnr_mean_min:g}, "
          f"std <= {gates.psnr_std_max:g}, SAM <= {gates.sam_mean_max:g}; tail >= {gates.tail_fraction_min:g}; "
          f"ROI >= {gates.roi_pass_fraction_min:g} with {gates.spurious_peaks_max} spurious)")  # fmt: skip
    print(format_plain(header, rows))


def tiny_checkpoints(folder: Path, n: int) -> list[Path]:
    import torch

    from godrun.contract.checkpoint import Checkpoint, CheckpointMeta, CondStats
    from godrun.model.checkpoint import save_checkpoint
    from godrun.model.inference import build_model
    from godrun.model.normalise import norm_meta
    from godrun.trainer.presets import preset_recipe

    recipe = preset_recipe("tiny", init_checkpoint=None)
    k = len(FILM_FEATURES)
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = build_model(recipe)
        path = folder / f"tiny_{i}.pt"
        stats = CondStats(features=list(FILM_FEATURES), mean=[0.0] * k, std=[1.0] * k)
        state = model.state_dict()
        meta = CheckpointMeta(config=recipe.model_dump(), epoch=i, norm=norm_meta(), cond_stats=stats)
        save_checkpoint(path, Checkpoint(model=state, meta=meta, ema=state))
        paths.append(path)
    return paths


def timings(panel, gates: Gates) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = tiny_checkpoints(Path(tmp), 4)
        for n in (1, 2, 4):
            cands: list[Candidate] = checkpoint_candidates(paths[:n], device="cpu", batch_size=256)
            t0, c0 = time.perf_counter(), time.process_time()
            evaluate_candidates(panel, cands, gates)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append([str(n), f"{total:.2f}", f"{total / n:.2f}", f"{cpu:.2f}"])
        t0, c0 = time.perf_counter(), time.process_time()
        evaluate_candidates(panel, [denoiser_candidate("identity")], gates)
        metrics_only = (time.perf_counter() - t0, time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        outputs.evaluate_and_write(panel, checkpoint_candidates(paths[:1]), gates, output_dir=Path(tmp) / "out")
        full, full_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"\nTime to evaluate the {len(panel.meta)}-spectrum panel on CPU (tiny checkpoints: preset 'tiny'; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(format_plain(["checkpoints", "wall s", "wall s / checkpoint", "CPU s (all threads)"], rows))
    print(f"metrics + gates alone (identity, no inference): {metrics_only[0]:.2f} s wall, {metrics_only[1]:.2f} s CPU")
    print(f"one checkpoint incl. CSV/JSON/report.html: {full:.2f} s wall, {full_cpu:.2f} s CPU (goal <= 10 s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="/tmp/godrun_bench_corpus")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-timing", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    root = ensure_corpus(Path(args.corpus))
    t0 = time.perf_counter()
    panel = load_panel(
        root / files.PANEL_MANIFEST,
        root / files.SPECTRA_DIR,
        root / files.WAVELENGTH_GRID,
        metadata_csv=root / files.DOSE_FEATURES,
    )
    print(f"panel: {len(panel.meta)} spectra loaded in {time.perf_counter() - t0:.2f} s")
    gates = Gates()
    verdict_table(panel, gates)
    if not args.skip_timing:
        timings(panel, gates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
