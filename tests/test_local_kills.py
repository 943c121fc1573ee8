"""`godrun run` survives what users do: relative workdirs, kills of the trainer or of the runner, two runners
on one workdir, SIGTERM. Each test runs the runner as its own process, the way a user starts it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from run_support import LENIENT_GATES, ROOT, godrun_body, tiny_training

from godrun.cli import main as godrun_main
from godrun.core.names import job_name
from godrun.spec import GodRunStatus

ENV = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _project(small_corpus: Path, tmp_path: Path, name: str, epochs: int, workdir: str = "runs/x") -> Path:
    """A project folder holding `<name>.yaml` and a workdir (relative to it) with the small corpus."""
    proj = tmp_path / "proj"
    work = proj / workdir
    work.mkdir(parents=True)
    # a copy: the run volume holds its inputs (a symlink out of it is refused, godrun.paths)
    shutil.copytree(small_corpus / "data", work / "data")
    body = godrun_body(name, training=tiny_training(epochs), gates=LENIENT_GATES)
    (proj / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return proj


def _runner(proj: Path, name: str, workdir: str = "runs/x") -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "godrun", "run", f"{name}.yaml", "--workdir", workdir, "--poll", "0.2"]
    return subprocess.Popen(cmd, cwd=proj, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(what: str, cond: Callable[[], object], proc: subprocess.Popen[bytes] | None = None, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"runner ended ({proc.returncode}) before {what}: {proc.stdout.read().decode()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _epochs(work: Path) -> list[int]:
    try:
        with open(work / "logs/god_run/metrics.csv", newline="") as fh:
            return [int(float(r["epoch"])) for r in csv.DictReader(fh)]
    except FileNotFoundError:
        return []


def _job(work: Path, name: str, stage: str = "train") -> dict:
    path = work / ".godrun" / name / "jobs" / job_name(name, stage, 1) / "job.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _status(work: Path) -> GodRunStatus:
    return GodRunStatus.model_validate_json((work / "status.json").read_text())


def test_readme_commands_with_a_relative_workdir(small_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    """`godrun data synth --out .`, `godrun data panel --root .`, `godrun run FILE.yaml --workdir runs/x`."""
    proj = tmp_path / "proj"
    (proj / "runs/x").mkdir(parents=True)
    monkeypatch.chdir(proj / "runs/x")
    assert godrun_main(["data", "synth", "--out", ".", "--scale", "0.05"]) == 0
    assert godrun_main(["data", "panel", "--root", "."]) == 0
    body = godrun_body("rel", training=tiny_training(1), gates=LENIENT_GATES)
    (proj / "rel.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    runner = _runner(proj, "rel")
    out = runner.communicate(timeout=600)[0].decode()
    assert runner.returncode == 0, out
    work = proj / "runs/x"
    assert _status(work).phase == "Shipped"
    assert not (work / "runs").exists()  # nothing landed at runs/x/runs/x
    assert (work / ".godrun/rel/jobs" / job_name("rel", "evaluate", 1) / "termination-log").is_file()


def test_trainer_sigkilled_is_retried_and_ships_without_lost_or_repeated_epochs(
    small_corpus: Path, tmp_path: Path
) -> None:
    proj = _project(small_corpus, tmp_path, "oom", epochs=4)
    work = proj / "runs/x"
    runner = _runner(proj, "oom")
    _wait("the first epoch", lambda: _epochs(work), runner)
    victim = _job(work, "oom")["pid"]
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)  # what the OOM killer does
    _wait("a second attempt", lambda: _job(work, "oom").get("pid") not in (None, victim), runner)
    log = work / "logs/god_run/train.log"
    _wait("training resumed", lambda: "resumed from" in log.read_text(), runner)
    print(f"\nSIGKILL of the trainer -> training resumed: {time.monotonic() - t0:.1f} s")
    out = runner.communicate(timeout=600)[0].decode()
    assert runner.returncode == 0, out
    assert _status(work).phase == "Shipped"
    assert _epochs(work) == [1, 2, 3, 4]
    job = _job(work, "oom")
    assert (job["attempts"], job["failures"], job["exit_code"]) == (2, 1, 0)
    assert "was killed by SIGKILL" in (work / ".godrun/oom/events.log").read_text()


def test_runner_sigkilled_takes_its_stage_along_and_a_rerun_resumes(small_corpus: Path, tmp_path: Path) -> None:
    proj = _project(small_corpus, tmp_path, "crash", epochs=4)
    work = proj / "runs/x"
    runner = _runner(proj, "crash")
    _wait("the first epoch", lambda: _epochs(work), runner)
    trainer = _job(work, "crash")["pid"]
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(30)
    _wait("the trainer to die with its runner", lambda: _gone(trainer), timeout=15)
    done_before = _epochs(work)
    assert 1 <= len(done_before) < 4
    rerun = subprocess.run(
        [sys.executable, "-m", "godrun", "run", "crash.yaml", "--workdir", "runs/x", "--poll", "0.2", "-q"],
        cwd=proj,
        env=ENV,
        capture_output=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout.decode() + rerun.stderr.decode()
    assert _epochs(work) == [1, 2, 3, 4]
    assert _status(work).phase == "Shipped"
    job = _job(work, "crash")
    assert (job["attempts"], job["failures"]) == (2, 0)  # the runner's death is not the stage's failure


def test_second_runner_exits_2_and_sigterm_stops_everything(
    small_corpus: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    proj = _project(small_corpus, tmp_path, "busy", epochs=50)
    work = proj / "runs/x"
    runner = _runner(proj, "busy")
    trainer = _wait("the trainer", lambda: _job(work, "busy").get("pid"), runner)
    # a second runner on the same workdir (here: in-process, from the project folder)
    monkeypatch.chdir(proj)
    assert godrun_main(["run", "busy.yaml", "--workdir", "runs/x", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"pid {runner.pid}" in err and "runs/x" in err
    assert _job(work, "busy")["attempts"] == 1  # it started nothing
    t0 = time.monotonic()
    os.kill(runner.pid, signal.SIGTERM)
    out = runner.communicate(timeout=60)[0].decode()
    assert runner.returncode == 143, out
    assert time.monotonic() - t0 < 8, "stopping took the whole SIGKILL grace period"
    assert _gone(trainer), "the trainer outlived a SIGTERMed runner"
    status = _status(work)
    assert status.phase == "Training" and status.reason == "Interrupted" and "SIGTERM" in status.message


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_other_stop_signals_end_the_same_way(small_corpus: Path, tmp_path: Path, signum: int) -> None:
    proj = _project(small_corpus, tmp_path, "stop", epochs=50)
    work = proj / "runs/x"
    runner = _runner(proj, "stop")
    trainer = _wait("the trainer", lambda: _job(work, "stop").get("pid"), runner)
    os.kill(runner.pid, signum)
    out = runner.communicate(timeout=60)[0].decode()
    assert runner.returncode == 128 + signum, out
    assert _gone(trainer)
    assert _status(work).reason == "Interrupted"
