"""`godrun demo`: the whole GodRun on a scaled synthetic corpus, on this machine, in minutes.

Steps: synthesise the corpus -> build the panel and audits -> train the fold-02 warm start
(`godrun folds --quick`) -> write a GodRun manifest (the seed's recipe with the demo's smaller
model and schedule) -> `godrun run` it: training, panel evaluation, the four real gates.
`--fail` sabotages the warm start so the panel fails and the fallback (archive, failure doc,
Act B) runs end to end. Steps whose outputs already exist are reused; `--fresh` starts over.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from godrun.contract import files
from godrun.errors import InputError, tcp_port
from godrun.fsio import atomic_write_text, sha256_file
from godrun.local.cli import run_file
from godrun.spec import Recipe
from godrun.trainer.presets import DEMO_CORPUS_SCALE, DEMO_SEED, PRESETS

DEMO_NAME = "godrun-demo"
FOLD02 = Path(files.WARM_START)
SABOTAGED = Path("checkpoints/prod/sabotaged/mamba_tiny_uv_best.pt")
PANEL = files.PANEL_MANIFEST
# Seconds between the runner's looks at its stages: `godrun run` polls every second; the demo's stages last
# seconds, and each hand-over (training -> evaluation -> verdict) waits up to one poll.
DEMO_POLL_S = 0.25


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="godrun demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--workdir", type=Path, default=Path(DEMO_NAME), help=f"where everything goes (default: ./{DEMO_NAME})"
    )
    p.add_argument("--fail", action="store_true", help="sabotage the warm start to show the Failed-ActB path")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"corpus and training seed (default: {DEMO_SEED})")
    p.add_argument(
        "--scale", type=float, default=DEMO_CORPUS_SCALE, help=f"corpus scale (default: {DEMO_CORPUS_SCALE})"
    )
    p.add_argument("--fresh", action="store_true", help="delete the workdir first")
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="only fill the workdir (corpus, panel, fold-02 warm start; with --fail the sabotaged one too) and "
        "stop: how a cluster volume is prepared for manifests/run-cpu (manifests/run-cpu/prepare-workspace.yaml)",
    )
    p.add_argument("--metrics-port", type=tcp_port, help="serve the controller's Prometheus metrics on this port")
    return p


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _step(n: int, title: str) -> float:
    print(f"\n[{n}/4] {title}", flush=True)
    return time.monotonic()


def _done(t0: float, what: str) -> None:
    print(f"      {what} ({time.monotonic() - t0:.1f} s)", flush=True)


def prepare_data(scale: float, seed: int) -> None:
    from godrun.data.cli import main as data_main

    t0 = _step(1, f"synthetic corpus (scale {scale}, seed {seed}) and validation panel")
    if PANEL.exists():
        _done(t0, "reusing data/")
        return
    if data_main(["synth", "--out", ".", "--scale", str(scale), "--seed", str(seed)]) not in (0, None):
        raise InputError("corpus synthesis failed")
    if data_main(["panel", "--root", "."]) not in (0, None):
        raise InputError("panel construction failed")
    _done(t0, f"wrote data/ (panel sha256 {sha256_file(PANEL)[:12]}...)")


def prepare_warm_start(seed: int) -> None:
    from godrun.trainer.folds import main as folds_main

    t0 = _step(2, "fold-02 warm start (godrun folds --quick)")
    if FOLD02.exists():
        _done(t0, f"reusing {FOLD02}")
        return
    folds_main(["--quick", "--seed", str(seed)])
    _done(t0, f"wrote {FOLD02}")


def sabotage(src: Path, dest: Path, seed: int) -> None:
    """A warm start no short run can repair: every weight replaced by large random values."""
    import torch

    from godrun.model.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(src)
    gen = torch.Generator().manual_seed(seed)

    def scrambled(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: torch.randn(v.shape, generator=gen) * 3.0 if v.is_floating_point() else v for k, v in state.items()}

    ckpt.model = scrambled(ckpt.model)  # the model's weights first, then the EMA's: the same draws as before
    if ckpt.ema:
        ckpt.ema = scrambled(ckpt.ema)
    save_checkpoint(dest, ckpt)


def demo_manifest(fail: bool, seed: int) -> dict[str, Any]:
    recipe = Recipe.model_validate(Recipe().model_dump() | PRESETS["demo"] | {"seed": seed})
    training = recipe.model_dump(mode="json")
    fallback: dict[str, Any] = {"archive": True}
    panel: dict[str, Any] = {"expectedHash": sha256_file(PANEL)}
    if fail:
        # A sabotaged warm start and too little training to recover from it, without the subspace prior:
        # with it the model takes its level from the measurement and its shape from the training family,
        # and a scrambled network still ships (26.6 dB on seed 2; docs/noise.md).
        # Its own folders, so it never touches the shipped run's checkpoints, logs or outputs.
        training |= {
            "init_checkpoint": str(SABOTAGED),
            "subspace_rank": 0,
            "epochs": 1,
            "steps_per_epoch": 2,
            "lr": 1e-5,
            "lr_min": 1e-6,
            "checkpoint_dir": "checkpoints/god_run_fail",
            "log_dir": "logs/god_run_fail",
            "audit_log": "logs/god_run_fail/auditing_manifest.log",
        }
        fallback |= {"launchActB": True, "actB": {"epochs": 1}}
        panel["outputDir"] = "final_analytics/panel_eval_fail"
    name = f"{DEMO_NAME}-fail" if fail else DEMO_NAME
    return {
        "apiVersion": "godrun.io/v1alpha1",
        "kind": "GodRun",
        "metadata": {"name": name},
        "spec": {
            "image": "ghcr.io/godrun/trainer:0.1.0",
            "resources": {"gpus": 0},
            "training": training,
            "panel": panel,
            "fallback": fallback,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scale <= 0:
        raise InputError(f"--scale must be > 0, got {args.scale}")
    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with _cwd(args.workdir):
        prepare_data(args.scale, args.seed)
        prepare_warm_start(args.seed)
        if args.fail:
            sabotage(FOLD02, SABOTAGED, args.seed)
        if args.prepare_only:
            print(f"\n      prepared {args.workdir.resolve()} ({time.monotonic() - started:.0f} s)", flush=True)
            return 0
        manifest = demo_manifest(args.fail, args.seed)
        path = Path(files.manifest_file(manifest["metadata"]["name"]))
        atomic_write_text(path, yaml.safe_dump(manifest, sort_keys=False))
        t0 = _step(3, f"GodRun {manifest['metadata']['name']} ({path}): train -> evaluate -> gates")
        status_file = files.status_file(manifest["metadata"]["name"]) if args.fail else files.STATUS_JSON
        status_path = Path(status_file)
        code = run_file(path, Path("."), status_path, metrics_port=args.metrics_port, poll=DEMO_POLL_S)
        _done(t0, "run finished")
    _step(4, "summary")
    print(f"      workdir {args.workdir.resolve()}; total {time.monotonic() - started:.0f} s")
    return code
