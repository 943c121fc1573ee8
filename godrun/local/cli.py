"""`godrun run FILE.yaml`: drive a GodRun manifest on this machine with the controller's state machine.

Exit codes: 0 Shipped, 3 Failed-ActB (the fallback ran), 2 bad input (manifest, or a stage's exit 2, or another
runner already working in the workdir), 1 any other Error, 130 interrupted by Ctrl-C and 143 by SIGTERM (re-run
the same command to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import posixpath
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from godrun.contract import files
from godrun.contract.words import FailureReason, Phase, Reason
from godrun.core.machine import GodRunView, Polling, reconcile
from godrun.errors import EXIT_BAD_INPUT, InputError, describe, reading, tcp_port
from godrun.fsio import atomic_write_json, confined_to, read_bytes, sha256_bytes
from godrun.inputs import read_text
from godrun.local import procs
from godrun.local.executor import LocalExecutor
from godrun.spec import (
    EDITABLE_IN_IMMUTABLE,
    IMMUTABLE_SPEC_FIELDS,
    TERMINAL_PHASES,
    GodRun,
    GodRunStatus,
    format_validation_error,
)
from godrun.tables import RUN_HEADER, format_plain, print_gate_table, run_row

if TYPE_CHECKING:
    from godrun.core.prometheus import ControllerMetrics

EXIT_FAILED_ACTB = 3
EXIT_CODES = {Phase.SHIPPED: 0, Phase.FAILED_ACT_B: EXIT_FAILED_ACTB}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="godrun run",
        description="Run a GodRun manifest (the YAML you would `kubectl apply`) on this machine: training, "
        "panel evaluation, the four gates and the fallback, as local processes.",
        epilog="Exit codes: 0 Shipped, 3 Failed-ActB, 2 bad input (or the workdir is in use by another run), "
        "1 other error, 130/143 interrupted by Ctrl-C/SIGTERM (re-run the same command to resume from the last "
        "checkpoint).",
    )
    p.add_argument("manifest", type=Path, help="GodRun YAML file")
    p.add_argument("--workdir", type=Path, default=Path("."), help="the run volume: stages run here (default: .)")
    p.add_argument("--status", type=Path, help="status file (default: <workdir>/status.json)")
    p.add_argument("--metrics-port", type=tcp_port, help="serve the controller's Prometheus metrics on this port")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between observations, 0.01 to 3600 (default: 1)")
    p.add_argument("--no-act-b", action="store_true", help="write the Act B child manifest but do not run it")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    return p


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a mapping key given twice, as kubectl does: the last one winning would silently drop
    a setting (`epochs: 400` then `epochs: 3`)."""


def _mapping_once(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden here
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        if isinstance(key, str | int | float | bool) or key is None:
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_once)


def load_manifest(path: Path) -> GodRun:
    """Parse and validate a GodRun YAML; errors name the file and the field (`spec.training.lr_min: ...`)."""
    text = read_text(path)
    with reading(path, extra=(yaml.YAMLError,)):
        docs = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]  # a SafeLoader
    if len(docs) != 1:
        raise InputError(f"{path}: expected exactly one GodRun object, found {len(docs)} documents")
    if not isinstance(docs[0], dict):
        raise InputError(f"{path}: expected a GodRun object (a YAML mapping), found a {type(docs[0]).__name__}")
    try:
        return GodRun.model_validate(docs[0])
    except ValidationError as exc:
        raise InputError(f"{path}: invalid GodRun\n{format_validation_error(exc, prefix='  ')}") from None


@dataclass
class RunState:
    """What the local runner keeps per run name besides its status: the generation and the spec it belongs to."""

    generation: int
    spec_sha256: str
    immutable: dict[str, str] | None = None  # sha256 of each field the CRD makes immutable
    folders: dict[str, str] | None = None  # the output folders this run owns in the workdir


