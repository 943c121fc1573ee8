"""Checkpoint safety: pickle payloads are refused, warm-start mismatches name the tensor and both shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from godrun.errors import InputError
from godrun.model import checkpoint as ck
from godrun.model.inference import build_model
from godrun.trainer.presets import preset_recipe


class _Payload:
    """Unpickling this runs os.system: exactly what weights_only loading must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": _Payload(marker)}, path)
    with pytest.raises(InputError, match="weights_only"):
        ck.load_checkpoint(path)
    assert not marker.exists()


def test_safe_checkpoint_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    ck.save_checkpoint(path, {"model": {"w": torch.arange(3.0)}, "epoch": 4, "panel": {"psnr": 20.5}})
    got = ck.load_checkpoint(path)
    assert got["epoch"] == 4 and torch.equal(got["model"]["w"], torch.arange(3.0))
    assert not list(tmp_path.glob(".ok.pt.*"))  # atomic: no temp file left behind


def test_warm_start_shape_mismatch_names_tensor_and_shapes() -> None:
    small = build_model(preset_recipe("tiny", d_model=16))
    big = build_model(preset_recipe("tiny", d_model=24))
    with pytest.raises(InputError) as err:
        ck.warm_start(small, big.state_dict(), "fold02.pt")
    msg = str(err.value)
    assert "fold02.pt" in msg and "'" in msg
    name = msg.split("'")[1]
    assert tuple(big.state_dict()[name].shape) != tuple(small.state_dict()[name].shape)
    assert str(tuple(big.state_dict()[name].shape)) in msg and str(tuple(small.state_dict()[name].shape)) in msg


def test_warm_start_allows_only_new_calibrator_keys() -> None:
    base = build_model(preset_recipe("tiny"))
    calib = build_model(preset_recipe("tiny", calibrator_head=True))
    added = ck.warm_start(calib, base.state_dict(), "god_run_best.pt")
    assert added and all("calibrator" in k for k in added)
    sd = base.state_dict()
    for k, v in sd.items():
        assert torch.equal(calib.state_dict()[k], v)
    sd.pop(next(iter(sd)))
    with pytest.raises(InputError, match="missing in checkpoint"):
        ck.warm_start(build_model(preset_recipe("tiny")), sd, "partial.pt")
