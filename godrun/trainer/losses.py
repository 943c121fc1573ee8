"""Training losses: λ-weighted MSE, derivative (global + ROI), ROI curvature and the dip loss.

Everything is torch and differentiable in the prediction. Dips are *located* on the target (no
gradient; a cheap detector of windows of ±dip_window_half_nm, not the gate's) and then *measured* on
prediction and target inside the same windows with the gate's measurement (godrun.gates.metrics
`_measure_window`): Gaussian smoothing truncated at 4 sigma, a least-squares line through the two
guard bands of baseline_guard_nm as baseline, relative absorbance d = 1 - s/baseline integrated by the
trapezoid rule; depth = max d, area = ∫d dλ / span, centroid = Σλ·max(d,0)/Σmax(d,0). The one
difference: the gate de-spikes the guard bands (running median of 5) first, which has no useful
gradient; tests/test_dip_measure.py holds the two to agreement on the panel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from godrun.spec import Recipe

DIP_REL_CAP = 1.0  # relative dip errors saturate here (the gates fail a dip at 0.1 already)


@dataclass(frozen=True)
class LossConfig:
    derivative_weight: float
    deriv_weight_roi: float
    curvature_weight_roi: float
    roi_min_nm: float
    roi_max_nm: float
    dip_loss: bool
    dip_weight: float
    dip_m: int
    dip_window_half_nm: float
    dip_min_area: float
    dip_w_area: float
    dip_w_equivalent_width: float
    dip_w_centroid: float
    dip_w_depth: float
    dip_underfill_factor: float
    dip_detect_sigma_nm: float
    baseline: str
    baseline_guard_nm: float

    @classmethod
    def from_recipe(cls, r: Recipe) -> LossConfig:
        return cls(
            derivative_weight=r.derivative_weight,
            deriv_weight_roi=r.deriv_weight_roi,
            curvature_weight_roi=r.curvature_weight_roi,
            roi_min_nm=r.deriv_roi_min,
            roi_max_nm=r.deriv_roi_max,
            dip_loss=r.dip_loss,
            dip_weight=r.dip_weight,
            dip_m=r.dip_m,
            dip_window_half_nm=r.dip_window_half_nm,
            dip_min_area=r.dip_min_area,
            dip_w_area=r.dip_w_area,
            dip_w_equivalent_width=r.dip_w_equivalent_width,
            dip_w_centroid=r.dip_w_centroid,
            dip_w_depth=r.dip_w_depth,
            dip_underfill_factor=r.dip_underfill_factor,
            dip_detect_sigma_nm=r.dip_detect_sigma_nm,
            baseline=r.baseline,
            baseline_guard_nm=r.baseline_guard_nm,
        )


class SpectralLoss(torch.nn.Module):
    """Total loss for normalised prediction/target [B, L]; `offset`/`scale` [B] de-normalise for the dip term."""

    # buffers (register_buffer): they follow the module's device
    wl: torch.Tensor
    lam: torch.Tensor
    roi: torch.Tensor
    roi1: torch.Tensor
    roi2: torch.Tensor
    kernel: torch.Tensor

    def __init__(self, cfg: LossConfig, wavelengths: torch.Tensor, lambda_weights: torch.Tensor | None) -> None:
        super().__init__()
        self.cfg = cfg
        wl = wavelengths.to(torch.float32)
        self.register_buffer("wl", wl)
        w = torch.ones_like(wl) if lambda_weights is None else lambda_weights.to(torch.float32)
        self.register_buffer("lam", w / w.mean())
        roi = (wl >= cfg.roi_min_nm) & (wl <= cfg.roi_max_nm)
        self.register_buffer("roi1", (roi[1:] & roi[:-1]).to(torch.float32))
        self.register_buffer("roi2", (roi[2:] & roi[1:-1] & roi[:-2]).to(torch.float32))
        self.register_buffer("roi", roi)
        self.span = float(wl[-1] - wl[0])
        self.dx = self.span / (len(wl) - 1)
        sigma = cfg.dip_detect_sigma_nm / self.dx
        half = max(1, round(4 * sigma))  # scipy's gaussian_filter1d truncation, as the gates smooth
        t = torch.arange(-half, half + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        self.register_buffer("kernel", (k / k.sum()).view(1, 1, -1))
        self.h = max(1, round(cfg.dip_window_half_nm / self.dx))
        self.g = max(1, round(cfg.baseline_guard_nm / self.dx))

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        pred, target = pred.float(), target.float()
        err = pred - target
        mse = (err.pow(2) * self.lam).mean()
        d1 = err.diff(dim=1)
        d2 = d1.diff(dim=1)
        deriv = d1.pow(2).mean()
        deriv_roi = _masked_mean(d1.pow(2), self.roi1)
        curv_roi = _masked_mean(d2.pow(2), self.roi2)
        total = mse + cfg.derivative_weight * deriv + cfg.deriv_weight_roi * deriv_roi
        total = total + cfg.curvature_weight_roi * curv_roi
        parts = {"mse": mse, "deriv": deriv, "deriv_roi": deriv_roi, "curv_roi": curv_roi}
        if cfg.dip_loss and cfg.dip_weight > 0:
            raw_p = pred * scale[:, None] + offset[:, None]
            raw_t = target * scale[:, None] + offset[:, None]
            base0 = offset if cfg.baseline == "none" else None
            dip = self.dip_loss(raw_p, raw_t, base0)
            total = total + cfg.dip_weight * dip
            parts["dip"] = dip
        logged = {k: float(v.detach()) for k, v in parts.items()}
        logged["total"] = float(total.detach())
        return total, logged

    # ------------------------------------------------------------------ dips

    def smooth(self, y: torch.Tensor) -> torch.Tensor:
        pad = self.kernel.shape[-1] // 2
        return F.conv1d(F.pad(y[:, None], (pad, pad), mode="replicate"), self.kernel)[:, 0]

    def locate(self, target_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dip centres [B, M] (indices) and validity [B, M] found on the smoothed target."""
        h, g, m = self.h, self.g, self.cfg.dip_m
        _b, n = target_s.shape
        pad = h + g
        yp = F.pad(target_s[:, None], (pad, pad), mode="replicate")[:, 0]
        cs = F.pad(yp.cumsum(1), (1, 0))
        c = torch.arange(n, device=yp.device) + pad

        def seg_mean(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:  # inclusive [lo, hi]
            return (cs[:, hi + 1] - cs[:, lo]) / (hi - lo + 1).to(yp.dtype)

        left = seg_mean(c - h - g, c - h - 1)
        right = seg_mean(c + h + 1, c + h + g)
        win_sum = cs[:, c + h + 1] - cs[:, c - h]
        base = 0.5 * (left + right)
        safe = base.clamp_min(1e-12)
        area = self.dx * ((2 * h + 1) - win_sum / safe) / self.span
        depth = 1.0 - target_s / safe
        local_min = -F.max_pool1d(-target_s[:, None], 2 * h + 1, stride=1, padding=h)[:, 0]
        ok = (target_s <= local_min) & self.roi[None] & (base > 0) & (area >= self.cfg.dip_min_area) & (depth > 0)
        score = torch.where(ok, area, torch.full_like(area, -torch.inf))
        k = min(m, n)
        top, idx = score.topk(k, dim=1)
        return idx, torch.isfinite(top)

    def measure(self, y: torch.Tensor, centres: torch.Tensor, base0: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Area, depth, centroid and equivalent width of the windows around `centres` [B, M]."""
        h, g = self.h, self.g
        pad = h + g
        yp = F.pad(y[:, None], (pad, pad), mode="replicate")[:, 0]
        offs = torch.arange(-h - g, h + g + 1, device=y.device)
        idx = centres[..., None] + pad + offs  # [B, M, K]
        seg = torch.gather(yp[:, None].expand(-1, centres.shape[1], -1), 2, idx)
        win = seg[..., g : g + 2 * h + 1]
        if base0 is None:
            # least-squares line through both guard bands (symmetric about the centre: mean + slope·x)
            guards = torch.cat([seg[..., :g], seg[..., -g:]], dim=-1)
            x = torch.cat([offs[:g], offs[-g:]]).to(y.dtype)
            slope = (guards * x).sum(-1, keepdim=True) / (x * x).sum()
            pos = torch.arange(-h, h + 1, device=y.device, dtype=y.dtype)
            base = guards.mean(-1, keepdim=True) + slope * pos
        else:
            base = base0[:, None, None].expand_as(win)
        d = 1.0 - win / base.clamp_min(1e-6)  # relative absorbance, as the gates measure it
        ew = self.dx * (d.sum(-1) - 0.5 * (d[..., 0] + d[..., -1]))  # trapezoid rule
        depth = d.amax(-1)
        wl = self.wl[(centres[..., None] + torch.arange(-h, h + 1, device=y.device)).clamp(0, len(self.wl) - 1)]
        dpos = d.clamp_min(0)
        centroid = (wl * dpos).sum(-1) / (dpos.sum(-1) + 1e-12)
        return {"area": ew / self.span, "depth": depth, "centroid": centroid, "ew": ew}

    def dip_loss(self, raw_p: torch.Tensor, raw_t: torch.Tensor, base0: torch.Tensor | None) -> torch.Tensor:
        cfg = self.cfg
        ps, ts = self.smooth(raw_p), self.smooth(raw_t)
        with torch.no_grad():
            centres, valid = self.locate(ts)
            mt = self.measure(ts, centres, base0)
        mp = self.measure(ps, centres, base0)
        eps = max(cfg.dip_min_area, 1e-8)

        def rel(key: str, floor: float) -> torch.Tensor:
            # capped: a cutout window over a dip gives errors of 10x+ that would swamp every other term
            # squared: small errors (inside the gates' 10 %) barely pull, big misses dominate
            e = ((mp[key] - mt[key]).abs() / (mt[key].abs() + floor)).clamp(max=DIP_REL_CAP).square()
            under = mp[key] < mt[key]
            return torch.where(under, cfg.dip_underfill_factor * e, e)

        per_dip = (
            cfg.dip_w_area * rel("area", eps)
            + cfg.dip_w_depth * rel("depth", 1e-3)
            + cfg.dip_w_equivalent_width * rel("ew", eps * self.span)
            + cfg.dip_w_centroid * ((mp["centroid"] - mt["centroid"]) / cfg.dip_window_half_nm).clamp(-1, 1).square()
        )
        w = valid.to(per_dip.dtype)
        return (per_dip * w).sum() / w.sum().clamp_min(1.0)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / (mask.sum() * x.shape[0]).clamp_min(1.0)
