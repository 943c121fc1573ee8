"""The checkpoint's format: one flat dict that `torch.load(weights_only=True)` reads back.

Two state_dicts (`model`, and `ema` when the recipe averages weights), the metadata every checkpoint carries
(`CheckpointMeta`) and, in the `last` checkpoint only, what a resume needs (`ResumeState`). `to_payload`
is the one writer of that dict and `from_payload` its one reader: a key nobody writes, a missing one or a
value of the wrong type is refused with an InputError naming the key. Tensors are opaque here (no torch):
godrun/model/checkpoint.py saves and loads the dict and checks that the state_dicts hold tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from godrun.errors import InputError
from godrun.spec import Recipe, format_validation_error

MODEL_KEY = "model"
EMA_KEY = "ema"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NormMeta(_Strict):
    """The per-spectrum normalisation the weights were trained under (inference checks it is this code's)."""

    method: str
    scale_floor: float


class CondStats(_Strict):
    """The FiLM inputs: feature names in the model's order and the statistics that standardise them."""

    features: list[str]
    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> CondStats:
        if not len(self.features) == len(self.mean) == len(self.std):
            raise ValueError("features, mean and std differ in length")
        return self


class CheckpointMeta(_Strict):
    """Everything in a checkpoint but the tensors."""

    config: dict[str, Any]  # Recipe.model_dump(); validated on use (recipe()), as an older recipe may not validate
    epoch: int = Field(ge=0)
    panel: dict[str, Any] = Field(default_factory=dict)  # the epoch's panel scores
    norm: NormMeta | None = None
    cond_stats: CondStats | None = None
    data_hashes: dict[str, str | None] = Field(default_factory=dict)
    code_version: str = ""
    init_checkpoint_sha256: str | None = None
    scan_backend: str | None = None

    def recipe(self, where: str) -> Recipe:
        try:
            return Recipe.model_validate(self.config)
        except ValidationError as exc:
            why = "; ".join(format_validation_error(exc).splitlines())
            raise InputError(f"{where}: its config is not a valid recipe ({why})") from exc


class EarlyStopState(_Strict):
    best_score: float
    best_epoch: int | None = None
    bad_epochs: int = 0
    finished: bool = False
    best_rank: tuple[int, float, str] | None = None


class ResumeState(_Strict):
    """The `last` checkpoint's extra: optimiser, schedule, EMA count, RNG and early-stop state, history."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    ema_n_averaged: int = Field(default=0, ge=0)
    rng: Any = None  # the CPU generator's state (a uint8 tensor)
    early_stop: EarlyStopState
    history: list[dict[str, Any]] = Field(default_factory=list)


@dataclass
class Checkpoint:
    """A checkpoint in memory; `model`/`ema` map parameter names to tensors."""

    model: Mapping[str, Any]
    meta: CheckpointMeta
    ema: Mapping[str, Any] | None = None
    resume: ResumeState | None = None

    def weights(self, prefer_ema: bool = True) -> dict[str, Any]:
        """The weights inference uses: the EMA average when there is one (and it is preferred)."""
        return dict(self.ema) if prefer_ema and self.ema else dict(self.model)

    @property
    def has_ema(self) -> bool:
        return bool(self.ema)


_META_KEYS = frozenset(CheckpointMeta.model_fields)
_RESUME_KEYS = frozenset(ResumeState.model_fields)
KEYS = frozenset({MODEL_KEY, EMA_KEY}) | _META_KEYS | _RESUME_KEYS


def to_payload(ckpt: Checkpoint) -> dict[str, Any]:
    """The dict torch.save writes: the weights, the metadata and (last checkpoint) the resume state, flat."""
    payload: dict[str, Any] = {MODEL_KEY: dict(ckpt.model), EMA_KEY: None if ckpt.ema is None else dict(ckpt.ema)}
    payload |= ckpt.meta.model_dump(mode="python")
    if ckpt.resume is not None:
        payload |= {k: getattr(ckpt.resume, k) for k in _RESUME_KEYS}
        payload["early_stop"] = ckpt.resume.early_stop.model_dump()
    return payload


def from_payload(obj: object, where: str) -> Checkpoint:
    """The dict torch.load read, as a Checkpoint; anything this code would not have written is an InputError."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get(MODEL_KEY), Mapping):
        raise InputError(f"{where}: expected a dict with a {MODEL_KEY!r} state_dict")
    unknown = sorted(str(k) for k in obj if k not in KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}: not a checkpoint godrun wrote")
    ema = obj.get(EMA_KEY)
    if ema is not None and not isinstance(ema, Mapping):
        raise InputError(f"{where} {EMA_KEY!r}: expected a state_dict, found a {type(ema).__name__}")
    try:
        meta = CheckpointMeta.model_validate({k: v for k, v in obj.items() if k in _META_KEYS})
        resume_part = {k: v for k, v in obj.items() if k in _RESUME_KEYS}
        resume = ResumeState.model_validate(resume_part) if resume_part else None
    except ValidationError as exc:
        raise InputError(f"{where}: {format_validation_error(exc)}") from exc
    return Checkpoint(model=obj[MODEL_KEY], meta=meta, ema=ema, resume=resume)
