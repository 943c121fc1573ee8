"""The local executor: each stage's argument list runs as a subprocess on this machine.

It plays the parts Kubernetes plays for the cluster executor: the Job (a process record under
`<workdir>/.godrun/<run>/jobs/<job>/`, retried up to `backoffLimit`, never retried after exit 2),
the pod's termination message (a file the evaluator writes through GODRUN_TERMINATION_LOG) and the
event log. The run's working directory stands for the run volume. A stage runs under the launcher the
cluster uses (`launch_command`: one process per GPU when spec.resources.gpus > 1), on this one
node, with this Python; its failures are reported in the machine's terms (FailureReason).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import yaml

from godrun.contract import files
from godrun.contract.jobrecord import COMPLETED, STOPPED, JobRecord
from godrun.contract.words import EventReason, EventType, FailureReason, PodFailureAction, Stage
from godrun.core.commands import PYTHON, launch_command
from godrun.core.machine import (
    Action,
    CreateActB,
    CreateJob,
    DeleteJob,
    EmitEvent,
    GodRunView,
    Observed,
    StageObs,
    attempt_failure_action,
)
from godrun.core.names import act_b_name, job_name
from godrun.core.observe import read_progress_csv, read_verdict_file
from godrun.errors import InputError
from godrun.fsio import (
    append_text,
    atomic_write_json,
    atomic_write_text,
    make_dirs,
    open_append,
    read_bytes,
    sha256_bytes,
)
from godrun.local import procs
from godrun.paths import RUN_VOLUME_ENV
from godrun.spec import GodRunStatus, Progress


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    log: IO[bytes]  # the open log file, closed when the process is reaped


class LocalExecutor:
    """Runs stages as processes; observe() reports them as the Kubernetes executor reports Jobs."""

    def __init__(self, workdir: Path, status_path: Path, *, python: str = sys.executable, echo: bool = True) -> None:
        # Absolute: the stages run with the workdir as cwd, so every path handed to them must not depend on ours.
        self.workdir = Path(workdir).resolve()
        # never resolved: a symlink at the status path is replaced, its target never written
        self.status_path = Path(os.path.abspath(status_path))
        self.python = python
        self.echo = echo
        self.procs: dict[str, _Proc] = {}
        self.act_b_manifests: list[Path] = []

    # ------------------------------------------------------------------ paths

    def run_files(self, run: GodRunView) -> files.RunFiles:
        """The run's state under `<workdir>/.godrun/<run>/`."""
        return files.RunFiles.of(self.workdir, run.name)

    def run_dir(self, run: GodRunView) -> Path:
        return self.run_files(run).dir

    def job_dir(self, run: GodRunView, job: str) -> Path:
        return self.run_files(run).job(job).dir

    # ------------------------------------------------------------------ Executor protocol

    def observe(self, run: GodRunView) -> Observed:
        self._reap(run)
        # The current generation's stages, by their deterministic names (never the status' remembered ones).
        train_job, eval_job = (job_name(run.name, stage, run.generation) for stage in Stage)
        train = self._stage(run, train_job)
        evaluate = self._stage(run, eval_job)
        verdict, verdict_error = None, None
        if evaluate.state == "succeeded":
            verdict, verdict_error = read_verdict_file(self.run_files(run).job(eval_job).termination_log)
        progress = self._progress(run, train_job)
        return Observed(
            train=train,
            evaluate=evaluate,
            progress=progress,
            verdict=verdict,
            verdict_error=verdict_error,
            act_b_exists=self.act_b_child(run.name) is not None,
        )

    def act_b_child(self, parent: str) -> Path | None:
        """The Act B child manifest `parent` wrote (its sha256 is recorded under .godrun/<parent>/), unchanged;
        a `<parent>-actb.yaml` someone else put there is never taken for the child."""
        path = self.workdir / files.manifest_file(act_b_name(parent))
        try:
            recorded = json.loads(read_bytes(files.RunFiles.of(self.workdir, parent).act_b_record)).get("sha256")
            return path if recorded == sha256_bytes(read_bytes(path)) else None
        except (OSError, ValueError, AttributeError):
            return None

    def _progress(self, run: GodRunView, train_job: str) -> Progress | None:
        """This generation's trainer's progress: a metrics.csv older than its training Job (another run's, a
        stale one) is never read, so neither its epochs nor the conditions they imply reach the status."""
        record = load_job(self.job_dir(run, train_job))
        created = record.created_ts if record is not None else None
        if created is None:
            return None
        path = files.metrics_csv(self.workdir / run.spec.training.log_dir)
        try:
            if os.lstat(path).st_mtime < created:
                return None
        except OSError:
            return None
        return read_progress_csv(path, run.spec.training)

    def apply(self, run: GodRunView, actions: Sequence[Action]) -> bool:
        for action in actions:
            if isinstance(action, CreateJob):
                self._start(run, action.name, self._command(run, action))
            elif isinstance(action, DeleteJob):
                self._stop(run, action.name)
            elif isinstance(action, CreateActB):
                self._write_act_b(run, action)
            elif isinstance(action, EmitEvent):
                self._event(run, action)
        return True

    def _write_act_b(self, run: GodRunView, action: CreateActB) -> None:
        path = self.workdir / files.manifest_file(action.name)
        if os.path.lexists(path):
            raise InputError(
                f"{path}: exists, and {run.name} did not write it; the Act B child of {run.name} is written there: "
                "move the file away and run again"
            )
        text = yaml.safe_dump(action.body, sort_keys=False)
        record = {"name": action.name, "sha256": sha256_bytes(text.encode())}
        atomic_write_json(self.run_files(run).act_b_record, record)
        atomic_write_text(path, text)
        self.act_b_manifests.append(path)

    def write_status(self, run: GodRunView, status: GodRunStatus) -> None:
        """The run's own copy under .godrun/<name>/ (the one a re-run resumes from), then the user's status file."""
        body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        atomic_write_json(self.run_files(run).status, body)
        atomic_write_json(self.status_path, body)

    # ------------------------------------------------------------------ processes

    def _command(self, run: GodRunView, action: CreateJob) -> list[str]:
        """The action's argv under the stage's launcher, on this one machine, with this Python."""
        gpus = run.spec.resources.gpus if action.stage == Stage.TRAIN else min(run.spec.resources.gpus, 1)
        argv = launch_command(action.argv, gpus=gpus)  # `python -m ...`: the trainer or our torchrun launcher
        if argv[0] != PYTHON:
            raise ValueError(f"unexpected launcher {argv[0]!r}")
        return [self.python, *argv[1:]]

    def _start(self, run: GodRunView, job: str, argv: list[str]) -> None:
        """Start an attempt of `job` (a record without an exit code is a Job still going: its next attempt)."""
        jdir = self.job_dir(run, job)
        make_dirs(jdir)
        record = load_job(jdir) or JobRecord(argv=argv, created=_now(), created_ts=time.time())
        if procs.kill_leftover(record.pid, record.start_ticks):
            msg = f"{job}: stopped the process group (pid {record.pid}) a killed runner left behind"
            self._event(run, EmitEvent(EventType.WARNING, EventReason.LEFTOVER_STOPPED, msg))
        record = record.changed(attempts=record.attempts + 1, exit_code=None, reason=None, pid=None, start_ticks=None)
        (jdir / files.TERMINATION_LOG).unlink(missing_ok=True)
        env = os.environ | {
            files.TERMINATION_LOG_ENV: str(jdir / files.TERMINATION_LOG),
            "PYTHONUNBUFFERED": "1",
            RUN_VOLUME_ENV: str(self.workdir.resolve()),
        }
        log = open_append(jdir / files.OUTPUT_LOG)  # closed when the process is reaped
        popen = procs.spawn(argv, cwd=self.workdir, env=env, log=log)
        self.procs[job] = _Proc(popen, log)
        record = record.changed(pid=popen.pid, start_ticks=procs.start_ticks(popen.pid), started=_now())
        save_job(jdir, record)

    def _reap(self, run: GodRunView) -> None:
        for job, proc in list(self.procs.items()):
            code = proc.popen.poll()
            if code is None:
                continue
            proc.log.close()
            del self.procs[job]
            self._finished_attempt(run, job, code)

    def _finished_attempt(self, run: GodRunView, job: str, returncode: int) -> None:
        """Count a finished attempt the way the Job controller does (godrun.core.machine.attempt_failure_action)."""
        jdir = self.job_dir(run, job)
        record = load_job(jdir)
        if record is None:  # its folder went away under the runner: like a deleted Job, it is started again
            return
        code = exit_code_of(returncode)
        if code == 0:
            save_job(jdir, record.changed(last_exit=0, exit_code=0, reason=COMPLETED))
            return
        action = attempt_failure_action(code)
        record = record.changed(last_exit=code, failures=record.failures + 1)
        limit = run.spec.jobs.backoff_limit
        what = f"attempt {record.attempts} {describe_exit(code)}"
        if action == PodFailureAction.COUNT and record.failures <= limit:
            save_job(jdir, record)
            msg = f"{job} {what}; retrying ({record.failures} of backoffLimit {limit} retries used)"
            self._event(run, EmitEvent(EventType.WARNING, EventReason.RETRYING, msg))
            self._start(run, job, record.argv)
            return
        reason = FailureReason.BAD_INPUT if action == PodFailureAction.FAIL_JOB else FailureReason.RETRIES_EXHAUSTED
        save_job(jdir, record.changed(exit_code=code, reason=reason))

    def _stage(self, run: GodRunView, job: str) -> StageObs:
        if job in self.procs:
            return StageObs(state="active")
        record = load_job(self.job_dir(run, job))
        if record is None or record.exit_code is None:  # never started, or stopped with its runner: started again
            return StageObs()
        code = record.exit_code
        if code == 0:
            return StageObs(state="succeeded", exit_code=0)
        detail = self._last_line(run, job) if code < 128 else describe_exit(code)
        # the reason as decided when the Job ended (stored with its exit code), never re-derived here
        reason = record.reason or ""
        return StageObs(state="failed", exit_code=code, reason=reason, message=detail, failures=record.failures)

    def _stop(self, run: GodRunView, job: str) -> None:
        """Stop a running stage; its record keeps no exit code, so a later run starts it again (not a failure)."""
        proc = self.procs.pop(job, None)
        if proc is None:
            return
        procs.stop_group(proc.popen.pid, leader=proc.popen)
        proc.popen.wait()
        proc.log.close()
        jdir = self.job_dir(run, job)
        record = load_job(jdir)
        if record is not None:
            save_job(jdir, record.changed(last_exit=STOPPED, pid=None, start_ticks=None))

    def stop_all(self, run: GodRunView) -> None:
        """Ctrl-C / SIGTERM: stop running stages; their records stay without an exit code so a re-run restarts them."""
        for job in list(self.procs):
            self._stop(run, job)

    @property
    def busy(self) -> bool:
        return bool(self.procs)

    # ------------------------------------------------------------------ small reads and writes

    def _last_line(self, run: GodRunView, job: str) -> str:
        """The stage's last non-empty output line: its `error: ...` message when it failed."""
        try:
            text = read_bytes(self.job_dir(run, job) / files.OUTPUT_LOG).decode(errors="replace")
        except FileNotFoundError:
            return ""
        return next((line for line in reversed(text.splitlines()) if line.strip()), "")

    def _event(self, run: GodRunView, ev: EmitEvent) -> None:
        line = f"{_now()} {ev.type:<7} {ev.reason:<22} {ev.message}"
        append_text(self.run_files(run).events, line + "\n")
        if self.echo:
            print(f"  event  {ev.reason}: {ev.message}", flush=True)


def load_job(jdir: Path) -> JobRecord | None:
    """The Job's record (confined: a symlinked record is refused), None when it was never started."""
    path = jdir / files.JOB_RECORD
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        return None
    return JobRecord.from_json(data, str(path))


def save_job(jdir: Path, record: JobRecord) -> None:
    atomic_write_text(jdir / files.JOB_RECORD, record.to_json() + "\n")


def exit_code_of(returncode: int) -> int:
    """A process' exit as a container reports it: a kill by signal N is exit code 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(code: int) -> str:
    if code > 128:
        try:
            return f"was killed by {signal.Signals(code - 128).name} (exit code {code})"
        except ValueError:
            pass
    return f"exited with code {code}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
