"""Helpers shared by the tests that run whole GodRuns (locally or through the test cluster)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAINER_PORT = 9090  # godrun.controller.jobs.TRAINER_METRICS_PORT: what the training Job's argv says

# Thresholds a few-step tiny model clears: the tests using them exercise the runner, the controller or the
# metrics pipeline, not the model (the demo and the evaluator tests hold the seed's thresholds).
LENIENT_GATES = {
    "psnrMeanMin": 0.0,
    "psnrStdMax": 100.0,
    "samMeanMax": 180.0,
    "tailPsnrMin": 0.0,
    "tailSamMax": 180.0,
    "tailFractionMin": 0.0,
    "roiTolerance": 1.0,
    "roiPassFractionMin": 0.0,
    "spuriousPeaksMax": 100000,
    "downstreamMargin": 10.0,
}


# Pods the test cluster's node stand-in runs: no GPU, small requests.
TEST_RESOURCES = {"gpus": 0, "cpu": "1", "memory": "1Gi"}


def tiny_training(epochs: int) -> dict[str, Any]:
    """The `tiny` preset from scratch (no warm start) for `epochs` epochs: a training run of seconds."""
    from godrun.trainer.presets import PRESETS

    return dict(PRESETS["tiny"]) | {"init_checkpoint": None, "epochs": epochs}


def godrun_body(name: str, **spec: Any) -> dict[str, Any]:
    """A GodRun for the test cluster (image godrun:test, TEST_RESOURCES); `spec` adds or replaces fields."""
    body_spec = {"image": "godrun:test", "resources": TEST_RESOURCES} | spec
    return {"apiVersion": "godrun.io/v1alpha1", "kind": "GodRun", "metadata": {"name": name}, "spec": body_spec}


def write_godrun(folder: Path, name: str, **spec: Any) -> Path:
    """godrun_body(name, **spec) as `folder/<name>.yaml`, the file `godrun run` reads."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(godrun_body(name, **spec), sort_keys=False))
    return path


def python_with_port(tmp: Path, port: int) -> Path:
    """A `python` for the node stand-in that moves the trainer's fixed metrics port to `port` (9090 may be taken)."""
    venv_python = ROOT / ".venv" / "bin" / "python"
    real = str(venv_python if venv_python.exists() else Path(sys.executable))
    script = tmp / "python"
    script.write_text(
        f"#!{real}\nimport os, sys\nargs = sys.argv[1:]\n"
        f"for i, a in enumerate(args[:-1]):\n"
        f"    if a == '--metrics_port' and args[i + 1] == '{TRAINER_PORT}':\n"
        f"        args[i + 1] = '{port}'\n"
        f"os.execv({real!r}, [{real!r}, *args])\n"
    )
    script.chmod(0o755)
    return script


def stop_process(popen: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: how a kubelet stops a container."""
    if popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(5)
