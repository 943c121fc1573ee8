"""`godrun data synth|panel|check`: synthesise the corpus, build panel + audits, check leakage."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from godrun.errors import InputError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="godrun data", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write the synthetic corpus (the seed's layout) under OUT/data")
    s.add_argument("--out", required=True, help="workspace root; the corpus goes to OUT/data")
    s.add_argument("--scale", type=float, default=1.0, help="fraction of replicates per group (0 < F <= 1)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="replace an existing OUT/data corpus")
    s.add_argument("--panel", action="store_true", help="also build the panel, training manifest and audits")
    pn = sub.add_parser("panel", help="build validation_panel.csv, manifest_train.csv, audits, manifest hashes")
    pn.add_argument("--root", required=True, help="workspace root holding data/")
    pn.add_argument("--no-verify", action="store_true", help="skip recomputing every file's sha256")
    c = sub.add_parser("check", help="leakage check of the training manifest against the panel")
    c.add_argument("--root", default=".", help="workspace root holding data/")
    c.add_argument("--train", help="training manifest (default ROOT/data/spectra_for_fold/manifest_train.csv)")
    c.add_argument("--panel", help="panel manifest (default ROOT/data/validation_panel.csv)")
    return p


def synth_into(out: Path, scale: float, seed: int, force: bool) -> int:
    """Build the corpus in a temp folder beside OUT/data and move it in whole (nothing half-written)."""
    from godrun.data.synth import synthesise

    if not (0 < scale <= 1):
        raise InputError(f"--scale must be in (0, 1], got {scale}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    target = out / "data"
    if target.exists() and not force:
        raise InputError(f"{target} already exists (use --force to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    _remove_debris(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".synth-{os.getpid()}-", dir=out))
    try:
        manifest = synthesise(tmp, scale=scale, seed=seed)
        old = None
        if target.exists():
            old = out / f".data-old-{os.getpid()}"
            target.rename(old)
        (tmp / "data").rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(manifest)


def _remove_debris(out: Path) -> None:
    """What a killed `data synth` left in OUT (`.synth-<pid>-*`, `.data-old-<pid>`): removed once its pid is gone."""
    for entry in out.iterdir():
        m = re.fullmatch(r"\.(?:synth-(\d+)-\w+|data-old-(\d+))", entry.name)
        if m is None or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(m.group(1) or m.group(2))
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "synth":
        t0 = time.perf_counter()
        n = synth_into(Path(args.out), args.scale, args.seed, args.force)
        print(f"wrote {n} spectra to {Path(args.out) / 'data'} in {time.perf_counter() - t0:.1f} s")
        if args.panel:
            args = argparse.Namespace(cmd="panel", root=args.out, no_verify=True)
    if args.cmd == "panel":
        from godrun.data.panel import build_panel

        hashes = build_panel(args.root, verify_files=not args.no_verify)
        for rel, sha in hashes.items():
            print(f"{sha}  {rel}")
    elif args.cmd == "check":
        from godrun.data.panel import check_root

        n_train, n_panel = check_root(args.root, args.train, args.panel)
        print(f"no leakage: {n_train} training rows, {n_panel} panel rows")
    return 0
