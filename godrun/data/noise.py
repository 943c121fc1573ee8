"""Spectrometer noise for the synthetic corpus, its parameters read from an instrument profile (JSON).

A replicate of a transmittance-like clean spectrum T(λ) is read as

    noisy = (T + e·σ_white(T, λ)·n) · (1 + drift) · (1 + c) + spikes

* white (per-pixel, independent) detector noise σ_white: either photon transfer through a dual-lamp
  throughput model (`kind: photon_transfer`, shot + read noise, see `throughput`) or a measured table
  (`kind: table`, σ_T per wavelength for T ≈ 1); e is a per-replicate exposure factor;
* drift: a per-replicate zero-mean offset and tilt (`drift.rel`, lamp flicker between the reference
  and sample scans) plus a lamp warm-up over the session, W(λ)·(1 − exp(−i/τ)) for the i-th replicate
  of a group (`drift.warmup_*`);
* c: correlated (low-frequency) noise along wavelength, a stationary AR(1) sequence with lag-1
  coefficient ρ and marginal σ(λ) (`correlated`): the fluctuation of the lamp's spectrum and of the
  optical bench between scans, which moves neighbouring wavelengths together; relative (a factor
  1 + c, as written above) or absolute (added in transmittance units: `correlated.mode`);
* spikes: cosmic-ray hits, one or two positive pixels (`spikes`).

Profiles live in godrun/data/profiles/NAME.json; docs/noise.md describes the physics and the fit.
The draw order of the random numbers is fixed (white, drift, spikes, then warm-up and correlated noise),
so a profile whose warm-up and correlated terms are zero gives the same bytes as the model before them.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from godrun.errors import InputError, reading

PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "default"

_Pos = Annotated[float, Field(gt=0)]
_NonNeg = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class _Table(_Model):
    """A function of wavelength given at knots (nm, strictly increasing); linear in between, flat outside."""

    nm: list[float] = Field(default_factory=list)
    value: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> _Table:
        if len(self.nm) != len(self.value):
            raise ValueError(f"nm has {len(self.nm)} knots but value has {len(self.value)}")
        if any(b <= a for a, b in zip(self.nm, self.nm[1:], strict=False)):
            raise ValueError("nm must be strictly increasing")
        return self

    def non_negative(self, what: str) -> None:
        if any(v < 0 for v in self.value):
            raise ValueError(f"{what} must be >= 0 at every knot")

    def at(self, wl: np.ndarray) -> np.ndarray:
        if not self.nm:
            return np.zeros_like(wl, dtype=np.float64)
        return np.interp(wl, self.nm, self.value)

    @property
    def is_zero(self) -> bool:
        return not any(self.value)


class PhotonTransfer(_Model):
    """Shot + read noise through a dual-lamp × grating × silicon-detector throughput (see `throughput`)."""

    kind: Literal["photon_transfer"] = "photon_transfer"
    n_full: _Pos = 3.0e6  # photo-electrons at full throughput and T = 1
    read_e: _NonNeg = 300.0  # read noise, electrons rms
    halogen_k: _Pos = 3000.0
    d2_share: _NonNeg = 0.06  # deuterium continuum relative to the halogen's peak on the grid
    d2_decay_nm: _Pos = 55.0
    blaze_nm: float = 420.0
    uv_edge_nm: float = 272.0  # the silicon detector's deep-UV cut-on ...
    uv_qe_floor: _NonNeg = 0.036  # ... below which it keeps a small response
    hot_mirror_nm: float = 690.0  # heat filter: blocks the halogen's NIR ...
    stopband: _NonNeg = 0.004  # ... transmitting this fraction in its stop band


class WhiteTable(_Model):
    """Measured white noise: σ_T at T ≈ 1 per wavelength (independent of the signal level)."""

    kind: Literal["table"] = "table"
    sigma: _Table

    @model_validator(mode="after")
    def _check(self) -> WhiteTable:
        self.sigma.non_negative("white.sigma")
        return self


class Correlated(_Model):
    sigma_rel: _Table = Field(default_factory=_Table)  # marginal σ of the AR(1) term
    rho: float = Field(default=0.0, ge=0.0, lt=1.0)  # lag-1 coefficient along the 1 nm grid
    # relative: multiplies the spectrum (lamp spectrum flicker); absolute: adds in transmittance units,
    # the same at any sample level (baseline wander of the reference/sample beams, stray light)
    mode: Literal["relative", "absolute"] = "relative"

    @model_validator(mode="after")
    def _check(self) -> Correlated:
        self.sigma_rel.non_negative("correlated.sigma_rel")
        return self


class Drift(_Model):
    rel: _NonNeg = 0.002  # per-replicate offset and tilt (relative, 1σ)
    warmup_rel: _Table = Field(default_factory=_Table)  # warm-up amplitude W(λ), relative, signed
    warmup_tau: _Pos = 10.0  # in replicates


class Spikes(_Model):
    prob: float = Field(default=0.35, ge=0.0, le=1.0)  # chance that a spectrum has any
    count: tuple[int, int] = (1, 3)  # per affected spectrum, inclusive
    width: tuple[int, int] = (1, 2)  # pixels, inclusive
    amp_rel: tuple[_NonNeg, _NonNeg] = (0.2, 0.6)  # uniform, times the spectrum's mean level

    @model_validator(mode="after")
    def _ordered(self) -> Spikes:
        for field in ("count", "width", "amp_rel"):
            lo, hi = getattr(self, field)
            if lo > hi or (field != "amp_rel" and not 1 <= lo <= hi <= 100):
                raise ValueError(
                    f"spikes.{field} must be [low, high] with low <= high (count, width: 1 <= low, high <= 100)"
                )
        return self


class NoiseProfile(_Model):
    name: str
    description: str = ""
    source: str = ""
    white: PhotonTransfer | WhiteTable = Field(default_factory=PhotonTransfer, discriminator="kind")
    exposure: tuple[_Pos, _Pos] = (0.8, 1.25)  # uniform per replicate, scales the white noise
    correlated: Correlated = Field(default_factory=Correlated)
    drift: Drift = Field(default_factory=Drift)
    spikes: Spikes = Field(default_factory=Spikes)

    @model_validator(mode="after")
    def _exposure_ordered(self) -> NoiseProfile:
        if self.exposure[0] > self.exposure[1]:
            raise ValueError("exposure must be [low, high] with low <= high")
        return self


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path: str | Path | None = None) -> NoiseProfile:
    """A packaged profile by name (`default`, `skspec-fit`, …) or a JSON file by path; bad input → InputError."""
    key = str(name_or_path) if name_or_path is not None else DEFAULT_PROFILE
    if key in available_profiles():
        return _packaged(key)
    path = Path(key)
    if not path.suffix and not path.exists():
        raise InputError(f"--noise-profile {key}: no such profile (packaged: {', '.join(available_profiles())})")
    return _read_profile(path)


@lru_cache(maxsize=8)
def _packaged(name: str) -> NoiseProfile:
    return _read_profile(PROFILE_DIR / f"{name}.json")


def _read_profile(path: Path) -> NoiseProfile:
    with reading(path, "noise profile"):
        raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        return NoiseProfile.model_validate(raw)
    except ValueError as exc:  # pydantic's ValidationError names the field
        raise InputError(f"noise profile {path}: {exc}") from None


# --------------------------------------------------------------------------- white noise


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _planck(wl_nm: np.ndarray, kelvin: float) -> np.ndarray:
    hc_over_k = 1.4388e7  # h·c/k in nm·K
    return 1.0 / (wl_nm**5 * np.expm1(hc_over_k / (wl_nm * kelvin)))


def throughput(wl: np.ndarray, p: PhotonTransfer | None = None) -> np.ndarray:
    """System throughput S(λ) = lamp × grating × detector, normalised to max 1 (docs/noise.md)."""
    p = p or PhotonTransfer()
    halogen = _planck(wl, p.halogen_k)
    halogen = halogen / halogen.max()
    d2 = np.exp(-(wl - 200.0) / p.d2_decay_nm)
    lamp = p.d2_share * d2 / d2.max() + halogen
    grating = np.exp(-0.5 * ((wl - p.blaze_nm) / 220.0) ** 2)
    qe = (p.uv_qe_floor + _sigmoid((wl - p.uv_edge_nm) / 6.0)) * np.exp(-0.5 * ((wl - 540.0) / 140.0) ** 2)
    hot_mirror = p.stopband + _sigmoid((p.hot_mirror_nm - wl) / 8.0)
    s = lamp * grating * qe * hot_mirror
    return s / s.max()


def white_sigma(clean: np.ndarray, wl: np.ndarray, profile: NoiseProfile) -> np.ndarray:
    """Per-pixel σ_T [..., L] of the white detector noise of a clean spectrum."""
    w = profile.white
    if isinstance(w, WhiteTable):
        return np.broadcast_to(w.sigma.at(wl), np.shape(clean)).copy()
    electrons_per_unit = w.n_full * throughput(wl, w)
    counts = np.clip(clean, 0.0, None) * electrons_per_unit
    return np.sqrt(counts + w.read_e**2) / electrons_per_unit


# --------------------------------------------------------------------------- correlated noise and drift


def ar1(rng: np.random.Generator, n: int, length: int, rho: float) -> np.ndarray:
    """[n, length] stationary AR(1) rows with unit variance and lag-1 autocorrelation rho."""
    e = rng.standard_normal((n, length))
    if rho == 0.0:
        return e
    from scipy.signal import lfilter

    s = math.sqrt(1.0 - rho * rho)
    e[:, 0] /= s  # x0 = e0 (stationary start), then x_k = rho·x_{k-1} + s·e_k
    return lfilter([s], [1.0, -rho], e, axis=1)


def add_noise(clean: np.ndarray, wl: np.ndarray, rng: np.random.Generator, profile: NoiseProfile) -> np.ndarray:
    """Noisy replicates [N, L] of clean rows [N, L]; row i is the i-th scan of the session (group)."""
    n, length = clean.shape
    lo, hi = profile.exposure
    exposure = rng.uniform(lo, hi, size=(n, 1))
    noisy = clean + exposure * white_sigma(clean, wl, profile) * rng.standard_normal((n, length))
    x = (wl - 500.0) / 300.0
    rel = profile.drift.rel
    drift = 1.0 + rel * (rng.standard_normal((n, 1)) + rng.standard_normal((n, 1)) * x[None, :])
    noisy = noisy * drift
    _add_spikes(noisy, clean.mean(axis=1), rng, profile.spikes)
    warm = profile.drift.warmup_rel
    if not warm.is_zero:
        t = np.arange(n, dtype=np.float64)[:, None]
        noisy = noisy * (1.0 + warm.at(wl)[None, :] * (1.0 - np.exp(-t / profile.drift.warmup_tau)))
    corr = profile.correlated
    if not corr.sigma_rel.is_zero:
        c = corr.sigma_rel.at(wl)[None, :] * ar1(rng, n, length, corr.rho)
        noisy = noisy * (1.0 + c) if corr.mode == "relative" else noisy + c
    return noisy


def _add_spikes(noisy: np.ndarray, level: np.ndarray, rng: np.random.Generator, sp: Spikes) -> None:
    n, length = noisy.shape
    for i in np.flatnonzero(rng.random(n) < sp.prob):
        for _ in range(int(rng.integers(sp.count[0], sp.count[1] + 1))):
            k = int(rng.integers(0, length - 1))
            width = int(rng.integers(sp.width[0], sp.width[1] + 1))
            noisy[i, k : k + width] += rng.uniform(*sp.amp_rel) * level[i]
