"""Mamba-1 block with mamba_ssm's ``Mamba`` parameter names, shapes and initialisation.

A state_dict moves unchanged between this block and ``mamba_ssm.modules.mamba_simple.Mamba``. On CUDA, when
mamba_ssm imports (it needs its compiled extension), its fused ``selective_scan_fn`` runs the scan; otherwise
``godrun.model.scan.selective_scan`` does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor, nn
from torch.nn import functional

from godrun.errors import InputError
from godrun.model.scan import selective_scan

# Set in the CUDA image: on a GPU, falling back to the pure-torch scan (about 30x slower) is an error.
REQUIRE_FUSED_ENV = "GODRUN_REQUIRE_FUSED_SCAN"
_import_error: list[str] = []


@cache
def _mamba_ssm_scan() -> Callable | None:
    try:  # mamba_ssm's __init__ imports its CUDA extension unguarded: any failure means "not available"
        import selective_scan_cuda  # noqa: F401  # the compiled kernel itself
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:
        _import_error[:] = [f"{type(exc).__name__}: {exc}"]
        return None
    return selective_scan_fn


def fused_scan_error() -> str | None:
    """Why mamba_ssm's fused scan did not import (None when it did or was never tried)."""
    return _import_error[0] if _import_error else None


def scan_backend(device: torch.device) -> str:
    """`mamba_ssm` (fused CUDA kernel) or `torch`; with GODRUN_REQUIRE_FUSED_SCAN=1 a CUDA fallback is an error."""
    if device.type != "cuda":
        return "torch"
    if _mamba_ssm_scan() is not None:
        return "mamba_ssm"
    if os.environ.get(REQUIRE_FUSED_ENV) == "1":
        raise InputError(
            f"{REQUIRE_FUSED_ENV}=1 but mamba_ssm's fused selective scan does not import on CUDA "
            f"({fused_scan_error()}); the image (spec.image) lacks a working mamba-ssm build"
        )
    return "torch"


class Mamba(nn.Module):
    """Selective state-space block: [B, L, d_model] -> [B, L, d_model]."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        use_mamba_ssm: bool = True,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_mamba_ssm = use_mamba_ssm
        di = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(di, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d_model, bias=False)
        self._init_dt(dt_min, dt_max, dt_init_floor)
        # Conventions mamba_ssm's training code reads: no weight decay on the SSM's A and D.
        setattr(self.A_log, "_no_weight_decay", True)  # noqa: B010 - a dynamic attribute by convention
        setattr(self.D, "_no_weight_decay", True)  # noqa: B010

    def _init_dt(self, dt_min: float, dt_max: float, floor: float) -> None:
        """dt_proj weight ~ U(+-dt_rank^-0.5); bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]."""
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        setattr(self.dt_proj.bias, "_no_reinit", True)  # noqa: B010

    def _causal_conv(self, x: Tensor) -> Tensor:
        """conv1d(x)[..., :L] on x stored [B, L, d_inner]; shifted multiply-adds, because CPU depthwise conv
        backward is slow and this keeps the [B, L, d_inner] layout the scan and x_proj read."""
        seqlen, k = x.shape[1], self.d_conv
        w = self.conv1d.weight[:, 0].to(x.dtype).t()  # [d_conv, d_inner]
        xp = functional.pad(x, (0, 0, k - 1, 0))
        bias = self.conv1d.bias
        assert bias is not None  # built with bias=True
        y = torch.addcmul(bias.to(x.dtype), w[0], xp[:, :seqlen])
        for j in range(1, k):
            y = torch.addcmul(y, w[j], xp[:, j : j + seqlen])
        return y

    def forward(self, hidden: Tensor) -> Tensor:
        xz = self.in_proj(hidden)  # [B, L, 2*d_inner]
        x, z = xz.chunk(2, dim=-1)
        x = functional.silu(self._causal_conv(x))  # [B, L, d_inner]
        dt, b, c = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = functional.linear(dt, self.dt_proj.weight)  # bias goes in as delta_bias, as in mamba_ssm
        A = -torch.exp(self.A_log.float())
        # mamba_ssm layout [B, channels, L], as transposed views: storage stays [B, L, channels]
        u, dt, b, c, z = (t.transpose(1, 2) for t in (x, dt, b, c, z))
        fused = _mamba_ssm_scan() if self.use_mamba_ssm and hidden.is_cuda else None
        if fused is not None:  # its kernel wants [B, channels, L] storage
            u, dt, b, c, z = (t.contiguous() for t in (u, dt, b, c, z))
        scan = fused or selective_scan
        y = scan(u, dt, A, b, c, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))
