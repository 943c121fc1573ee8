"""`godrun evaluate` / `python -m godrun.evaluator` / `scripts/evaluate_validation_panel.py`: the seed's panel QA.

Order of work (so bad input fails before anything expensive):
  1. arguments (inside the run volume when GODRUN_RUN_VOLUME names one; the failure doc only a regular .md),
     gate thresholds (godrun.contract.flags), --expected-hash against the panel manifest: a mismatch exits 2
     printing both hashes, before any checkpoint is read or model loaded;
  2. checkpoints listed and hashed, only those the trainer wrote kept (godrun/model/written.py: a *.pt it did
     not write is ignored with a message, one of its own whose bytes changed refused), or the --denoiser
     chosen; --downstream-script checked to exist; each checkpoint's hash checked again when it is loaded;
  3. panel loaded once, every spectrum and clean reference checked against the manifest's content_sha256 and
     reference_sha256 (so the pinned manifest hash covers them all), the ROI bounds checked against the grid;
     every candidate replayed and scored; ranked by godrun.gates.ranking (the trainer's ranking too);
  4. outputs written atomically to --output-dir;
  5. on a failed verdict with --archive-on-fail: run artefacts archived, a dated failure section appended;
  6. the compact verdict (with the archive folder) written to the termination log, the gate table printed.
Exit 0 whether the verdict is pass or fail; 2 for bad input.

Metrics are defined for every reference (godrun.gates.metrics): PSNR's peak is the reference's max − min,
floored at 5 % of its level (max |r|) and at 0.001 in the data's unit, so a flat reference (a blank, a
featureless control) gets a finite, meaningful PSNR instead of one set by its own noise (−238 dB was measured on
a real water blank); SAM is 0° between two zero vectors and 90° when only one is zero.

Downstream proxy (gate 4): always computed in-process by godrun.gates.metrics (the same function
scripts/downstream_proxy_eval.py runs). --downstream-script is the seed's flag: it must name an existing file
(a relative path is looked up from the cwd, then $GODRUN_HOME, the godrun source checkout and the image's
/opt/godrun) and its sha256 goes into hashes.json; it is not executed as a subprocess.

What --archive-on-fail copies (--run-dir, one or more paths, repeatable): by default the checkpoint folder, the
trainer's log folder beside it (logs/<checkpoint folder name>, e.g. logs/god_run, when it exists) and the output
folder. The archive is <archive-dir>/<run-name with '-' as '_'>_failed_YYYYMMDD[_N] (UTC date), so the GodRun
`god-run` archives to the seed's artifacts/god_run_failed_YYYYMMDD.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from godrun.contract import files
from godrun.contract.flags import add_gate_flags, gates_from_args
from godrun.errors import InputError
from godrun.evaluator.denoisers import DENOISERS
from godrun.fsio import sha256_file, termination_path, write_termination
from godrun.paths import confine, writable_file
from godrun.spec import Gates, PanelSpec, Recipe, Verdict
from godrun.tables import print_gate_table

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def add_panel_flags(parser: argparse.ArgumentParser, *, metadata_help: str) -> None:
    """The panel's inputs, as in the seed's commands (defaults from godrun.spec.PanelSpec)."""
    panel = PanelSpec()
    parser.add_argument("--manifest", default=panel.manifest, help="Validation panel CSV.")
    parser.add_argument("--root-dir", default=panel.root_dir, help="Folder the panel's spectrum paths are relative to.")
    parser.add_argument("--baseline-dir", default=None, help="Folder of the clean references (default: --root-dir).")
    parser.add_argument("--metadata", default=panel.metadata, help=metadata_help)
    parser.add_argument("--wavelength-grid", default=panel.wavelength_grid, help="wavelength_grid.npy (nm).")


def build_parser() -> argparse.ArgumentParser:
    panel = PanelSpec()
    p = argparse.ArgumentParser(
        prog="godrun evaluate",
        description="Evaluate every checkpoint (or a classical denoiser) on the fixed validation panel against the "
        "four readiness gates; rank them; write the report and the verdict. Exit 0 on pass or fail, 2 on bad input.",
    )
    p.add_argument(
        "--checkpoint-dir",
        default=Recipe().checkpoint_dir,
        help="Folder whose *.pt files are ranked: those its checkpoints_written.json (the trainer's record) lists "
        "with their sha256, others ignored; every *.pt when it has no record.",
    )
    p.add_argument(
        "--written-only",
        action="store_true",
        help="Refuse a --checkpoint-dir without the trainer's record (a GodRun's evaluator passes it).",
    )
    add_panel_flags(p, metadata_help="dose_features.csv (FiLM inputs of the checkpoints).")
    p.add_argument("--output-dir", default=panel.output_dir, help="Where outputs are written.")
    p.add_argument(
        "--downstream-script",
        default=None,
        help="Downstream proxy script; must exist (recorded, gate 4 runs the same proxy in-process).",
    )
    p.add_argument("--expected-hash", default=None, help="sha256 of --manifest; a mismatch exits 2 before inference.")
    p.add_argument(
        "--denoiser",
        choices=tuple(DENOISERS),
        default=None,
        help="Evaluate this classical method instead of the checkpoints (same outputs).",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto).")
    p.add_argument("--batch-size", type=int, default=256, help="Spectra per inference batch.")
    p.add_argument(
        "--termination-log",
        default=None,
        help="Where the compact verdict JSON goes (default "
        "$GODRUN_TERMINATION_LOG, else /dev/termination-log when Kubernetes mounted it, else skipped).",
    )
    p.add_argument("--run-name", default="god_run", help="Name used in the archive folder and the analytics doc.")
    p.add_argument("--archive-on-fail", action="store_true", help="On a failed verdict: archive and document.")
    p.add_argument(
        "--run-dir",
        action="extend",
        nargs="+",
        default=None,
        help="What to archive (repeatable; default: checkpoint dir, logs/<its name> when present, output dir).",
    )
    p.add_argument("--archive-dir", default="artifacts", help="Parent of <run-name>_failed_YYYYMMDD[_N].")
    p.add_argument("--analytics-doc", default="final_analytics/reviewing_the_5fold_run.md", help="Failure doc.")
    add_gate_flags(p)
    return p


def check_panel_hash(manifest: Path, expected: str | None) -> str:
    """sha256 of the panel manifest; InputError (exit 2) naming both hashes when it is not the expected one."""
    if not manifest.is_file():
        raise InputError(f"--manifest: {manifest} does not exist")
    actual = sha256_file(manifest)
    if expected is not None:
        want = expected.strip().lower()
        if not _HEX64.match(want):
            raise InputError(f"--expected-hash: {expected!r} is not a 64-digit hex sha256")
        if want != actual:
            raise InputError(
                f"--expected-hash mismatch for panel {manifest}: expected {want}, actual {actual} "
                "(the panel changed; refusing to evaluate)"
            )
    return actual


IMAGE_HOME = Path("/opt/godrun")  # where the container image puts scripts/ (Dockerfile)


def script_roots() -> list[Path]:
    """Where a relative --downstream-script is looked up, in order: cwd, $GODRUN_HOME, source checkout, image."""
    import godrun

    roots = [Path.cwd()]
    if os.environ.get("GODRUN_HOME"):
        roots.append(Path(os.environ["GODRUN_HOME"]))
    return [*roots, Path(godrun.__file__).resolve().parent.parent, IMAGE_HOME]


def resolve_script(script: str) -> Path:
    """The downstream script as given, or (relative) under the first root that has it; else InputError."""
    path = Path(script)
    if path.is_file():
        return path
    if not path.is_absolute():
        for root in script_roots():
            if (root / path).is_file():
                return root / path
    raise InputError(f"--downstream-script: {script} does not exist")


def default_run_dirs(args: argparse.Namespace) -> list[Path]:
    """What --archive-on-fail copies without --run-dir: files.archived_paths with the seed's log folder (when
    present) and no checkpoints for a classical denoiser."""
    logs = files.seed_log_dir(args.checkpoint_dir)
    checkpoints = None if args.denoiser else str(args.checkpoint_dir)
    log_dir = str(logs) if not args.denoiser and logs.is_dir() else None
    return [Path(p) for p in files.archived_paths(checkpoints, log_dir, str(args.output_dir))]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    gates = gates_from_args(args)
    panel_sha = check_panel_hash(Path(args.manifest), args.expected_hash)  # before any checkpoint is touched
    candidates, ckpt_hashes = _candidates(args)
    script, metadata = _side_inputs(args)
    panel = _load_panel(args, panel_sha, metadata, gates)
    from godrun.evaluator.outputs import evaluate_and_write, training_history

    result = evaluate_and_write(
        panel,
        candidates,
        gates,
        output_dir=Path(args.output_dir),
        checkpoint_hashes=ckpt_hashes,
        extra_hashes=_input_hashes(args, script, metadata),
        root_dir=Path(args.root_dir),
        history=None if args.denoiser else training_history(Path(args.checkpoint_dir)),
    )
    # once per verdict: a retried evaluator (same run, panel, checkpoints, gates) finds what it did before
    inputs = {"panel": panel_sha, "checkpoints": sorted(ckpt_hashes.values()), "denoiser": args.denoiser}
    verdict, archive = _fallback(args, result.verdict, inputs | {"gates": gates.model_dump()})
    term = _write_termination(args, verdict)  # last: the controller reads the archive from it
    print_summary(verdict, result.ranking, result.report, term, archive)
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, every path among them confined to the run volume when there is one (godrun.paths)."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    for flag in ("checkpoint_dir", "manifest", "root_dir", "baseline_dir", "metadata", "wavelength_grid"):
        if getattr(args, flag):
            confine(getattr(args, flag), "--" + flag.replace("_", "-"))
    for flag in ("output_dir", "archive_dir", "termination_log"):
        if getattr(args, flag):
            confine(getattr(args, flag), "--" + flag.replace("_", "-"))
    for path in args.run_dir or []:
        confine(path, "--run-dir")
    if args.archive_on_fail:
        writable_file(args.analytics_doc, "--analytics-doc", (".md",))
        archive = Path(args.archive_dir)
        if archive.is_symlink() or (archive.exists() and not archive.is_dir()):
            raise InputError(f"--archive-dir {args.archive_dir}: exists and is not a folder (a file or a symlink)")
    for flag in ("output_dir", "checkpoint_dir"):
        value = getattr(args, flag, None)
        if value and Path(value).exists() and not Path(value).is_dir():
            raise InputError(f"--{flag.replace('_', '-')} {value}: exists and is not a folder")
    return args


def _candidates(args: argparse.Namespace) -> tuple[list[Any], dict[str, str]]:
    """The classical --denoiser, or every checkpoint in --checkpoint-dir (hashed, loaded lazily)."""
    from godrun.evaluator import panel as panel_mod

    if args.denoiser:
        return [panel_mod.denoiser_candidate(args.denoiser)], {}
    from godrun.model.written import written_only

    paths = panel_mod.list_checkpoints(Path(args.checkpoint_dir))
    hashes = {str(p): sha256_file(p) for p in paths}
    paths = written_only(paths, hashes, args.checkpoint_dir, args.written_only)
    hashes = {str(p): hashes[str(p)] for p in paths}
    from godrun.model.inference import resolve_device

    device = str(resolve_device(args.device))
    return panel_mod.checkpoint_candidates(paths, device=device, batch_size=args.batch_size, hashes=hashes), hashes


def _side_inputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """The downstream script (must exist) and the dose metadata (needed by FiLM checkpoints)."""
    script = resolve_script(args.downstream_script) if args.downstream_script else None
    for flag, value in (("--root-dir", args.root_dir), ("--wavelength-grid", args.wavelength_grid)):
        if not Path(value).exists():
            raise InputError(f"{flag}: {value} does not exist")
    if args.metadata and Path(args.metadata).exists() and not Path(args.metadata).is_file():
        raise InputError(f"--metadata {args.metadata}: not a regular file (a folder, FIFO or device)")
    metadata = Path(args.metadata) if args.metadata and Path(args.metadata).is_file() else None
    if args.metadata and metadata is None and not args.denoiser:
        raise InputError(f"--metadata: {args.metadata} does not exist")
    return script, metadata


def _load_panel(args: argparse.Namespace, panel_sha: str, metadata: Path | None, gates: Gates) -> Any:
    """The panel, every spectrum and reference checked against the (pinned) manifest; ROI inside its grid."""
    from godrun.data.loader import check_inside_grid
    from godrun.evaluator import panel as panel_mod

    panel = panel_mod.load_panel(
        Path(args.manifest),
        Path(args.root_dir),
        Path(args.wavelength_grid),
        baseline_dir=Path(args.baseline_dir) if args.baseline_dir else None,
        metadata_csv=metadata,
        manifest_sha256=panel_sha,
    )
    bounds = [("--roi-min-nm", gates.roi_min_nm), ("--roi-max-nm", gates.roi_max_nm)]
    check_inside_grid(bounds, panel.wavelengths, args.wavelength_grid)
    return panel


def _fallback(args: argparse.Namespace, verdict: Verdict, inputs: dict[str, Any]) -> tuple[Verdict, Path | None]:
    """On a failed verdict with --archive-on-fail: archive the run, append the dated failure section."""
    if verdict.verdict != "fail" or not args.archive_on_fail:
        return verdict, None
    from godrun.evaluator.fallback import append_failure_doc, archive_run, today_utc, verdict_key

    day = today_utc()
    run_dirs = [Path(d) for d in args.run_dir] if args.run_dir else default_run_dirs(args)
    key = verdict_key(args.run_name, verdict, inputs)
    # The seed's archive name (artifacts/god_run_failed_YYYYMMDD, _2, _3 ... when taken); the run's own
    # name goes into the failure doc that points at it.
    archive = archive_run(run_dirs, Path(args.archive_dir), day, key=key)
    verdict = verdict.model_copy(update={"archive": str(archive)})
    append_failure_doc(Path(args.analytics_doc), verdict, args.run_name, day, archive, key=key)
    return verdict, archive


def _write_termination(args: argparse.Namespace, verdict: Verdict) -> Path | None:
    from godrun.contract.termination import verdict_message

    term = termination_path(args.termination_log)
    if term is not None:
        write_termination(term, verdict_message(verdict))
    return term


def _input_hashes(args: argparse.Namespace, script: Path | None, metadata: Path | None) -> dict[str, Any]:
    grid = Path(args.wavelength_grid)
    out: dict[str, Any] = {"wavelength_grid": None}
    if grid.is_file():
        out["wavelength_grid"] = {"path": str(grid), "sha256": sha256_file(grid)}
    if metadata is not None:
        out["metadata"] = {"path": str(metadata), "sha256": sha256_file(metadata)}
    if script is not None:
        out["downstream_script"] = {"path": str(script), "sha256": sha256_file(script)}
    return out


def print_summary(
    verdict: Verdict, ranking: list[dict[str, Any]], report: Path, term: Path | None, archive: Path | None
) -> None:
    title = (
        f"verdict: {verdict.verdict.upper()}  (candidate {verdict.lineage.best_checkpoint}, "
        f"{verdict.checkpoints_evaluated} evaluated)"
    )
    print_gate_table(verdict, title)
    if len(ranking) > 1:
        print(
            "ranking: "
            + "; ".join(
                f"{r['rank']}. {Path(r['checkpoint']).name} ({r['gates_passed']}/4, {r['composite_score']:.4g})"
                for r in ranking[:5]
            )
        )
    print(f"report: {report}")
    if term is not None:
        print(f"verdict json: {term}")
    if archive is not None:
        print(f"archived: {archive}")


# --------------------------------------------------------------------------- downstream proxy on its own


def build_downstream_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/downstream_proxy_eval.py",
        description="Downstream proxy (gate 4) on its own: the baseline pipeline (local baseline removal + dip "
        "quantification in 10 nm ROI bands) run on a prediction and on the raw spectra, each compared with the "
        "same pipeline on the clean references.",
    )
    add_panel_flags(p, metadata_help="Accepted for the seed's command line; not needed here.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--predictions", default=None, help=".npy [N, L] in the manifest's row order.")
    src.add_argument("--denoiser", choices=tuple(DENOISERS), default=None, help="Classical method (default identity).")
    p.add_argument("--output-csv", default=files.DOWNSTREAM_CSV, help="Per-spectrum errors.")
    p.add_argument("--output-json", default=None, help="Summary JSON (default: beside the CSV).")
    add_gate_flags(p)
    return p


def downstream_main(argv: Sequence[str] | None = None) -> int:
    """Write per-spectrum downstream errors (CSV) and the gate-4 summary (JSON); print the summary."""
    import json

    import pandas as pd

    from godrun.evaluator.outputs import write_csv
    from godrun.evaluator.panel import load_panel
    from godrun.fsio import atomic_write_json
    from godrun.gates import metrics
    from godrun.inputs import load_array

    args = build_downstream_parser().parse_args(argv)
    gates = gates_from_args(args)
    panel = load_panel(
        Path(args.manifest),
        Path(args.root_dir),
        Path(args.wavelength_grid),
        baseline_dir=Path(args.baseline_dir) if args.baseline_dir else None,
    )
    if args.predictions:
        if not Path(args.predictions).is_file():
            raise InputError(f"--predictions: {args.predictions} does not exist")
        pred = load_array(args.predictions, "--predictions")
        if pred.shape != panel.reference.shape:
            raise InputError(f"--predictions: shape {pred.shape}, the panel is {panel.reference.shape}")
        source = str(args.predictions)
    else:
        name = args.denoiser or "identity"
        pred, source = DENOISERS[name](panel.raw, panel.wavelengths), f"denoiser:{name}"
    cfg = gates.detector
    err, err_raw = metrics.downstream_errors(pred, panel.reference, panel.raw, panel.wavelengths, cfg)
    ids = panel.meta[[c for c in ("spectrum_id", "group_id") if c in panel.meta.columns]].reset_index(drop=True)
    table = pd.concat([ids, pd.DataFrame({"downstream_err": err, "downstream_err_raw": err_raw})], axis=1)
    out_csv = Path(args.output_csv)
    write_csv(out_csv, table)
    summary = {
        "source": source,
        "panel": str(panel.manifest),
        "panel_sha256": panel.manifest_sha256,
        "n": len(table),
        "downstream_err_mean": float(err.mean()),
        "downstream_err_raw_mean": float(err_raw.mean()),
        "downstream_margin": gates.downstream_margin,
        "threshold": metrics.downstream_bound(float(err_raw.mean()), gates),
        "passed": metrics.downstream_passed(float(err.mean()), float(err_raw.mean()), gates),
    }
    atomic_write_json(Path(args.output_json) if args.output_json else out_csv.with_suffix(".json"), summary)
    print(json.dumps(summary))
    return 0
