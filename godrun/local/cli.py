"""`godrun run FILE.yaml`: drive a GodRun manifest on this machine with the controller's state machine.

Exit codes: 0 Shipped, 3 Failed-ActB (the fallback ran), 2 bad input (manifest, or a stage's exit 2),
1 any other Error, 130 interrupted (re-run the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from godrun.core.machine import GodRunView, Polling, reconcile
from godrun.errors import EXIT_BAD_INPUT, InputError
from godrun.fsio import atomic_write_json, sha256_bytes
from godrun.local.executor import LocalExecutor
from godrun.spec import TERMINAL_PHASES, GodRun, GodRunStatus, format_validation_error
from godrun.tables import RUN_HEADER, format_plain, print_gate_table, run_row

EXIT_FAILED_ACTB = 3
EXIT_CODES = {"Shipped": 0, "Failed-ActB": EXIT_FAILED_ACTB}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="godrun run",
        description="Run a GodRun manifest (the YAML you would `kubectl apply`) on this machine: training, "
        "panel evaluation, the four gates and the fallback, as local processes.",
        epilog="Exit codes: 0 Shipped, 3 Failed-ActB, 2 bad input, 1 other error, 130 interrupted "
        "(re-run the same command to resume from the last checkpoint).",
    )
    p.add_argument("manifest", type=Path, help="GodRun YAML file")
    p.add_argument("--workdir", type=Path, default=Path("."), help="the run volume: stages run here (default: .)")
    p.add_argument("--status", type=Path, help="status file (default: <workdir>/status.json)")
    p.add_argument("--metrics-port", type=int, help="serve the controller's Prometheus metrics on this port")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between observations (default: 1)")
    p.add_argument("--no-act-b", action="store_true", help="write the Act B child manifest but do not run it")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    return p


def load_manifest(path: Path) -> GodRun:
    """Parse and validate a GodRun YAML; errors name the file and the field (`spec.training.lr_min: ...`)."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise InputError(f"{path}: expected exactly one GodRun object, found {len(docs)} documents")
    try:
        return GodRun.model_validate(docs[0])
    except ValidationError as exc:
        raise InputError(f"{path}: invalid GodRun\n{format_validation_error(exc, prefix='  ')}") from None


@dataclass
class RunState:
    """What the local runner keeps besides status.json: the generation and the spec it belongs to."""

    generation: int
    spec_sha256: str


def _generation(state_path: Path, run: GodRun) -> int:
    """Bump the generation when the spec changed since the last run of this name (like metadata.generation)."""
    spec_sha = sha256_bytes(json.dumps(run.spec.model_dump(mode="json"), sort_keys=True).encode())
    try:
        old = RunState(**json.loads(state_path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        old = None
    gen = 1 if old is None else old.generation + (old.spec_sha256 != spec_sha)
    atomic_write_json(state_path, {"generation": gen, "spec_sha256": spec_sha})
    return gen


def _load_status(path: Path) -> GodRunStatus:
    try:
        return GodRunStatus.model_validate_json(path.read_text())
    except (FileNotFoundError, ValidationError):
        return GodRunStatus()


def drive(
    run: GodRun,
    workdir: Path,
    status_path: Path,
    *,
    poll: float = 1.0,
    metrics=None,
    quiet: bool = False,
    executor: LocalExecutor | None = None,
) -> tuple[GodRunStatus, LocalExecutor]:
    """Reconcile until the run reaches a final phase and no stage process is left."""
    name = run.metadata.name
    executor = executor or LocalExecutor(workdir, status_path, echo=not quiet)
    generation = _generation(workdir / ".godrun" / name / "state.json", run)
    status = _load_status(status_path)
    shown: tuple[str, ...] = ()
    eta = _Eta()
    # No watch reports a process that ended: every phase is looked at again after `poll` seconds.
    polling = Polling(progress_seconds=poll, verdict_seconds=poll)
    try:
        while True:
            view = GodRunView(name=name, namespace="local", generation=generation, spec=run.spec, status=status)
            decision = reconcile(executor, view, datetime.now(UTC), polling)
            status = decision.status
            if metrics is not None:
                metrics.observe("local", name, status)
            row = run_row(name, status, datetime.now(UTC))
            if not quiet and row[1:6] != shown:
                shown = row[1:6]
                print(f"  {status.phase:<11} {status.message}{eta.text(status)}", flush=True)
            if status.phase in TERMINAL_PHASES and not executor.busy:
                return status, executor
            time.sleep(decision.requeue_after or poll)
    except KeyboardInterrupt:
        executor.stop_all()
        raise


class _Eta:
    """Time left in training, from the epochs this process has watched finish (a resumed run restarts the clock)."""

    def __init__(self) -> None:
        self.start: tuple[float, int] | None = None

    def text(self, status: GodRunStatus) -> str:
        p = status.progress
        if status.phase != "Training":
            return ""
        if self.start is None:
            self.start = (time.monotonic(), p.epoch)
        t0, e0 = self.start
        if p.epoch <= e0 or not p.epochs:
            return ""
        left = (time.monotonic() - t0) / (p.epoch - e0) * (p.epochs - p.epoch)
        return f", eta {left:.0f}s" if left < 120 else f", eta {left / 60:.1f}min"


def _serve_metrics(port: int | None):
    if port is None:
        return None
    from prometheus_client import start_http_server

    from godrun.core.metrics import ControllerMetrics

    metrics = ControllerMetrics()
    start_http_server(port, registry=metrics.registry)
    return metrics


def print_final(name: str, status: GodRunStatus, workdir: Path) -> None:
    print()
    print(format_plain(RUN_HEADER, [run_row(name, status, datetime.now(UTC))]))
    if status.panel is not None:
        print()
        print_gate_table(status.panel, f"gates of {name}: {status.panel.verdict.upper()}")
        if status.panel.report:
            print(f"report: {(workdir / status.panel.report).resolve()}")
    if status.archive:
        print(f"archive: {(workdir / status.archive).resolve()}")
    if status.phase == "Error":
        print(f"error: {status.reason}: {status.message}")


def run_file(
    manifest: Path,
    workdir: Path,
    status_path: Path | None = None,
    *,
    metrics_port: int | None = None,
    poll: float = 1.0,
    act_b: bool = True,
    quiet: bool = False,
) -> int:
    """Run one manifest (and its Act B child when the fallback creates one); returns the exit code."""
    run = load_manifest(manifest)
    workdir.mkdir(parents=True, exist_ok=True)
    status_path = status_path or workdir / "status.json"
    metrics = _serve_metrics(metrics_port)
    if not quiet:
        print(f"godrun run {run.metadata.name}: workdir {workdir.resolve()}, status {status_path}", flush=True)
    try:
        status, executor = drive(run, workdir, status_path, poll=poll, metrics=metrics, quiet=quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: stages stopped; run `godrun run {manifest}` again to resume", flush=True)
        return 130
    print_final(run.metadata.name, status, workdir)
    if status.phase == "Failed-ActB" and act_b and executor.act_b_manifests:
        child = executor.act_b_manifests[-1]
        print(
            f"\nAct B: running {child.name} (calibrator head + loss rebalance, warm-started from the best checkpoint)"
        )
        run_file(child, workdir, workdir / f"status-{child.stem}.json", poll=poll, act_b=False, quiet=quiet)
    if status.phase == "Error":
        return EXIT_BAD_INPUT if status.reason == "BadInput" else 1
    return EXIT_CODES[status.phase]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_file(
        args.manifest,
        args.workdir,
        args.status,
        metrics_port=args.metrics_port,
        poll=args.poll,
        act_b=not args.no_act_b,
        quiet=args.quiet,
    )
