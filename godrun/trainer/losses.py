"""Training losses: λ-weighted MSE, derivative (global + ROI), ROI curvature and the dip loss.

Everything is torch and differentiable in the prediction. Dips are *located* by gate 3's own detector
(godrun.gates.metrics.dip_windows, no gradient) on each row's clean reference — the trainer computes
these windows once when it loads the data — and then *measured* on prediction and target inside those
windows with the gate's measurement (`_measure_window`): Gaussian smoothing truncated at 4 sigma, a
least-squares line through the two guard bands of baseline_guard_nm as baseline, relative absorbance
d = 1 - s/baseline integrated by the trapezoid rule; depth = max d, area = ∫d dλ / span, centroid =
Σλ·max(d,0)/Σmax(d,0). Measuring in the gate's windows matters: a fixed ±7 nm window let the wings of
wide dips over-fill until gate 3 failed them (docs/learning-quality.md). The one difference: the gate
de-spikes the guard bands (running median of 5) first, which has no useful gradient;
tests/test_dip_measure.py and tests/test_dip_loss_windows.py hold the two to agreement. With
`dip_spurious` the detector also runs on the predictions each step, and dips they have where the
reference has none are measured and charged the same way (`spurious_windows`).
"""

from __future__ import annotations

import torch
from torch.nn import functional

from godrun.gates.metrics import dip_windows
from godrun.spec import DipDetector, Recipe

DIP_REL_CAP = 1.0  # relative dip errors saturate here (the gates fail a dip at 0.1 already)
# Spurious dips: gate 3's detector (numpy, ~0.3 ms a spectrum) runs on at most this many predictions per step,
# so a large GPU batch pays for a sample of its rows only (the batch is shuffled).
SPURIOUS_ROWS = 16
# ... and at this fraction of the gate's minimum area, so a dip is charged before it grows into one gate 3 counts.
SPURIOUS_AREA_FRACTION = 0.5


