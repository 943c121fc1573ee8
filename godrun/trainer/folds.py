"""`godrun folds`: the Track_H 3/1/1 group folds that produce the fold-02 warm start.

Training groups (panel excluded) are shuffled with the seed and cut into five parts. Fold k tests on
part k, validates (early stopping, best checkpoint) on part k+1 and trains on the other three, so no
group is ever split. Fold manifests go to data/folds/Track_H_fold_0k/{train,val,test}.csv and each
fold's checkpoints to checkpoints/prod/Track_H_fold_0k/ (mamba_tiny_uv_best.pt is the warm start).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.contract import files
from godrun.errors import InputError
from godrun.fsio import atomic_write_text
from godrun.spec import Recipe
from godrun.trainer.presets import PRESETS, preset_recipe

N_PARTS = 5


def group_parts(groups: Sequence[str], seed: int, n_parts: int = N_PARTS) -> list[list[str]]:
    uniq = sorted(set(groups))
    if len(uniq) < n_parts:
        raise InputError(f"need at least {n_parts} groups for {n_parts} folds, found {len(uniq)}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    return [sorted(uniq[i] for i in part) for part in np.array_split(order, n_parts)]


def split_fold(parts: list[list[str]], k: int) -> dict[str, list[str]]:
    """Fold k (1-based): test = part k, val = part k+1 (cyclic), train = the other three (3/1/1)."""
    n = len(parts)
    test, val = (k - 1) % n, k % n
    train = [g for i, p in enumerate(parts) if i not in (test, val) for g in p]
    return {"train": train, "val": parts[val], "test": parts[test]}


def write_fold_manifests(manifest: pd.DataFrame, split: dict[str, list[str]], out_dir: Path) -> dict[str, Path]:
    paths = {}
    for name, groups in split.items():
        path = out_dir / f"{name}.csv"
        atomic_write_text(path, manifest[manifest["group_id"].isin(groups)].to_csv(index=False))
        paths[name] = path
    return paths


def fold_recipe(base: Recipe, k: int, paths: dict[str, Path]) -> Recipe:
    name = files.fold_name(k)
    return base.model_copy(
        update={
            "train_manifest": str(paths["train"]),
            "val_manifest": str(paths["val"]),
            "init_checkpoint": None,
            "checkpoint_dir": str(files.PROD_DIR / name),
            "log_dir": f"logs/folds/{name}",
            "audit_log": files.audit_log(f"logs/folds/{name}"),
        }
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="godrun folds", description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="Which folds to train (1-5).")
    p.add_argument("--preset", choices=sorted(PRESETS), default="seed", help="Recipe preset (default: the seed's).")
    p.add_argument("--quick", action="store_true", help="Only fold 02 with the demo_fold preset (for the demo).")
    p.add_argument("--manifest", default=files.MANIFEST_TRAIN.as_posix(), help="Training manifest.")
    p.add_argument("--epochs", type=int, default=None, help="Override the preset's epoch cap.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the group shuffle and of training.")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="Override the preset's device.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folds, preset = ([2], "demo_fold") if args.quick else (args.folds, args.preset)
    bad = [k for k in folds if not 1 <= k <= N_PARTS]
    if bad:
        raise InputError(f"--folds: fold numbers run 1..{N_PARTS}, got {bad}")
    manifest_path = Path(args.manifest)
    if not manifest_path.is_file():
        raise InputError(f"--manifest: file not found: {manifest_path} (run `godrun data synth` first)")
    manifest = pd.read_csv(manifest_path)
    if "group_id" not in manifest.columns:
        raise InputError(f"{manifest_path}: no group_id column")
    parts = group_parts(manifest["group_id"].astype(str).tolist(), args.seed)
    overrides = {"seed": args.seed} | ({"epochs": args.epochs} if args.epochs else {})
    overrides |= {"device": args.device} if args.device else {}
    base = preset_recipe(preset, **overrides)
    from godrun.trainer.loop import train

    for k in folds:
        paths = write_fold_manifests(manifest, split_fold(parts, k), files.FOLD_DIR / files.fold_name(k))
        result = train(fold_recipe(base, k, paths))
        print(f"{files.fold_name(k)}: best epoch {result.best_epoch}, score {result.best_score:.3f}")
    return 0