def _sha(obj: object) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def _fixed(spec: dict[str, Any], field: str) -> str:
    """The sha256 of what the CRD keeps fixed in spec.<field> (its editable sub-fields left out)."""
    value = spec.get(field)
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in EDITABLE_IN_IMMUTABLE.get(field, ())}
    return _sha(value)


def run_state_dir(workdir: Path, name: str) -> Path:
    return files.RunFiles.of(workdir, name).dir


def _generation(state_path: Path, run: GodRun) -> int:
    """Bump the generation when the spec changed since the last run of this name (like metadata.generation).

    A change to a field the CRD makes immutable is refused (exit 2), as the API server refuses it: a finished
    run's status is never overwritten by another recipe under the same name.
    """
    spec = run.spec.model_dump(mode="json")
    spec_sha = _sha(spec)
    immutable = {f: _fixed(spec, f) for f in IMMUTABLE_SPEC_FIELDS}
    try:
        data = json.loads(read_bytes(state_path))
        old = RunState(**{k: v for k, v in data.items() if k in RunState.__dataclass_fields__})
    except (FileNotFoundError, json.JSONDecodeError, TypeError, UnicodeDecodeError, AttributeError):
        old = None
    if old is not None and old.immutable is not None:
        changed = [f for f in IMMUTABLE_SPEC_FIELDS if old.immutable.get(f) != immutable[f]]
        if changed:
            raise InputError(
                f"spec.{changed[0]} is immutable: the workdir already holds GodRun {run.metadata.name!r} made with "
                f"another {', '.join('spec.' + f for f in changed)}; create a new GodRun (another metadata.name) "
                "for a new recipe"
            )
    folders = own_folders(run)
    _refuse_shared_folders(state_path.parent.parent, run.metadata.name, folders)
    gen = 1 if old is None else old.generation + (old.spec_sha256 != spec_sha)
    body = {"generation": gen, "spec_sha256": spec_sha, "immutable": immutable, "folders": folders}
    atomic_write_json(state_path, body)
    return gen


def own_folders(run: GodRun) -> dict[str, str]:
    """The folders this run writes its outputs to (field -> normalised path)."""
    t, spec = run.spec.training, run.spec
    fields = {
        "spec.training.checkpointDir": t.checkpoint_dir,
        "spec.training.logDir": t.log_dir,
        "spec.panel.outputDir": spec.panel.output_dir,
    }
    return {k: posixpath.normpath(v) for k, v in fields.items() if v}


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _refuse_shared_folders(godrun_dir: Path, name: str, folders: dict[str, str]) -> None:
    """Outputs belong to one run: a folder another GodRun of this workdir writes to is refused (exit 2), so a run
    never resumes, evaluates or ships another run's checkpoints."""
    try:
        others = sorted(e.name for e in os.scandir(godrun_dir) if e.is_dir(follow_symlinks=False) and e.name != name)
    except FileNotFoundError:
        return
    for other in others:
        try:
            theirs = json.loads(read_bytes(files.RunFiles(godrun_dir / other).state)).get("folders") or {}
        except (OSError, ValueError, AttributeError, InputError):
            continue
        for field, mine in folders.items():
            clash = next((f for f, t in theirs.items() if isinstance(t, str) and _overlap(mine, t)), None)
            if clash is not None:
                raise InputError(
                    f"{field} {mine!r}: GodRun {other!r} of this workdir writes there ({clash}); outputs belong to "
                    "one run: give this run its own folders (or another --workdir)"
                )


def _load_status(path: Path) -> GodRunStatus:
    """The status this run (name) last wrote under .godrun/<name>/; never another run's status file."""
    try:
        return GodRunStatus.model_validate_json(read_bytes(path))
    except (FileNotFoundError, ValidationError):
        return GodRunStatus()


