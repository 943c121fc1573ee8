"""Checkpoint files: safe loading (weights_only), atomic saving, warm-start shape checks.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that
`torch.load(weights_only=True)` reads it; anything needing pickle's code execution is refused.
Keys: model, ema, config, epoch, panel, data_hashes, code_version, norm, cond_stats, and for the
`last` checkpoint also optimizer, scheduler, ema_n_averaged, rng, early_stop, history, best_score.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from godrun.errors import InputError, describe, reading
from godrun.fsio import atomic_write_bytes, read_bytes, sha256_bytes

BEST_NAME = "{model}_best.pt"
LAST_NAME = "{model}_last.pt"
CALIBRATOR_PREFIX = "calibrator"


def best_path(checkpoint_dir: str | Path, model: str = "mamba_tiny_uv") -> Path:
    return Path(checkpoint_dir) / BEST_NAME.format(model=model)


def last_path(checkpoint_dir: str | Path, model: str = "mamba_tiny_uv") -> Path:
    return Path(checkpoint_dir) / LAST_NAME.format(model=model)


def foreign_checkpoints(checkpoint_dir: str | Path, model: str) -> list[str]:
    """The *.pt files in `checkpoint_dir` other than this model's best and last: a training that starts afresh
    there would have them judged with its own (the evaluator ranks every *.pt in the folder)."""
    from godrun.fsio import open_dir

    try:
        fd = open_dir(checkpoint_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    own = {BEST_NAME.format(model=model), LAST_NAME.format(model=model)}
    try:
        return sorted(e.name for e in os.scandir(fd) if e.name.endswith(".pt") and e.name not in own)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, sha256: str | None = None) -> dict[str, Any]:
    """Read a checkpoint without executing code; anything unreadable that way is an InputError (exit 2). With
    `sha256`, the bytes read must have it (the file hashed and ranked is the one loaded)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    with reading(path, "checkpoint"):
        data = read_bytes(path)  # confined: a symlinked checkpoint or folder below the run volume is refused
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise InputError(f"checkpoint {path}: changed since it was hashed (sha256 {sha256_bytes(data)}, was {sha256})")
    with reading(path, "checkpoint"):
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            why = describe(exc)
            raise InputError(f"checkpoint {path} refused: not loadable with weights_only=True ({why})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), Mapping):
        raise InputError(f"checkpoint {path}: expected a dict with a 'model' state_dict")
    for key in ("model", "ema"):
        _check_state_dict(obj.get(key), f"checkpoint {path} {key!r}")
    return obj


def _check_state_dict(state: Any, where: str) -> None:
    """A state_dict maps names to tensors; anything else in it (numbers, strings) is a foreign file."""
    if state is None:
        return
    if not isinstance(state, Mapping):
        raise InputError(f"{where}: expected a state_dict (name -> tensor), found a {type(state).__name__}")
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"{where}: entry {name!r} is a {type(tensor).__name__}, expected a tensor")


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> str:
    """Write atomically (temp file + rename): a kill mid-save leaves the previous file intact. Its sha256 goes
    into the folder's record of written checkpoints first (written.py); returns it."""
    from godrun.trainer.written import note_written

    buf = io.BytesIO()
    torch.save(dict(payload), buf)
    data = buf.getvalue()
    sha = sha256_bytes(data)
    note_written(path, sha)
    atomic_write_bytes(path, data)
    return sha


def check_shapes(own: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor], source: str) -> None:
    """Every tensor both state_dicts have must agree in shape; the message names the tensor and both shapes."""
    for name, tensor in loaded.items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise InputError(
                f"--init_checkpoint {source}: tensor {name!r} has shape {tuple(tensor.shape)} in the checkpoint "
                f"but {tuple(own[name].shape)} in this model (check --d_model/--n_layers/--d_state/--film_features)"
            )


def warm_start(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load `state` into `model`; only the calibrator head's new keys may be missing. Returns those keys."""
    own = model.state_dict()
    check_shapes(own, state, source)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    allowed = [k for k in missing if CALIBRATOR_PREFIX in k]
    bad_missing = [k for k in missing if k not in allowed]
    if bad_missing or unexpected:
        detail = []
        if bad_missing:
            detail.append(f"missing in checkpoint: {', '.join(bad_missing[:5])}")
        if unexpected:
            detail.append(f"not in this model: {', '.join(unexpected[:5])}")
        raise InputError(f"--init_checkpoint {source}: state_dict does not fit the model ({'; '.join(detail)})")
    model.load_state_dict(dict(state), strict=not allowed)
    return allowed


def weights_for_inference(ckpt: Mapping[str, Any], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    ema = ckpt.get("ema")
    return dict(ema) if prefer_ema and ema else dict(ckpt["model"])


def config_sha256(config: Mapping[str, Any]) -> str:
    return sha256_bytes(json.dumps(config, sort_keys=True, default=str).encode())