class SpectralLoss(torch.nn.Module):
    """Total loss for normalised prediction/target [B, L]; `offset`/`scale` [B] de-normalise for the dip term.

    The recipe's weights, and its gate-3 detector (`Recipe.detector`, which the spec holds equal to the gates'
    while the dip loss is on) for the ROI and the dips."""

    # buffers (register_buffer): they follow the module's device
    wl: torch.Tensor
    lam: torch.Tensor
    roi: torch.Tensor
    roi1: torch.Tensor
    roi2: torch.Tensor
    kernel: torch.Tensor

    def __init__(self, recipe: Recipe, wavelengths: torch.Tensor, lambda_weights: torch.Tensor | None) -> None:
        super().__init__()
        self.recipe = recipe
        self.detector = det = recipe.detector
        wl = wavelengths.to(torch.float32)
        self.register_buffer("wl", wl)
        w = torch.ones_like(wl) if lambda_weights is None else lambda_weights.to(torch.float32)
        self.register_buffer("lam", w / w.mean())
        roi = (wl >= det.roi_min_nm) & (wl <= det.roi_max_nm)
        self.register_buffer("roi1", (roi[1:] & roi[:-1]).to(torch.float32))
        self.register_buffer("roi2", (roi[2:] & roi[1:-1] & roi[:-2]).to(torch.float32))
        self.register_buffer("roi", roi)
        self.span = float(wl[-1] - wl[0])
        self.dx = self.span / (len(wl) - 1)
        sigma = det.smooth_nm / self.dx
        half = max(1, round(4 * sigma))  # scipy's gaussian_filter1d truncation, as the gates smooth
        t = torch.arange(-half, half + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        self.register_buffer("kernel", (k / k.sum()).view(1, 1, -1))
        self.g = max(1, round(det.guard_nm / self.dx))
        self.dip_scale = 1.0  # the trainer's dip balance (Recipe.dip_balance), set before the first step

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        offset: torch.Tensor,
        scale: torch.Tensor,
        windows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`windows` [B, M, 2]: gate 3's dip windows of each row's reference (found on the target when None)."""
        cfg = self.recipe
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
            dip = self.dip_loss(raw_p, raw_t, base0, windows)
            total = total + cfg.dip_weight * self.dip_scale * dip
            parts["dip"] = dip
        logged = {k: float(v.detach()) for k, v in parts.items()}
        logged["total"] = float(total.detach())
        return total, logged

    # ------------------------------------------------------------------ dips

    def smooth(self, y: torch.Tensor) -> torch.Tensor:
        pad = self.kernel.shape[-1] // 2
        return functional.conv1d(functional.pad(y[:, None], (pad, pad), mode="replicate"), self.kernel)[:, 0]

    def windows_of(self, y: torch.Tensor, detector: DipDetector | None = None) -> torch.Tensor:
        """Gate 3's dip windows [B, M, 2] of spectra y (raw units), on the CPU (the trainer passes its references')."""
        win = dip_windows(
            y.detach().double().cpu().numpy(),
            self.wl.double().cpu().numpy(),
            detector or self.detector,
            self.recipe.dip_m,
        )
        return torch.from_numpy(win)

    def spurious_windows(self, raw_p: torch.Tensor, ref_windows: torch.Tensor) -> torch.Tensor | None:
        """Windows [B, M, 2] of the dips the prediction has where its reference has none (None when there are none).

        Gate 3 counts a predicted dip as spurious when it matches no reference dip; here a predicted window
        overlapping no reference window (a little more lenient than the gate's centre test). Searched on the
        first SPURIOUS_ROWS rows, at SPURIOUS_AREA_FRACTION of the gate's minimum area.
        """
        n = min(raw_p.shape[0], SPURIOUS_ROWS)
        detector = self.detector.model_copy(update={"min_area": self.detector.min_area * SPURIOUS_AREA_FRACTION})
        found = self.windows_of(raw_p[:n], detector)  # [n, M, 2]
        ref = ref_windows[:n].cpu()
        overlap = (
            (found[..., :1] <= ref[:, None, :, 1]) & (ref[:, None, :, 0] <= found[..., 1:]) & (ref[:, None, :, 0] >= 0)
        )
        keep = (found[..., 0] >= 0) & ~overlap.any(-1)
        if not keep.any():
            return None
        out = torch.full((raw_p.shape[0], found.shape[1], 2), -1, dtype=found.dtype)
        out[:n] = found.masked_fill(~keep[..., None], -1)
        return out.to(raw_p.device)

    def measure(self, y: torch.Tensor, windows: torch.Tensor, base0: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Gate 3's measurement of smoothed y [B, L] in windows [B, M, 2] (inclusive grid indices, -1 = none).

        As `godrun.gates.metrics._measure_window`: a least-squares line through the guard bands either side
        of the window is the baseline, d = 1 - y/baseline, trapezoid equivalent width, depth = max d.
        Rows without a dip get a dummy window (finite values, masked out by the caller).
        """
        g, n = self.g, y.shape[1]
        none = windows[..., 0] < 0
        first = int(torch.nonzero(self.roi)[0])
        lo = torch.where(none, torch.full_like(windows[..., 0], first), windows[..., 0])
        width = torch.where(none, torch.full_like(lo, 2), windows[..., 1] - lo)[..., None]
        rel = torch.arange(-g, int(width.max()) + 1 + g, device=y.device)
        pos = lo[..., None] + rel
        idx = pos.clamp(0, n - 1)
        seg = torch.gather(y[:, None].expand(-1, lo.shape[1], -1), 2, idx)
        x = self.wl[idx].to(y.dtype)
        in_win = (rel >= 0) & (rel <= width)
        guard = ((rel < 0) | ((rel > width) & (rel <= width + g))) & (pos >= 0) & (pos < n)
        if base0 is None:
            gw = guard.to(y.dtype)
            cnt = gw.sum(-1, keepdim=True)
            xm, ym = (x * gw).sum(-1, keepdim=True) / cnt, (seg * gw).sum(-1, keepdim=True) / cnt
            var = ((x - xm) ** 2 * gw).sum(-1, keepdim=True).clamp_min(1e-12)
            base = ym + ((x - xm) * (seg - ym) * gw).sum(-1, keepdim=True) / var * (x - xm)
        else:
            base = base0[:, None, None].expand_as(seg)
        d = 1.0 - seg / base.clamp_min(1e-6)  # relative absorbance, as the gates measure it
        dw = torch.where(in_win, d, torch.zeros_like(d))
        ends = d[..., g] + torch.gather(d, 2, g + width)[..., 0]
        ew = self.dx * (dw.sum(-1) - 0.5 * ends)  # trapezoid rule over the window
        depth = torch.where(in_win, d, torch.full_like(d, -torch.inf)).amax(-1)
        dpos = dw.clamp_min(0)
        centroid = (x * dpos).sum(-1) / (dpos.sum(-1) + 1e-12)
        return {"area": ew / self.span, "depth": depth, "centroid": centroid}

    def dip_loss(
        self, raw_p: torch.Tensor, raw_t: torch.Tensor, base0: torch.Tensor | None, windows: torch.Tensor | None
    ) -> torch.Tensor:
        cfg = self.recipe
        ps, ts = self.smooth(raw_p), self.smooth(raw_t)
        if windows is None:
            windows = self.windows_of(raw_t).to(raw_t.device)
        valid = windows[..., 0] >= 0
        with torch.no_grad():
            mt = self.measure(ts, windows, base0)
        mp = self.measure(ps, windows, base0)
        eps = max(self.detector.min_area, 1e-8)

        def rel(key: str, floor: float) -> torch.Tensor:
            # capped: a cutout window over a dip gives errors of 10x+ that would swamp every other term
            # squared: small errors (inside the gates' 10 %) barely pull, big misses dominate
            e = ((mp[key] - mt[key]).abs() / (mt[key].abs() + floor)).clamp(max=DIP_REL_CAP).square()
            under = mp[key] < mt[key]
            return torch.where(under, cfg.dip_underfill_factor * e, e)

        # gate 3 fails a dip when its area or its depth is off by more than its tolerance, whichever it is;
        # charging each feature by its own weight let depth (0.3 against 4.0 for area + equivalent width,
        # the same relative error twice) come out 11 % short while the area held (docs/learning-quality.md).
        # So the three weights together charge the worse of the gate's two features.
        w_feature = cfg.dip_w_area + cfg.dip_w_equivalent_width + cfg.dip_w_depth
        worst = torch.maximum(rel("area", eps), rel("depth", 1e-3))
        per_dip = (
            w_feature * worst
            + cfg.dip_w_centroid * ((mp["centroid"] - mt["centroid"]) / cfg.dip_window_half_nm).clamp(-1, 1).square()
        )
        w = valid.to(per_dip.dtype)
        total, count = (per_dip * w).sum(), w.sum()
        spurious = self.spurious_windows(raw_p, windows) if cfg.dip_spurious else None
        if spurious is not None:
            # a dip the reference lacks fails gate 3 as surely as a missed one: the same weights, on its area in
            # units of the gate's minimum area. Against zero, not the target's area: the reference has no dip
            # there, and a Noise2Noise target's area would only add its noise.
            sv = (spurious[..., 0] >= 0).to(per_dip.dtype)
            e = (self.measure(ps, spurious, base0)["area"].clamp_min(0) / eps).square()
            e = e / (1.0 + e)  # saturates like the cap above, but smoothly: a hard cap leaves it without gradient
            total, count = total + w_feature * (e * sv).sum(), count + sv.sum()
        return total / count.clamp_min(1.0)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / (mask.sum() * x.shape[0]).clamp_min(1.0)
