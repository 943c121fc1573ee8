"""`godrun data synth|panel|check|import|adopt`: synthesise the corpus, build panel + audits, check leakage,
import an instrument's files, add the hash columns to a seed-layout dataset."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from godrun.data.import_out import running_elsewhere
from godrun.errors import InputError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="godrun data", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write the synthetic corpus (the seed's layout) under OUT/data")
    s.add_argument("--out", required=True, help="workspace root; the corpus goes to OUT/data")
    s.add_argument("--scale", type=float, default=1.0, help="fraction of replicates per group (0 < F <= 1)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="replace an existing OUT/data corpus")
    s.add_argument(
        "--noise-profile",
        default="default",
        metavar="NAME|PATH",
        help="instrument noise profile: a packaged one (default, skspec-fit) or a JSON file (docs/noise.md)",
    )
    s.add_argument("--panel", action="store_true", help="also build the panel, training manifest and audits")
    pn = sub.add_parser("panel", help="build validation_panel.csv, manifest_train.csv, audits, manifest hashes")
    pn.add_argument("--root", required=True, help="workspace root holding data/")
    pn.add_argument("--no-verify", action="store_true", help="skip recomputing every file's sha256")
    _panel_group_flag(pn)
    c = sub.add_parser("check", help="leakage check of the training manifest against the panel")
    c.add_argument("--root", default=".", help="workspace root holding data/")
    c.add_argument("--train", help="training manifest (default ROOT/data/spectra_for_fold/manifest_train.csv)")
    c.add_argument("--panel", help="panel manifest (default ROOT/data/validation_panel.csv)")
    _import_parser(sub)
    ad = sub.add_parser("adopt", help="write the missing content_sha256/reference_sha256 columns into ROOT's manifests")
    ad.add_argument("root", help="workspace root holding data/ in the seed's layout")
    return p


def _panel_group_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--panel-group",
        action="append",
        default=[],
        metavar="G",
        help="a group_id the validation panel holds out whole (repeatable; default: the seed's three where present)",
    )


def _import_parser(sub: argparse._SubParsersAction) -> None:
    from godrun.data.resample import FILLS
    from godrun.data.units import UNITS

    im = sub.add_parser("import", help="an instrument's spectrum files + META.csv as a seed-layout dataset in OUT")
    im.add_argument("spectra_dir", metavar="SPECTRA_DIR", help="folder holding the spectrum files")
    im.add_argument("--metadata", required=True, metavar="META.csv", help="one row per spectrum (file, group_id, ...)")
    im.add_argument("--out", required=True, help="workspace root to create (must not exist or be empty)")
    _panel_group_flag(im)
    im.add_argument(
        "--references",
        choices=("replicate-mean",),
        help="panel references: the mean of the other replicates of the same sample (default: reference_file)",
    )
    im.add_argument("--unit", help=f"unit of files that state none ({', '.join(UNITS)}, or a usual spelling)")
    im.add_argument("--to-unit", help="convert every spectrum to this unit (absorbance <-> (%%)transmittance)")
    im.add_argument("--fill", choices=FILLS, default="none", help="edge: extend a partial range by its end values")


def synth_into(out: Path, scale: float, seed: int, force: bool, noise_profile: str = "default") -> int:
    """Build the corpus in a temp folder beside OUT/data and move it in whole (nothing half-written)."""
    from godrun.data.noise import load_profile
    from godrun.data.synth import synthesise

    if not (0 < scale <= 1):
        raise InputError(f"--scale must be in (0, 1], got {scale}")
    profile = load_profile(noise_profile)  # bad profile: exit 2 before anything is written
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    target = out / "data"
    if target.exists() and not force:
        raise InputError(f"{target} already exists (use --force to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    _remove_debris(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".synth-{os.getpid()}-", dir=out))
    try:
        manifest = synthesise(tmp, scale=scale, seed=seed, noise_profile=profile)
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
        if not running_elsewhere(pid):
            shutil.rmtree(entry, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "synth":
        t0 = time.perf_counter()
        n = synth_into(Path(args.out), args.scale, args.seed, args.force, args.noise_profile)
        took = time.perf_counter() - t0
        print(f"wrote {n} spectra to {Path(args.out) / 'data'} (noise profile {args.noise_profile}) in {took:.1f} s")
        if args.panel:
            args = argparse.Namespace(cmd="panel", root=args.out, no_verify=True, panel_group=None)
    if args.cmd == "panel":
        from godrun.data.panel import build_panel

        hashes = build_panel(
            args.root, verify_files=not args.no_verify, panel_groups=getattr(args, "panel_group", None)
        )
        for rel, sha in hashes.items():
            print(f"{sha}  {rel}")
    elif args.cmd == "import":
        from godrun.data.importer import ImportOptions, import_dataset

        opts = ImportOptions(
            Path(args.spectra_dir), Path(args.metadata), Path(args.out), args.panel_group, args.references,
            args.unit, args.to_unit, args.fill,
        )  # fmt: skip
        t0 = time.perf_counter()
        summary = import_dataset(opts)
        print(
            f"imported {summary['spectra']} spectra ({summary['train_rows']} training, {summary['panel_rows']} panel; "
            f"unit {summary['unit']}) into {args.out} in {time.perf_counter() - t0:.1f} s"
        )
        for rel, sha in summary["hashes"].items():
            print(f"{sha}  {rel}")
    elif args.cmd == "adopt":
        from godrun.data.adopt import adopt

        for line in adopt(Path(args.root)):
            print(line)
    elif args.cmd == "check":
        from godrun.data.panel import check_root

        n_train, n_panel = check_root(args.root, args.train, args.panel)
        print(f"no leakage: {n_train} training rows, {n_panel} panel rows")
    return 0
