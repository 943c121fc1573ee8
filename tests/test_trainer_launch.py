"""`python -m godrun.trainer.launch`: torch's launcher with 2 CPU workers keeps a worker's exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _launch(tmp_path: Path, *trainer_args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "godrun.trainer.launch", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["-m", "godrun.trainer", "--device", "cpu", *trainer_args]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_bad_input_exits_2_through_the_launcher(tmp_path: Path) -> None:
    """Both workers find no training manifest and exit 2; plain torchrun would exit 1 (and the Job would retry)."""
    out = _launch(tmp_path, "--train_manifest", "missing.csv")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--train_manifest: manifest not found: missing.csv" in out.stderr


@pytest.mark.parametrize(("exitcode", "expected"), [(2, 2), (1, 1), (-9, 137), (-15, 143)])
def test_worker_exit_code_mapping(exitcode: int, expected: int) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from godrun.trainer.launch import worker_exit_code

    failures = {
        0: ProcessFailure(local_rank=0, pid=1, exitcode=exitcode, error_file="/nonexistent"),
        1: ProcessFailure(local_rank=1, pid=2, exitcode=1, error_file="/nonexistent"),
    }
    failures[1].timestamp = failures[0].timestamp + 1  # rank 0 failed first
    assert worker_exit_code(ChildFailedError("godrun.trainer", failures)) == expected
