"""The local executor reports a stage's end in the machine's own terms, and runs the launcher's command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from godrun.core.machine import CreateJob, GodRunView, StageObs, decide, failure_reason
from godrun.core.names import job_name
from godrun.errors import InputError
from godrun.local.executor import LocalExecutor
from godrun.spec import GodRunSpec

ROOT = Path(__file__).resolve().parents[1]


def _finish(ex: LocalExecutor, run: GodRunView, timeout: float = 60.0) -> StageObs:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obs = ex.observe(run).train
        if obs.state not in ("active", "absent"):
            return obs
        time.sleep(0.05)
    raise AssertionError("the stage did not finish")


def _run(tmp_path: Path, code: str, backoff: int) -> tuple[StageObs, LocalExecutor, GodRunView]:
    spec = GodRunSpec.model_validate({"image": "local", "jobs": {"backoffLimit": backoff}})
    run = GodRunView("r", "local", 1, spec)
    ex = LocalExecutor(tmp_path, tmp_path / "status.json", echo=False)
    argv = ("python", "-c", code)
    assert ex.apply(run, [CreateJob("train", job_name("r", "train", 1), 1, argv)])
    return _finish(ex, run), ex, run


def test_a_stage_that_keeps_failing_is_retries_exhausted(tmp_path: Path):
    obs, ex, run = _run(tmp_path, "import sys; print('boom'); sys.exit(3)", backoff=1)
    assert (obs.state, obs.reason, obs.exit_code, obs.message) == ("failed", "RetriesExhausted", 3, "boom")
    events = (ex.run_dir(run) / "events.log").read_text()
    assert events.count("Retrying") == 1
    d = decide(run, ex.observe(run), datetime.now(UTC))
    assert (d.status.phase, d.status.reason) == ("Error", "RetriesExhausted")


def test_exit_2_is_bad_input_without_a_retry(tmp_path: Path):
    obs, ex, run = _run(tmp_path, "import sys; print('error: row 7'); sys.exit(2)", backoff=3)
    assert (obs.exit_code, failure_reason(obs), obs.message) == (2, "BadInput", "error: row 7")
    assert not (ex.run_dir(run) / "events.log").exists()


def test_the_job_record_keeps_the_reason_decided_when_the_job_ended(tmp_path: Path):
    """The stage's reason is the one stored with its exit code (job.json, godrun.contract.jobrecord.JobRecord),
    not re-derived: a record holding an exit code without its reason is refused, naming the file (exit 2)."""
    obs, ex, run = _run(tmp_path, "import sys; sys.exit(2)", backoff=3)
    path = ex.job_dir(run, job_name("r", "train", 1)) / "job.json"
    record = json.loads(path.read_text())
    assert (record["exit_code"], record["reason"], record["attempts"], obs.reason) == (2, "BadInput", 1, "BadInput")
    path.write_text(json.dumps(record | {"reason": "DeadlineExceeded"}))
    assert ex.observe(run).train.reason == "DeadlineExceeded"
    del record["reason"]
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match=r"job\.json: not a job record"):
        ex.observe(run)
    path.write_text(json.dumps(record | {"reason": "BadInput", "exitCode": 2}))  # a field no writer writes
    with pytest.raises(InputError, match="exitCode"):
        ex.observe(run)


def test_the_stage_runs_this_python(tmp_path: Path):
    obs, _, _ = _run(tmp_path, "import sys; print(sys.executable); sys.exit(5)", backoff=0)
    assert Path(obs.message).resolve() == Path(sys.executable).resolve()


def test_the_local_command_comes_from_the_shared_launcher(tmp_path: Path):
    from godrun.core.commands import LAUNCHER_MODULE, trainer_argv

    spec = GodRunSpec.model_validate(
        {"image": "local", "resources": {"gpus": 2, "nodes": 3}, "data": {"claimName": "shared"}}
    )
    run = GodRunView("r", "local", 1, spec)
    ex = LocalExecutor(tmp_path, tmp_path / "status.json", python="/venv/python", echo=False)
    argv = tuple(trainer_argv(spec))
    cmd = ex._command(run, CreateJob("train", "j", 1, argv))
    head = ["/venv/python", "-m", LAUNCHER_MODULE, "--nproc_per_node=2", "--standalone", "--nnodes=1"]
    assert cmd == [*head, *argv[1:]], "one machine: the launcher standalone, whatever spec.resources.nodes says"
    evaluate = ("python", "-m", "godrun.evaluator", "--x")
    assert ex._command(run, CreateJob("evaluate", "e", 1, evaluate)) == ["/venv/python", *evaluate[1:]]


# --------------------------------------------------------------------------- kills, retries, leftovers

KILL_ONCE = (
    "import os, pathlib, signal\n"
    "m = pathlib.Path('killed-once')\n"
    "if not m.exists():\n"
    "    m.write_text('x'); os.kill(os.getpid(), signal.SIGKILL)\n"
    "print('second attempt ran')\n"
)


def test_a_stage_killed_by_a_signal_is_a_failed_attempt_and_is_retried(tmp_path: Path):
    obs, ex, run = _run(tmp_path, KILL_ONCE, backoff=3)
    assert (obs.state, obs.exit_code) == ("succeeded", 0)
    job = json.loads((ex.job_dir(run, job_name("r", "train", 1)) / "job.json").read_text())
    assert (job["attempts"], job["failures"]) == (2, 1)
    events = (ex.run_dir(run) / "events.log").read_text()
    assert "attempt 1 was killed by SIGKILL (exit code 137)" in events and "1 of backoffLimit 3" in events


def test_killed_every_time_exhausts_backoff_and_says_how_many_attempts(tmp_path: Path):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    obs, ex, run = _run(tmp_path, code, backoff=2)
    assert (obs.state, obs.reason, obs.exit_code, obs.failures) == ("failed", "RetriesExhausted", 137, 3)
    d = decide(run, ex.observe(run), datetime.now(UTC))
    assert d.status.reason == "RetriesExhausted"
    assert "after 3 failed attempts (backoffLimit 2)" in d.status.message
    assert "killed by SIGKILL" in d.status.message


def _policy_action(policy: dict, exit_code: int, disrupted: bool) -> str:
    """What the Job controller does with a failed pod under `policy` (first matching rule; none: Count)."""
    for rule in policy["rules"]:
        on_codes = rule.get("onExitCodes")
        if on_codes and on_codes["operator"] == "In" and exit_code in on_codes["values"]:
            return rule["action"]
        on_conds = rule.get("onPodConditions") or []
        if disrupted and any(c["type"] == "DisruptionTarget" and c["status"] == "True" for c in on_conds):
            return rule["action"]
    return "Count"


def test_the_jobs_pod_failure_policy_is_the_machines_mapping():
    from godrun.controller.jobs import pod_failure_policy
    from godrun.core.machine import attempt_failure_action

    policy = pod_failure_policy("trainer")
    for code in range(1, 256):
        for disrupted in (False, True):
            assert _policy_action(policy, code, disrupted) == attempt_failure_action(code, disrupted=disrupted)
    assert attempt_failure_action(137) == "Count" and attempt_failure_action(2, disrupted=True) == "FailJob"


def test_a_leftover_process_group_is_stopped_before_the_stage_starts_again(tmp_path: Path):
    """What a SIGKILLed runner left running (found by pid + start time in job.json) is stopped, not doubled."""
    from godrun.local import procs

    spec = GodRunSpec.model_validate({"image": "local"})
    run = GodRunView("r", "local", 1, spec)
    ex = LocalExecutor(tmp_path, tmp_path / "status.json", echo=False)
    job = job_name("r", "train", 1)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    exited = threading.Thread(target=orphan.wait)  # reaped at once, as init reaps a real orphan
    exited.start()
    try:
        jdir = ex.job_dir(run, job)
        jdir.mkdir(parents=True)
        record = {"argv": ["x"], "attempts": 1, "failures": 0, "pid": orphan.pid}
        record["start_ticks"] = procs.start_ticks(orphan.pid)
        (jdir / "job.json").write_text(json.dumps(record))
        ex.apply(run, [CreateJob("train", job, 1, ("python", "-c", "print('fresh')"))])
        exited.join(timeout=15)
        assert orphan.returncode == -signal.SIGTERM
        assert _finish(ex, run).state == "succeeded"
        assert "LeftoverStopped" in (ex.run_dir(run) / "events.log").read_text()
    finally:
        orphan.kill()
        orphan.wait()


def test_a_pid_reused_by_another_process_is_left_alone(tmp_path: Path):
    from godrun.local import procs

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        assert not procs.kill_leftover(other.pid, (procs.start_ticks(other.pid) or 0) + 1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


RUNNER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from godrun.local import procs\n"
    "p = procs.spawn([sys.executable, '-c', 'import time; time.sleep(600)'], cwd=Path('.'), env={}, "
    "log=open('out.log', 'ab'))\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_stage_dies_with_its_runner(tmp_path: Path):
    """SIGKILL of the runner (no chance to clean up): the kernel kills the stage (PR_SET_PDEATHSIG)."""
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER], cwd=tmp_path, stdout=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )
    stage = int(runner.stdout.readline())
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{stage}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{stage}").exists(), "the stage outlived its runner"
