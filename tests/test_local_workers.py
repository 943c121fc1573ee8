"""`resources.gpus > 1` locally: the launcher's workers (torchrun starts each in a session of its own) die with
the runner when it is SIGKILLed, and a gpus count no node has is refused before anything starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from run_support import LENIENT_GATES, ROOT, godrun_body, tiny_training

from godrun.spec import GodRunSpec

ENV = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _workers(work: Path) -> list[int]:
    """Trainer worker processes (not the launcher) running in `work`, found from /proc."""
    found = []
    want = f"GODRUN_RUN_VOLUME={work.resolve()}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"godrun.trainer" in cmd and b"godrun.trainer.launch" not in cmd and want in env:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux")
def test_launcher_workers_die_with_a_sigkilled_runner(small_corpus: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(small_corpus / "data", work / "data")
    body = godrun_body("two", training=tiny_training(50), gates=LENIENT_GATES)
    body["spec"]["resources"] = {"gpus": 2, "cpu": "1", "memory": "1Gi"}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    cmd = [sys.executable, "-m", "godrun", "run", str(tmp_path / "two.yaml"), "--workdir", str(work), "--poll", "0.2"]
    runner = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2 and runner.poll() is None:
            time.sleep(0.3)
            workers = _workers(work)
        assert len(workers) == 2, f"runner ended ({runner.poll()}) or no workers started: {workers}"
        time.sleep(2.0)  # past the workers' start-up
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        left = [p for p in workers if _alive(p)]
        assert not left, f"workers still training after their runner was killed: {left}"
    finally:
        for pid in _workers(work):
            os.kill(pid, signal.SIGKILL)
        if runner.poll() is None:
            runner.kill()


@pytest.mark.parametrize("gpus", [65, 10**6])
def test_a_gpu_count_no_node_has_is_refused(gpus: int) -> None:
    with pytest.raises(ValidationError, match="gpus"):
        GodRunSpec.model_validate({"image": "x", "resources": {"gpus": gpus}})
