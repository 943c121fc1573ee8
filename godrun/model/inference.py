"""Inference for the evaluator and the trainer's panel: exactly the training normalisation, no aug, no TTA.

model, meta, _ = load_model("checkpoints/god_run/mamba_tiny_uv_best.pt")
cond = raw_cond_for(meta, "data/metadata/dose_features.csv", panel_manifest["group_id"])
pred = predict(model, meta, raw_spectra, cond, wavelengths)   # de-normalised, raw units
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from godrun.contract.checkpoint import CheckpointMeta
from godrun.errors import InputError
from godrun.model import normalise
from godrun.model.checkpoint import SUBSPACE_PREFIX, check_fits, load_checkpoint
from godrun.model.conditioning import raw_cond, standardise_cond
from godrun.model.dipcheck import unsupported_dips_filled
from godrun.model.subspace import despiked_input, with_prior
from godrun.spec import Recipe

if TYPE_CHECKING:
    from godrun.model.network import MambaTinyUV

__all__ = [
    "LoadedModel",
    "build_model",
    "denoise",
    "load_checkpoint",
    "load_model",
    "predict",
    "predict_normalised",
    "raw_cond_for",
]


def build_model(recipe: Recipe) -> MambaTinyUV:
    from godrun.model.network import MambaTinyUV

    n_cond = len(recipe.film_features) if recipe.geometry_film else 0
    return MambaTinyUV(
        d_model=recipe.d_model,
        n_layers=recipe.n_layers,
        d_state=recipe.d_state,
        n_cond=n_cond,
        film_hidden_dim=recipe.film_hidden_dim,
        calibrator_head=recipe.calibrator_head,
        seq_len=recipe.sequence_length,
        subspace_rank=recipe.subspace_rank,
        subspace_window=recipe.subspace_window,
    )


def resolve_device(name: str = "auto") -> torch.device:
    """auto, cpu, cuda or cuda:N; anything else, or a CUDA device this machine lacks, is bad input (exit 2)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = re.fullmatch(r"cpu|cuda(?::(\d{1,4}))?", name)
    if m is None:
        raise InputError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {name} but CUDA is not available")
        if m.group(1) is not None and int(m.group(1)) >= count:
            raise InputError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return torch.device(name)


class LoadedModel(NamedTuple):
    model: torch.nn.Module  # in eval mode, on the device
    meta: CheckpointMeta
    ema: bool  # the weights are the EMA average


def load_model(
    path: str | Path, device: str = "cpu", prefer_ema: bool = True, sha256: str | None = None
) -> LoadedModel:
    """The model with the checkpoint's (EMA) weights, and the checkpoint's metadata; with `sha256`, the file
    read must have it.

    Only what is wrong with the file is bad input (InputError, exit 2: unreadable, foreign, weights that do
    not fit its own config); anything else raised here is a bug and stays one (a crash, retried)."""
    ckpt = load_checkpoint(path, sha256)
    where = f"checkpoint {path}"
    recipe = ckpt.meta.recipe(where)
    normalise.check_meta(ckpt.meta.norm, where)
    model = build_model(recipe)
    weights = ckpt.weights(prefer_ema)
    old = check_fits(model.state_dict(), weights, f"{where}: weights do not fit its own config", SUBSPACE_PREFIX)
    model.load_state_dict(weights, strict=not old)  # a checkpoint from before the prior: predicts without it
    model.to(resolve_device(device)).eval()
    return LoadedModel(model, ckpt.meta, prefer_ema and ckpt.has_ema)


def raw_cond_for(
    meta: CheckpointMeta, dose_features_csv: str | Path, group_ids: Iterable[str], data: bytes | None = None
) -> np.ndarray | None:
    """Raw dose features [N, F] for rows with these group_ids, in the order the checkpoint's FiLM expects
    (`data`: the CSV's bytes, read and verified already)."""
    stats = meta.cond_stats
    if stats is None:
        return None
    return raw_cond(dose_features_csv, list(stats.features), np.asarray(list(group_ids), dtype=str), data=data)


@torch.no_grad()
def predict_normalised(
    model: torch.nn.Module, x: torch.Tensor, cond: torch.Tensor | None, batch_size: int, device: torch.device
) -> torch.Tensor:
    out = []
    for i in range(0, x.shape[0], batch_size):
        c = None if cond is None else cond[i : i + batch_size].to(device)
        out.append(model(x[i : i + batch_size].to(device), c).float().cpu())
    return torch.cat(out) if out else torch.empty_like(x)


def _denoise(
    model: torch.nn.Module,
    xn: torch.Tensor,
    scale: torch.Tensor,
    cond: torch.Tensor | None,
    batch_size: int,
    device: torch.device,
    tta_reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, despiked input), both normalised, for spectra xn [B, L] (rows' scale [B]), the model in eval
    mode (its mode restored after): the input despiked, the network (with `tta_reverse`, averaged with its run
    on the reversed input), and the guarded prior against the despiked input."""
    was_training = model.training
    model.eval()
    try:
        x = despiked_input(model, xn, scale)
        yn = predict_normalised(model, x, cond, batch_size, device)
        if tta_reverse:
            yn = 0.5 * (yn + predict_normalised(model, x.flip(1), cond, batch_size, device).flip(1))
        return with_prior(model, yn, x, scale), x
    finally:
        model.train(was_training)


def denoise(
    model: torch.nn.Module,
    xn: torch.Tensor,
    params: dict[str, np.ndarray],
    cond: torch.Tensor | None,
    recipe: Recipe,
    wavelengths: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    tta_reverse: bool = False,
) -> np.ndarray:
    """What every predictor returns for normalised spectra xn [B, L] in the frame `params` (offset, scale [B]):
    the network's and the prior's prediction de-normalised (raw units), then the dips the despiked measurement
    does not back by more than recipe.dip_evidence_se standard errors filled (godrun.model.dipcheck)."""
    scale = torch.from_numpy(np.asarray(params["scale"]))
    yn, x = _denoise(model, xn, scale, cond, batch_size, device, tta_reverse)
    pred, measured = normalise.denormalise(yn.numpy(), params), normalise.denormalise(x.numpy(), params)
    filled, _ = unsupported_dips_filled(pred, measured, wavelengths, recipe.detector, recipe.dip_evidence_se)
    return filled.astype(np.float32)


def predict(
    model: torch.nn.Module,
    meta: CheckpointMeta,
    raw: np.ndarray,
    cond: np.ndarray | None,
    wavelengths: np.ndarray,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """Denoise raw spectra [N, L] on the grid `wavelengths` [L] (nm); `cond` holds RAW dose features
    (standardised here with the checkpoint's stats)."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2:
        raise InputError(f"predict: expected [N, L] spectra, got shape {raw.shape}")
    xn, params = normalise.normalise(raw)
    stats = meta.cond_stats
    c = None
    if stats is not None:
        if cond is None:
            raise InputError("predict: this checkpoint uses FiLM; pass the dose features (raw_cond_for)")
        c = torch.from_numpy(standardise_cond(np.asarray(cond, np.float32), stats.mean, stats.std))
    wavelengths = np.asarray(wavelengths, dtype=np.float64)
    if wavelengths.shape != (raw.shape[1],):
        raise InputError(f"predict: {raw.shape[1]}-point spectra but a grid of shape {wavelengths.shape}")
    recipe = meta.recipe("predict: the checkpoint")
    dev = resolve_device(device)
    return denoise(model, torch.from_numpy(xn), params, c, recipe, wavelengths, batch_size=batch_size, device=dev)
