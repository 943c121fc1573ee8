"""Checkpoint files: safe loading (weights_only), atomic saving, warm-start shape checks.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that
`torch.load(weights_only=True)` reads it; anything needing pickle's code execution is refused.
Its keys and metadata are godrun.contract.checkpoint's (torch-free); `save_checkpoint` and
`load_checkpoint` are the only places a checkpoint file is written and read.
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

from godrun.contract.checkpoint import EMA_KEY, MODEL_KEY, Checkpoint, from_payload, to_payload
from godrun.contract.files import BEST_NAME, CHECKPOINT_SUFFIX, LAST_NAME
from godrun.errors import InputError, describe, reading
from godrun.fsio import atomic_write_bytes, read_bytes, sha256_bytes
from godrun.model.written import note_written

CALIBRATOR_PREFIX = "calibrator"
SUBSPACE_PREFIX = "subspace."  # the subspace prior's buffers: absent from checkpoints written before it


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
        return sorted(e.name for e in os.scandir(fd) if e.name.endswith(CHECKPOINT_SUFFIX) and e.name not in own)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, sha256: str | None = None) -> Checkpoint:
    """Read a checkpoint without executing code; anything unreadable that way, or that is not a checkpoint this
    code writes (unknown or mistyped keys, a state_dict holding something else than tensors), is an InputError.
    With `sha256`, the bytes read must have it (the file hashed and ranked is the one loaded)."""
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
    ckpt = from_payload(obj, f"checkpoint {path}")
    _check_state_dict(ckpt.model, f"checkpoint {path} {MODEL_KEY!r}")
    _check_state_dict(ckpt.ema, f"checkpoint {path} {EMA_KEY!r}")
    return ckpt


def _check_state_dict(state: Any, where: str) -> None:
    """A state_dict maps names to tensors; anything else in it (numbers, strings) is a foreign file."""
    if state is None:
        return
    if not isinstance(state, Mapping):
        raise InputError(f"{where}: expected a state_dict (name -> tensor), found a {type(state).__name__}")
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"{where}: entry {name!r} is a {type(tensor).__name__}, expected a tensor")


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> str:
    """Write atomically (temp file + rename): a kill mid-save leaves the previous file intact. Its sha256 goes
    into the folder's record of written checkpoints first (written.py); returns it."""
    buf = io.BytesIO()
    torch.save(to_payload(ckpt), buf)
    data = buf.getvalue()
    sha = sha256_bytes(data)
    note_written(path, sha)
    atomic_write_bytes(path, data)
    return sha


SHAPE_HINT = " (check --d_model/--n_layers/--d_state/--film_features)"


def check_shapes(own: Mapping[str, torch.Tensor], loaded: Mapping[str, Any], where: str, hint: str = "") -> None:
    """Every tensor both state_dicts have must agree in shape; the message names the tensor and both shapes."""
    for name, tensor in loaded.items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise InputError(
                f"{where}: tensor {name!r} has shape {tuple(tensor.shape)} in the checkpoint "
                f"but {tuple(own[name].shape)} in this model{hint}"
            )


def check_fits(
    own: Mapping[str, torch.Tensor],
    state: Mapping[str, Any],
    where: str,
    may_miss: tuple[str, ...] | str = (),
    hint: str = "",
) -> list[str]:
    """What a strict load_state_dict would refuse, as bad input: a shape that differs, a key missing from the
    checkpoint (except those containing one of `may_miss`) or one this model lacks. Returns the keys allowed
    missing."""
    check_shapes(own, state, where, hint)
    parts = (may_miss,) if isinstance(may_miss, str) else may_miss
    missing = [k for k in own if k not in state]
    allowed = [k for k in missing if any(p in k for p in parts)]
    bad_missing = [k for k in missing if k not in allowed]
    unexpected = [k for k in state if k not in own]
    if bad_missing or unexpected:
        detail = []
        if bad_missing:
            detail.append(f"missing in checkpoint: {', '.join(bad_missing[:5])}")
        if unexpected:
            detail.append(f"not in this model: {', '.join(unexpected[:5])}")
        raise InputError(f"{where}: state_dict does not fit the model ({'; '.join(detail)})")
    return allowed


def warm_start(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load `state` into `model`; only the calibrator head's and the subspace prior's keys may be missing (the
    trainer fits the prior on its own data after the warm start). Returns those keys."""
    where = f"--init_checkpoint {source}"
    state = {k: v for k, v in state.items() if not k.startswith(SUBSPACE_PREFIX)}
    allowed = check_fits(model.state_dict(), state, where, (CALIBRATOR_PREFIX, SUBSPACE_PREFIX), SHAPE_HINT)
    model.load_state_dict(state, strict=not allowed)
    return [k for k in allowed if not k.startswith(SUBSPACE_PREFIX)]


def config_sha256(config: Mapping[str, Any]) -> str:
    return sha256_bytes(json.dumps(config, sort_keys=True, default=str).encode())
