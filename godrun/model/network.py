"""mamba_tiny_uv: a bidirectional Mamba-1 residual denoiser for UV spectra, FiLM-conditioned on dose features.

x [B, L] (normalised noisy spectrum) -> conv stem -> n_layers x (RMSNorm -> FiLM -> Mamba, residual)
-> RMSNorm -> Linear head = correction r; output x + r (the clean spectrum), optionally through the Act B
per-wavelength calibrator. Predictors then pass it through the subspace prior (subspace.py, `with_prior`).
Blocks alternate scan direction (even: left-to-right, odd: right-to-left) so that every position sees both
sides of the spectrum at the cost of a one-way scan (from 2 layers on). The head starts at zero: output = input.

Parameter names: blocks.{i}.norm, blocks.{i}.mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj}
(the mixer is named and shaped exactly like mamba_ssm's Mamba), stem, norm_f, head, film.*, calibrator.*,
subspace.* (buffers).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from godrun.model.mamba import Mamba
from godrun.model.subspace import SubspacePrior

DIRECTIONS = ("alternate", "forward")


class FiLM(nn.Module):
    """cond [B, n_cond] -> per-layer (gamma, beta) [n_layers, B, 1, d_model]; zero-initialised output = identity."""

    def __init__(self, n_cond: int, hidden: int, n_layers: int, d_model: int) -> None:
        super().__init__()
        self.n_layers, self.d_model = n_layers, d_model
        first, last = nn.Linear(n_cond, hidden), nn.Linear(hidden, 2 * n_layers * d_model)
        self.mlp = nn.Sequential(first, nn.SiLU(), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        out = self.mlp(cond).view(cond.shape[0], self.n_layers, 2, 1, self.d_model)
        return out[:, :, 0].transpose(0, 1), out[:, :, 1].transpose(0, 1)


class Calibrator(nn.Module):
    """Act B per-wavelength affine calibration plus a short residual conv; identity at initialisation."""

    def __init__(self, seq_len: int, kernel: int = 5) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(seq_len))
        self.shift = nn.Parameter(torch.zeros(seq_len))
        self.conv = nn.Conv1d(1, 1, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv.weight)
        assert self.conv.bias is not None  # Conv1d has a bias unless bias=False
        nn.init.zeros_(self.conv.bias)

    def forward(self, y: Tensor) -> Tensor:
        if y.shape[-1] != self.scale.shape[0]:
            raise ValueError(f"calibrator: spectrum length {y.shape[-1]} != calibrated length {self.scale.shape[0]}")
        return y * self.scale + self.shift + self.conv(y.unsqueeze(1)).squeeze(1)


class Block(nn.Module):
    def __init__(self, d_model: int, d_state: int, reverse: bool) -> None:
        super().__init__()
        self.reverse = reverse
        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.mixer = Mamba(d_model, d_state=d_state)

    def forward(self, h: Tensor, gamma: Tensor | None, beta: Tensor | None) -> Tensor:
        x = self.norm(h)
        if gamma is not None:
            x = x * (1 + gamma) + beta
        y = self.mixer(x.flip(1)).flip(1) if self.reverse else self.mixer(x)
        return h + y


class MambaTinyUV(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_layers: int,
        d_state: int,
        n_cond: int = 0,
        film_hidden_dim: int = 64,
        calibrator_head: bool = False,
        *,
        seq_len: int = 601,
        subspace_rank: int = 0,
        subspace_window: int = 151,
        direction: str = "alternate",
        stem_kernel: int = 5,
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.d_model, self.n_layers, self.d_state, self.n_cond = d_model, n_layers, d_state, n_cond
        self.stem = nn.Conv1d(1, d_model, stem_kernel, padding=stem_kernel // 2)
        self.blocks = nn.ModuleList(
            Block(d_model, d_state, reverse=direction == "alternate" and i % 2 == 1) for i in range(n_layers)
        )
        self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
        self.head = nn.Linear(d_model, 1)
        nn.init.zeros_(self.head.weight)  # start as the identity denoiser: output = input
        nn.init.zeros_(self.head.bias)
        self.film = FiLM(n_cond, film_hidden_dim, n_layers, d_model) if n_cond > 0 else None
        self.calibrator = Calibrator(seq_len) if calibrator_head else None
        # applied after the forward pass (and any test-time flip) by the predictors and the training step;
        # its buffers are learnt from the training rows before the first step, never by gradient
        self.subspace = SubspacePrior(seq_len, subspace_rank, subspace_window) if subspace_rank else None

    def act_b_parameters(self) -> Iterator[nn.Parameter]:
        """What Act B trains with a frozen backbone: the calibrator and FiLM."""
        for part in (self.calibrator, self.film):
            if part is not None:
                yield from part.parameters()

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"x: expected [batch, length], got {tuple(x.shape)}")
        gammas = betas = None
        if self.film is not None:
            if cond is None or cond.shape != (x.shape[0], self.n_cond):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond: expected [{x.shape[0]}, {self.n_cond}], got {got}")
            gammas, betas = self.film(cond.to(x.dtype))
        h = self.stem(x.unsqueeze(1)).transpose(1, 2).float()  # [B, L, d_model]; residual stream in fp32
        for i, block in enumerate(self.blocks):
            h = block(h, None if gammas is None else gammas[i], None if betas is None else betas[i])
        y = x + self.head(self.norm_f(h)).squeeze(-1).to(x.dtype)
        if self.calibrator is not None:
            y = self.calibrator(y)
        return y
