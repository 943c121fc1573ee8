"""The local executor: each stage's argument list runs as a subprocess on this machine.

It plays the parts Kubernetes plays for the cluster executor: the Job (a process record under
`<workdir>/.godrun/<run>/jobs/<job>/`, retried up to `backoffLimit`, never retried after exit 2),
the pod's termination message (a file the evaluator writes through GODRUN_TERMINATION_LOG) and the
event log. The run's working directory stands for the run volume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from godrun.core.commands import PYTHON, TORCHRUN, launch_command
from godrun.core.machine import (
    Action,
    CreateActB,
    CreateJob,
    DeleteJob,
    EmitEvent,
    GodRunView,
    Observed,
    StageObs,
)
from godrun.core.names import job_name
from godrun.core.observe import read_progress_csv, read_verdict_file
from godrun.errors import EXIT_BAD_INPUT
from godrun.fsio import atomic_write_json, atomic_write_text
from godrun.paths import RUN_VOLUME_ENV
from godrun.spec import GodRunStatus


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    log: object  # the open log file, closed when the process is reaped


class LocalExecutor:
    """Runs stages as processes; observe() reports them as the Kubernetes executor reports Jobs."""

    def __init__(self, workdir: Path, status_path: Path, *, python: str = sys.executable, echo: bool = True) -> None:
        self.workdir = workdir
        self.status_path = status_path
        self.python = python
        self.echo = echo
        self.procs: dict[str, _Proc] = {}
        self.act_b_manifests: list[Path] = []

    # ------------------------------------------------------------------ paths

    def run_dir(self, run: GodRunView) -> Path:
        return self.workdir / ".godrun" / run.name

    def job_dir(self, run: GodRunView, job: str) -> Path:
        return self.run_dir(run) / "jobs" / job

    # ------------------------------------------------------------------ Executor protocol

    def observe(self, run: GodRunView) -> Observed:
        self._reap(run)
        # The current generation's stages, by their deterministic names (never the status' remembered ones).
        train_job, eval_job = (job_name(run.name, stage, run.generation) for stage in ("train", "evaluate"))
        train = self._stage(run, train_job)
        evaluate = self._stage(run, eval_job)
        verdict, verdict_error = None, None
        if evaluate.state == "succeeded":
            verdict, verdict_error = read_verdict_file(self.job_dir(run, eval_job) / "termination-log")
        progress = read_progress_csv(self.workdir / run.spec.training.log_dir / "metrics.csv", run.spec.training)
        child = self.workdir / f"{run.name}-actb.yaml"
        return Observed(
            train=train,
            evaluate=evaluate,
            progress=progress,
            verdict=verdict,
            verdict_error=verdict_error,
            act_b_exists=child.exists(),
        )

    def apply(self, run: GodRunView, actions: Sequence[Action]) -> bool:
        for action in actions:
            if isinstance(action, CreateJob):
                self._start(run, action.name, self._command(run, action), attempt_reset=True)
            elif isinstance(action, DeleteJob):
                self._stop(action.name)
            elif isinstance(action, CreateActB):
                path = self.workdir / f"{action.name}.yaml"
                atomic_write_text(path, yaml.safe_dump(action.body, sort_keys=False))
                self.act_b_manifests.append(path)
            elif isinstance(action, EmitEvent):
                self._event(run, action)
        return True

    def write_status(self, run: GodRunView, status: GodRunStatus) -> None:
        atomic_write_json(self.status_path, status.model_dump(mode="json", by_alias=True, exclude_none=True))

    # ------------------------------------------------------------------ processes

    def _command(self, run: GodRunView, action: CreateJob) -> list[str]:
        """The action's argv under the stage's launcher, on this one machine, with this Python."""
        gpus = run.spec.resources.gpus if action.stage == "train" else min(run.spec.resources.gpus, 1)
        argv = launch_command(action.argv, gpus=gpus)
        head = {PYTHON: [self.python], TORCHRUN: [self.python, "-m", "torch.distributed.run"]}[argv[0]]
        return [*head, *argv[1:]]

    def _start(self, run: GodRunView, job: str, argv: list[str], *, attempt_reset: bool) -> None:
        jdir = self.job_dir(run, job)
        jdir.mkdir(parents=True, exist_ok=True)
        record = self._record(jdir)
        if attempt_reset and "argv" not in record:
            record = {"argv": argv, "attempts": 0, "created": _now()}
        record["attempts"] = record.get("attempts", 0) + 1
        record.pop("exit_code", None)
        (jdir / "termination-log").unlink(missing_ok=True)
        env = os.environ | {
            "GODRUN_TERMINATION_LOG": str(jdir / "termination-log"),
            "PYTHONUNBUFFERED": "1",
            RUN_VOLUME_ENV: str(self.workdir.resolve()),
        }
        log = open(jdir / "output.log", "ab")  # noqa: SIM115 - closed when the process is reaped
        popen = subprocess.Popen(
            argv, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[job] = _Proc(popen, log)
        record["pid"] = popen.pid
        atomic_write_json(jdir / "job.json", record)

    def _reap(self, run: GodRunView) -> None:
        for job, proc in list(self.procs.items()):
            code = proc.popen.poll()
            if code is None:
                continue
            proc.log.close()  # type: ignore[attr-defined]
            del self.procs[job]
            jdir = self.job_dir(run, job)
            record = self._record(jdir)
            retry = code not in (0, EXIT_BAD_INPUT) and code > 0 and record["attempts"] <= run.spec.jobs.backoff_limit
            if retry:
                self._event(
                    run, EmitEvent("Warning", "Retrying", f"{job} exited {code}; attempt {record['attempts'] + 1}")
                )
                self._start(run, job, record["argv"], attempt_reset=False)
                continue
            record["exit_code"] = code
            atomic_write_json(jdir / "job.json", record)

    def _stage(self, run: GodRunView, job: str) -> StageObs:
        if job in self.procs:
            return StageObs(state="active")
        record = self._record(self.job_dir(run, job))
        code = record.get("exit_code")
        if code is None:  # never started, or interrupted (Ctrl-C): absent, so it is started again
            return StageObs()
        if code == 0:
            return StageObs(state="succeeded", exit_code=0)
        # Exit 2 is never retried (the machine reads BadInput from the code); other exits were retried up to
        # backoffLimit; a process killed by a signal (negative code) was not.
        reason = "RetriesExhausted" if code > 0 else "JobFailed"
        return StageObs(state="failed", exit_code=code, reason=reason, message=self._last_line(run, job))

    def _stop(self, job: str) -> None:
        proc = self.procs.pop(job, None)
        if proc is None:
            return
        _terminate(proc.popen)
        proc.log.close()  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        """Ctrl-C: stop running stages; their records stay without an exit code so a re-run restarts them."""
        for job in list(self.procs):
            self._stop(job)

    @property
    def busy(self) -> bool:
        return bool(self.procs)

    # ------------------------------------------------------------------ small reads and writes

    @staticmethod
    def _record(jdir: Path) -> dict:
        try:
            return json.loads((jdir / "job.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _last_line(self, run: GodRunView, job: str) -> str:
        """The stage's last non-empty output line: its `error: ...` message when it failed."""
        try:
            text = (self.job_dir(run, job) / "output.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return next((line for line in reversed(text.splitlines()) if line.strip()), "")

    def _event(self, run: GodRunView, ev: EmitEvent) -> None:
        line = f"{_now()} {ev.type:<7} {ev.reason:<22} {ev.message}"
        path = self.run_dir(run) / "events.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self.echo:
            print(f"  event  {ev.reason}: {ev.message}", flush=True)


def _terminate(popen: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    try:
        os.killpg(popen.pid, signal.SIGTERM)
        popen.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