class Interrupted(Exception):
    """The runner was asked to stop (Ctrl-C, SIGTERM, SIGHUP): stages stopped, status written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for Ctrl-C, 143 for SIGTERM: what a shell reports for the signal


class StopRequest:
    """Set by Ctrl-C, SIGTERM or SIGHUP; the loop acts on it between two reconciles, never halfway through one."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = self.signum or signum
        self.event.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only; Ctrl-C then raises KeyboardInterrupt as usual
            return
        old = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def check(self) -> None:
        if self.event.is_set():
            raise Interrupted(self.signum or signal.SIGINT)

    def sleep(self, seconds: float) -> None:
        self.event.wait(seconds)
        self.check()


def drive(
    run: GodRun,
    workdir: Path,
    status_path: Path,
    *,
    poll: float = 1.0,
    metrics: ControllerMetrics | None = None,
    quiet: bool = False,
    executor: LocalExecutor | None = None,
    stop: StopRequest | None = None,
) -> tuple[GodRunStatus, LocalExecutor]:
    """Reconcile until the run reaches a final phase and no stage process is left."""
    name = run.metadata.name
    stop = stop or StopRequest()
    executor = executor or LocalExecutor(workdir, status_path, echo=not quiet)
    state = files.RunFiles.of(executor.workdir, name)
    generation = _generation(state.state, run)
    status = _load_status(state.status)
    view = GodRunView(name=name, namespace="local", generation=generation, spec=run.spec, status=status)
    shown: tuple[str, ...] = ()
    eta = _Eta()
    # No watch reports a process that ended: every phase is looked at again after `poll` seconds.
    polling = Polling(progress_seconds=poll, verdict_seconds=poll)
    try:
        while True:
            stop.check()
            view = GodRunView(name=name, namespace="local", generation=generation, spec=run.spec, status=status)
            decision = reconcile(executor, view, datetime.now(UTC), polling)
            status = decision.status
            if metrics is not None:
                metrics.observe("local", name, status, before=view.status)
            row = run_row(name, status, datetime.now(UTC))
            if not quiet and row[1:6] != shown:
                shown = row[1:6]
                print(f"  {status.phase:<11} {status.message}{eta.text(status)}", flush=True)
            if status.phase in TERMINAL_PHASES and not executor.busy:
                return status, executor
            stop.sleep(decision.requeue_after or poll)
    except (Interrupted, KeyboardInterrupt) as exc:
        executor.stop_all(view)
        signame = str(exc) if isinstance(exc, Interrupted) else "SIGINT"
        if status.phase not in TERMINAL_PHASES:
            message = f"runner stopped by {signame}; stages stopped: run the same `godrun run` again to resume"
            executor.write_status(view, status.model_copy(update={"reason": Reason.INTERRUPTED, "message": message}))
        raise


class _Eta:
    """Time left in training, from the epochs this process has watched finish (a resumed run restarts the clock)."""

    def __init__(self) -> None:
        self.start: tuple[float, int] | None = None

    def text(self, status: GodRunStatus) -> str:
        p = status.progress
        if status.phase != Phase.TRAINING:
            return ""
        if self.start is None:
            self.start = (time.monotonic(), p.epoch)
        t0, e0 = self.start
        if p.epoch <= e0 or not p.epochs:
            return ""
        left = (time.monotonic() - t0) / (p.epoch - e0) * (p.epochs - p.epoch)
        return f", eta {left:.0f}s" if left < 120 else f", eta {left / 60:.1f}min"


