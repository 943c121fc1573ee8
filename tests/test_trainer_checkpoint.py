"""Checkpoint safety: pickle payloads are refused, warm-start mismatches name the tensor and both shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from godrun.contract.checkpoint import Checkpoint, CheckpointMeta
from godrun.errors import InputError
from godrun.model import checkpoint as ck
from godrun.model.inference import build_model, load_model
from godrun.model.network import MambaTinyUV
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
    meta = CheckpointMeta(config={}, epoch=4, panel={"psnr": 20.5})
    ck.save_checkpoint(path, Checkpoint(model={"w": torch.arange(3.0)}, meta=meta))
    got = ck.load_checkpoint(path)
    assert got.meta == meta and torch.equal(got.model["w"], torch.arange(3.0)) and got.ema is None
    assert not list(tmp_path.glob(".ok.pt.*"))  # atomic: no temp file left behind


def test_a_key_no_writer_writes_is_refused(tmp_path: Path) -> None:
    """The evaluator once read `has_ema`, which nothing wrote: the one reader refuses such a file (exit 2)."""
    path = tmp_path / "foreign.pt"
    recipe = preset_recipe("tiny", init_checkpoint=None)
    body = {"model": build_model(recipe).state_dict(), "config": recipe.model_dump(), "epoch": 1}
    torch.save(body, path)
    assert ck.load_checkpoint(path).meta.epoch == 1
    torch.save(body | {"has_ema": True}, path)
    with pytest.raises(InputError, match=r"foreign\.pt: unknown key\(s\) 'has_ema'"):
        ck.load_checkpoint(path)


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


def _tiny(path: Path, **weights_of: object) -> Path:
    """The tiny preset's checkpoint; `weights_of`: the recipe its weights come from (default: its own)."""
    recipe = preset_recipe("tiny", init_checkpoint=None, geometry_film=False)
    state = build_model(preset_recipe("tiny", init_checkpoint=None, geometry_film=False, **weights_of)).state_dict()
    ck.save_checkpoint(path, Checkpoint(model=state, meta=CheckpointMeta(config=recipe.model_dump(), epoch=1)))
    return path


def test_load_model_bad_files_are_input_errors(tmp_path: Path) -> None:
    good = _tiny(tmp_path / "good.pt")
    assert load_model(good).model.training is False
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match=r"truncated\.pt"):
        load_model(truncated)
    with pytest.raises(InputError, match=r"wrong.pt: weights do not fit its own config: tensor '.*' has shape"):
        load_model(_tiny(tmp_path / "wrong.pt", d_model=24))


def test_load_model_internal_errors_stay_crashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug while building or filling the model is not the file's fault: not an InputError (exit 2)."""
    good = _tiny(tmp_path / "good.pt")

    def broken(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("injected internal error")

    monkeypatch.setattr(MambaTinyUV, "load_state_dict", broken)
    with pytest.raises(RuntimeError, match="injected") as err:
        load_model(good)
    assert not isinstance(err.value, InputError)


def test_load_model_says_whether_it_used_ema_weights(tmp_path: Path) -> None:
    """Whether the EMA weights were used comes from the file's EMA state_dict (nothing writes a `has_ema`)."""
    path = _tiny(tmp_path / "noema.pt")  # its recipe says ema=True, but the file holds no EMA weights
    assert preset_recipe("tiny").ema and load_model(path).ema is False
    ckpt = ck.load_checkpoint(path)
    ckpt.ema = dict(ckpt.model)
    ck.save_checkpoint(path, ckpt)
    assert load_model(path).ema is True and load_model(path, prefer_ema=False).ema is False
