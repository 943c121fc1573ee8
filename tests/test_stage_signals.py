"""Every command run through godrun.errors.run_main (the trainer, the evaluator, the scripts, `godrun ...`) stops
on SIGTERM, the signal Kubernetes stops a container with, also as a container's PID 1, which ignores every signal
it has no handler for: exit 143, after its cleanup ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from run_support import ROOT
from tools import require_tool

ENV = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
# How long a stopped command may take to exit: on 2 cores busy with the real-node tests beside it, the PID-1 case
# once took over 20 s in CI (it passes in ~0.1 s alone). The command sleeps ten times as long, so one the signal
# did not stop still fails here.
STOP_SECONDS = 60


def _command(marker: Path) -> str:
    """A command whose main() waits, and records in `marker` that its `finally` ran."""
    return (
        "import pathlib, sys, time\n"
        "from godrun.errors import run_main\n"
        "def main(argv):\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(600)\n"
        "    finally:\n"
        f"        pathlib.Path({str(marker)!r}).write_text('cleaned up')\n"
        "sys.exit(run_main(main, []))\n"
    )


def _stop(proc: subprocess.Popen[str], pid: int) -> tuple[str, str]:
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    os.kill(pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("SIGTERM did not stop the command") from None


def test_sigterm_stops_a_command_with_exit_143_after_its_cleanup(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    argv = [sys.executable, "-c", _command(marker)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _, err = _stop(proc, proc.pid)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err, err
    assert marker.read_text() == "cleaned up"


def _child_pid(parent: int) -> int:
    for _ in range(200):
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if children:
            return int(children[0])
        subprocess.run(["sleep", "0.05"])
    raise AssertionError("unshare started no child")


def test_sigterm_stops_the_command_as_pid_1_of_its_namespace(tmp_path: Path) -> None:
    """As in a container: the command is PID 1 of a new PID namespace and gets SIGTERM from outside it."""
    unshare = require_tool("unshare", "util-linux")
    if subprocess.run([unshare, "--pid", "--fork", "true"], capture_output=True).returncode != 0:
        pytest.skip("no permission for a new PID namespace (needs root or user namespaces)")
    marker = tmp_path / "marker"
    argv = [unshare, "--pid", "--fork", "--kill-child", sys.executable, "-c", _command(marker)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _, err = _stop(proc, _child_pid(proc.pid))
    assert proc.returncode == 143, err
    assert marker.read_text() == "cleaned up"