def _serve_metrics(port: int | None) -> ControllerMetrics | None:
    if port is None:
        return None
    from prometheus_client import start_http_server

    from godrun.core.prometheus import ControllerMetrics

    metrics = ControllerMetrics()
    try:
        start_http_server(port, registry=metrics.registry)
    except OSError as exc:
        raise InputError(f"--metrics-port {port}: cannot serve metrics there ({describe(exc)})") from exc
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
    if status.phase == Phase.ERROR:
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
    """Run one manifest (and its Act B child when the fallback creates one); returns the exit code.

    One runner per workdir: the workdir's lock is held for the whole call, the child run included.
    """
    run = load_manifest(manifest)
    if run.spec.suspend:
        raise InputError(
            f"{manifest}: spec.suspend is true; a local run has no controller to resume it later, so nothing "
            "would ever start: set spec.suspend to false (or remove it) and run again"
        )
    workdir = _workdir(Path(workdir))
    status_path = _status_path(status_path, workdir)
    _check_poll(poll)
    stop = StopRequest()
    with confined_to(workdir), procs.workdir_lock(workdir), stop.installed():
        metrics = _serve_metrics(metrics_port)
        try:
            return _run(run, manifest, workdir, status_path, stop, metrics=metrics, poll=poll, act_b=act_b, quiet=quiet)
        except (Interrupted, KeyboardInterrupt) as exc:
            print(f"\ninterrupted: stages stopped; run `godrun run {manifest}` again to resume", flush=True)
            return exc.exit_code if isinstance(exc, Interrupted) else 130


def _workdir(path: Path) -> Path:
    """The workdir, resolved (stages run inside it: paths handed to them must not depend on our cwd), created."""
    resolved = path.resolve()
    if resolved.exists() and not resolved.is_dir():
        raise InputError(f"--workdir {path}: exists and is not a folder")
    try:
        resolved.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--workdir {path}: cannot create it ({describe(exc)})") from None
    if not os.access(resolved, os.W_OK | os.X_OK):
        raise InputError(f"--workdir {path}: not writable (the run writes its status, jobs and outputs there)")
    return resolved


def _status_path(path: Path | None, workdir: Path) -> Path:
    status = Path(os.path.abspath(path)) if path else workdir / files.STATUS_JSON
    if status.is_dir() or (not status.parent.is_dir() and status.parent.exists()):
        raise InputError(f"--status {path or status}: is a folder (or lies below a file); name a file")
    return status


MAX_POLL_S = 3600.0
MIN_POLL_S = 0.01  # below this the runner only spins a core: a stage's state changes far more slowly


def _check_poll(poll: float) -> None:
    if not (math.isfinite(poll) and MIN_POLL_S <= poll <= MAX_POLL_S):
        raise InputError(f"--poll {poll!r}: must be a number of seconds in [{MIN_POLL_S:g}, {MAX_POLL_S:g}]")


def _run(
    run: GodRun,
    manifest: Path,
    workdir: Path,
    status_path: Path,
    stop: StopRequest,
    *,
    metrics: ControllerMetrics | None = None,
    poll: float,
    act_b: bool,
    quiet: bool,
) -> int:
    if not quiet:
        print(f"godrun run {run.metadata.name}: workdir {workdir}, status {status_path}", flush=True)
    status, executor = drive(run, workdir, status_path, poll=poll, metrics=metrics, quiet=quiet, stop=stop)
    print_final(run.metadata.name, status, workdir)
    child = _act_b_manifest(run, executor)
    if status.phase == Phase.FAILED_ACT_B and act_b and child is not None:
        print(
            f"\nAct B: running {child.name} (calibrator head + loss rebalance, warm-started from the best checkpoint)"
        )
        child_run = load_manifest(child)
        _run(
            child_run,
            child,
            workdir,
            workdir / files.status_file(child.stem),
            stop,
            poll=poll,
            act_b=False,
            quiet=quiet,
        )
    if status.phase == Phase.ERROR:
        return EXIT_BAD_INPUT if status.reason == FailureReason.BAD_INPUT else 1
    return EXIT_CODES[status.phase]


def _act_b_manifest(run: GodRun, executor: LocalExecutor) -> Path | None:
    """The Act B child this run created: in this call, or in an earlier one that was stopped (it resumes)."""
    if executor.act_b_manifests:
        return executor.act_b_manifests[-1]
    return executor.act_b_child(run.metadata.name)


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
