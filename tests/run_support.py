"""Helpers shared by the tests that run whole GodRuns locally (the node tests: k8s/readme_cluster.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

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


# The resources of the GodRuns the local-run tests write: no GPU, small requests.
TEST_RESOURCES = {"gpus": 0, "cpu": "1", "memory": "1Gi"}


def tiny_training(epochs: int) -> dict[str, Any]:
    """The `tiny` preset from scratch (no warm start) for `epochs` epochs: a training run of seconds."""
    from godrun.trainer.presets import PRESETS

    return dict(PRESETS["tiny"]) | {"init_checkpoint": None, "epochs": epochs}


def godrun_body(name: str, **spec: Any) -> dict[str, Any]:
    """A GodRun (image godrun:test, TEST_RESOURCES); `spec` adds or replaces fields."""
    body_spec = {"image": "godrun:test", "resources": TEST_RESOURCES} | spec
    return {"apiVersion": "godrun.io/v1alpha1", "kind": "GodRun", "metadata": {"name": name}, "spec": body_spec}


def write_godrun(folder: Path, name: str, **spec: Any) -> Path:
    """godrun_body(name, **spec) as `folder/<name>.yaml`, the file `godrun run` reads."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(godrun_body(name, **spec), sort_keys=False))
    return path
