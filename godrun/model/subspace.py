"""The subspace prior: a learnt, local, low-rank shape prior applied to the network's prediction.

The network removes the pixel-scale noise well but keeps part of the low-frequency noise (a few nm and wider),
which is what moves gate 3's guard-band baselines and its dip areas (docs/noise.md). A spectrum's shape over
~150 nm is close to a few-dimensional subspace of the training spectra's shapes there; noise mostly is not.
So, per window of `window` points (stride window // 6, tapered and averaged where windows overlap):

1. the prediction is fitted (inverse-noise weights) with the window's training mean, its first `rank`
   principal components and a quadratic baseline; the components' part is the *shape*;
2. the level — the mean's coefficient and the quadratic baseline — is fitted to the *measured* spectrum
   minus that shape, so a level or tilt the network got wrong (it can, on a rare group) comes from the data.

Everything here is learnt from the training rows' raw spectra before the first step (no clean references): the
principal components of the noise-whitened spectra, the noise level per wavelength from replicate pairs
(E[(a − b)²] / 2; without pairs, from first differences). The fit is affine-equivariant, so it runs on the
normalised spectra. Its parameters are buffers: they travel in the checkpoint's state_dict and are not trained.
The network is trained through the prior (the fit is linear in the prediction once the robust step has chosen
its points): at the first step the model is the prior applied to the raw input, and training only has to
improve on that. Applied after training alone, the prior inherited the network's early epochs, whose dips
were flattened, and gate 3 failed at those epochs (docs/noise.md).
Robust: each fit leaves out the points beyond ROBUST_MADS scaled MADs of its own residual and is redone
(spikes must not become broad dips).

Guarded (inference only, given each spectrum's normalisation scale): a spectrum unlike the training family
(a real sample after training on synthetic shapes) is pulled towards the family's shapes, by far more than its
noise. So per window the misfit — the mean of ((measured − output) / noise sd)², raw units, over the window's
MISFIT_KEEP smallest (a spike's few points drop out; a shape error over a third of the window does not), divided
by that mean's value for Gaussian noise: ≈ the residual's variance in units of the noise's — is compared with
its level on the training spectra themselves (the prior applied to each raw training input; GUARD_QUANTILE of
them, times GUARD_FACTOR).
Above that threshold the window gives way to the measured spectrum, all of it at twice the threshold: where the
model does not know the shape, it passes the measurement through rather than invent one.

Despiked (inference only, `despiked_input`): before the network sees a spectrum, a point further than SPIKE_MADS
robust sds from the running median of SPIKE_WIDTH points becomes that median; the sd is local (the scaled MAD of
the point-to-point steps over SPIKE_SCALE_POINTS points) and at least SPIKE_NOISE_FLOOR of the training noise sd,
and Gaussian noise alone does not reach 6 of them. The network and the guard then see the despiked spectrum.
Measured cause (default profile; docs/noise.md): a cosmic-ray spike came through a window that gave way at up to
its full height, or the network answered it with a dip of ~4 noise sds beside it, and gate 3's detector found a
spurious dip there (corpus seeds 303, 505, 1515: one epoch each). A running median of 5 removes spikes of one or
two points (the synthetic profiles' widths; most cosmic rays at 1 nm) and sits ~3 % of a 10 nm FWHM band's depth
off its apex, less for wider bands, which six noise sds rarely reach. Training is unchanged: the network learns
on spiky inputs and so knows spike-free ones.

Given back (inference only, with the scale; `giveback` [L], learnt at `fit`): where the components cannot hold the
training spectra's shapes (the grid's ends, a rank too small for a window), the prior's output departs from the
spectrum at scales of several points — a bias, not noise. Per wavelength, the share γ of the departure's
running mean over GIVEBACK_POINTS points (its low-passed part: pixel-scale noise the network removed is not given
back) that brings the output closer to the replicate partner is learnt from the training pairs, in the pass of
the prior over each raw input that calibrates the guard: γ = E[L(d)·(y − b)] / E[L(d)²] with d = y − m, y the prior's
output, m the measurement, b the partner, L the running mean, and only what exceeds GIVEBACK_SES standard errors
counted (both means also run over GIVEBACK_POINTS; γ stays 0 where the estimate is noise); then output −
γ·L(output − measured). Measured (docs/noise.md): under the `skspec-fit` profile the prior's shapes miss the clean
spectra by up to ~1e-3 at 200–260 nm, where the wavelet baseline kept the measured shape and won on PSNR; there
the give-back learns γ ≈ 0.25–0.4 and ~0 at 400–780 nm, and under the default profile, whose noise is far above
that bias, a mean of at most 0.07 in any band. The trainer learns γ again at the end of every epoch from the
network's outputs through the prior on that epoch's training steps (`GivebackSums`; pairwise Noise2Noise, rows
without a cutout): the bias `fit` measured is the model's only before the first step, and a network's early
shape errors are biases of the same kind (`skspec-fit` seed 1212, epoch 3: gate 4 failed at 1.002x raw's
downstream error with the fit's γ, 0.948x with the epoch's).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from godrun.model import normalise

ROBUST_MADS = 3.5
ROBUST_ITERATIONS = 3
MIN_ROWS_PER_RANK = 4  # fewer training spectra than this per component: no prior (its components are noise)
RIDGE = 1e-9  # relative to unit-norm columns
N_LEVEL = 4  # mean + constant, linear, quadratic: the columns refitted to the measured spectrum
GUARD_QUANTILE = 0.99
GUARD_FACTOR = 2.0  # the training panels' largest misfits were <= 1.6x the training rows' 99th percentile
MISFIT_KEEP = 0.95
CHI2_1_KEPT_MEAN = 0.759  # E[z² | z² below its 95th percentile] for standard normal z
FIT_CHUNK = 256  # training rows per batched solve when the guard is calibrated
SPIKE_WIDTH = 5  # points of the running median that an input is despiked against
SPIKE_MADS = 6.0
SPIKE_SCALE_POINTS = 51  # the despike's local noise scale: over this many point-to-point steps
SPIKE_NOISE_FLOOR = 0.25  # the despike's robust sd is at least this fraction of the training noise sd
MAD_TO_SD = 1.4826
GIVEBACK_POINTS = 9  # the give-back's low-pass: a running mean of this many points
GIVEBACK_SES = 2.0  # the give-back counts only the bias beyond this many standard errors of its estimate


def window_starts(length: int, window: int) -> list[int]:
    """Window starts: every window // 6 points, and one ending on the last point."""
    stride = max(1, window // 6)
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def noise_sd(raw: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Per-wavelength noise sd [L] of raw spectra [N, L]: from replicate pairs, else from first differences."""
    x = np.asarray(raw, np.float64)
    idx = np.arange(len(x))
    paired = partner != idx
    if paired.any():
        var = ((x[paired] - x[partner[paired]]) ** 2).mean(0) / 2
    else:
        d = np.diff(x, axis=1) ** 2 / 2
        var = np.concatenate([d[:, :1], (d[:, 1:] + d[:, :-1]) / 2, d[:, -1:]], axis=1).mean(0)
    var = np.where(np.isfinite(var), var, np.nan)
    median = np.nanmedian(var) if np.isfinite(var).any() else np.nan
    floor = max(median * 1e-6 if np.isfinite(median) else 1e-12, 1e-24)
    return np.sqrt(np.maximum(np.nan_to_num(var, nan=floor), floor))


class SubspacePrior(nn.Module):
    """Buffers: basis [W, window, N_LEVEL + rank] (raw units: mean, constant, x, x², components), the
    inverse-noise weights [W, window] (mean 1), the noise sd [W, window] (raw units) and the guard's
    thresholds [W] (0: that window is not guarded, as in a checkpoint written before the guard; not inf, which
    the trainer's weight average would turn into NaN), the give-back's share per wavelength [L] (0: none, as in a
    checkpoint written before it); `fitted` is 0 until `fit` ran (then the prior is the identity)."""

    basis: Tensor
    weight: Tensor
    noise: Tensor
    guard: Tensor
    giveback: Tensor
    fitted: Tensor

    def __init__(self, seq_len: int, rank: int, window: int) -> None:
        super().__init__()
        if not 1 <= rank < window <= seq_len:
            raise ValueError(f"subspace prior: need 1 <= rank < window <= length, got {rank}, {window}, {seq_len}")
        self.seq_len, self.rank, self.window = seq_len, rank, window
        self.starts = window_starts(seq_len, window)
        n_win = len(self.starts)
        self.register_buffer("basis", torch.zeros(n_win, window, N_LEVEL + rank))
        self.register_buffer("weight", torch.ones(n_win, window))
        self.register_buffer("noise", torch.ones(n_win, window))
        self.register_buffer("guard", torch.zeros(n_win))
        self.register_buffer("giveback", torch.zeros(seq_len))
        self.register_buffer("fitted", torch.zeros(()))
        taper = torch.hann_window(window + 2, periodic=False, dtype=torch.float64)[1:-1]
        cover = torch.zeros(seq_len, dtype=torch.float64)
        for s in self.starts:
            cover[s : s + window] += taper
        self._taper, self._cover = taper, cover

    def fit(self, raw: np.ndarray, partner: np.ndarray) -> bool:
        """Learn the windows' means, components and noise weights from training spectra [N, L] (raw units).
        Fewer than MIN_ROWS_PER_RANK x rank spectra leave the prior unfitted (the identity); returns whether
        it was fitted."""
        x = np.asarray(raw, np.float64)
        if x.ndim != 2 or x.shape[1] != self.seq_len:
            raise ValueError(f"subspace prior: expected [N, {self.seq_len}] spectra, got {x.shape}")
        if len(x) < MIN_ROWS_PER_RANK * self.rank:
            self.fitted.fill_(0.0)
            return False
        sd = noise_sd(x, np.asarray(partner))
        grid = np.linspace(-1.0, 1.0, self.window)
        basis, weight = [], []
        for s in self.starts:
            seg, w = x[:, s : s + self.window], 1.0 / sd[s : s + self.window]
            mean = seg.mean(0)
            modes = np.linalg.svd((seg - mean) * w, full_matrices=False)[2][: self.rank] / w
            basis.append(np.column_stack([mean, np.ones_like(grid), grid, grid * grid, *modes]))
            weight.append(w / w.mean())
        self.basis.copy_(torch.from_numpy(np.stack(basis)))
        self.weight.copy_(torch.from_numpy(np.stack(weight)))
        self.noise.copy_(torch.from_numpy(sd[self._index().view(len(self.starts), self.window).numpy()]))
        self.fitted.fill_(1.0)
        guard, giveback = self._calibrate(x, np.asarray(partner))
        self.guard.copy_(guard)
        self.giveback.copy_(giveback)
        return True

    @torch.no_grad()
    def _calibrate(self, x: np.ndarray, partner: np.ndarray) -> tuple[Tensor, Tensor]:
        """One pass of the prior over the training spectra [N, L] (raw units; each its own input) for the guard —
        GUARD_FACTOR x the GUARD_QUANTILE of their own misfits, per window — and the give-back: per wavelength,
        the share of the output's low-passed departure from the input that the replicate partner says is the
        prior's bias, not noise (module doc; 0 without replicate pairs)."""
        xn, params = normalise.normalise(x)
        scale, offset = torch.from_numpy(params["scale"]), torch.from_numpy(params["offset"])
        paired = torch.from_numpy(partner != np.arange(len(x)))
        misfits: list[Tensor] = []
        sums = GivebackSums(self.seq_len)
        for i in range(0, len(xn), FIT_CHUNK):
            rows = slice(i, i + FIT_CHUNK)
            m = torch.from_numpy(xn[rows])
            fit, mw = self._windows(m, m)
            misfits.append(self.misfit(fit, mw, scale[rows]))
            keep = paired[rows]
            if bool(keep.any()):
                unit, off = scale[rows][keep], offset[rows][keep]
                b = (torch.from_numpy(x[partner[rows][keep.numpy()]]) - off[:, None]) / unit[:, None]
                sums.add(self._merge(fit)[keep], m[keep], b, unit)
        guard = GUARD_FACTOR * torch.quantile(torch.cat(misfits), GUARD_QUANTILE, dim=0)
        share = sums.share()
        return guard, torch.zeros(self.seq_len) if share is None else share

    def _index(self, device: torch.device | None = None) -> Tensor:
        """The grid index of every window's points, flattened [W * window]."""
        starts = torch.tensor(self.starts, device=device)
        return (starts[:, None] + torch.arange(self.window, device=device)).flatten()

    def misfit(self, fit: Tensor, measured: Tensor, scale: Tensor) -> Tensor:
        """Per row and window [B, W]: the mean of the MISFIT_KEEP smallest ((measured − fit) · scale / noise sd)²
        over its value for Gaussian noise, for windows [B, W, window] in the normalised frame and each row's
        normalisation scale [B]."""
        r2 = ((measured - fit) * scale.to(fit)[:, None, None] / self.noise.to(fit)).square()
        kept = r2.sort(dim=-1).values[..., : max(1, round(MISFIT_KEEP * self.window))]
        return kept.mean(dim=-1) / CHI2_1_KEPT_MEAN

    def forward(self, pred: Tensor, measured: Tensor, scale: Tensor | None = None) -> Tensor:
        """pred, measured [B, L] (the same normalisation) -> the prediction through the prior (all windows at
        once: [B, W, window] gathered, fitted, and added back tapered). With `scale` [B] (each row's
        normalisation scale) and in eval mode, the guard passes windows the model does not know through."""
        if not bool(self.fitted) or pred.shape[0] == 0:
            return pred
        fit, mw = self._windows(pred, measured)
        guard = self.guard.to(fit)
        if scale is not None and not self.training and bool((guard > 0).any()):
            give = (self.misfit(fit, mw, scale) / guard.clamp_min(1e-300) - 1.0).clamp(0.0, 1.0)
            fit = fit + torch.where(guard > 0, give, 0.0)[..., None] * (mw - fit)
        out = self._merge(fit)
        if scale is not None and not self.training and bool(self.giveback.any()):
            out = out - self.giveback.to(out) * _running_mean(out - measured.to(out), GIVEBACK_POINTS)
        return out.to(pred.dtype)

    def _merge(self, fit: Tensor) -> Tensor:
        """Windows [B, W, window] -> spectra [B, L]: added back tapered, over the taper's cover."""
        dev = fit.device
        out = torch.zeros(fit.shape[0], self.seq_len, dtype=fit.dtype, device=dev)
        out.index_add_(1, self._index(dev), (fit * self._taper.to(dev)).flatten(1))
        return out / self._cover.to(dev)

    def despike(self, x: Tensor, scale: Tensor) -> Tensor:
        """Spectra [B, L] (normalised frame; rows' scale [B]) with each spike replaced by the running median
        (module doc)."""
        if self.seq_len <= SPIKE_WIDTH:
            return x
        x64 = x.double()
        med = _running_median(x64, SPIKE_WIDTH, odd=True)
        step = x64.diff(dim=-1)
        step = torch.cat([step, step[:, -2:-1]], dim=-1)  # [B, L]: the last point gets its one step
        width = min(SPIKE_SCALE_POINTS, self.seq_len - 1 - self.seq_len % 2)  # odd, and mirrored within the grid
        mad = _running_median((step - _running_median(step, width)).abs(), width)
        noise = torch.zeros(self.seq_len, dtype=x64.dtype, device=x.device)
        noise[self._index(x.device)] = self.noise.to(x64).flatten()
        floor = SPIKE_NOISE_FLOOR * noise / scale.to(x64)[:, None]
        sd = (MAD_TO_SD / 2**0.5 * mad).maximum(floor)  # white noise of sd s: steps of sd s·√2
        return torch.where((x64 - med).abs() > SPIKE_MADS * sd, med, x64).to(x.dtype)

    def _windows(self, pred: Tensor, measured: Tensor) -> tuple[Tensor, Tensor]:
        """The prior's fit and the measured spectrum in every window [B, W, window], float64."""
        idx, n_win = self._index(pred.device), len(self.starts)
        w = self.weight.double()  # [W, n]
        a = _unit_columns(self.basis.double() * w[..., None])  # [W, n, p]
        yw = pred.double()[:, idx].view(-1, n_win, self.window) * w
        cols = _Columns(a)
        shape = _combine(a[..., N_LEVEL:], cols.solve(_robust_keep(cols, yw), yw)[..., N_LEVEL:])  # [B, W, n]
        mw = measured.double()[:, idx].view(-1, n_win, self.window)
        rest = mw * w - shape
        lv = _Columns(a[..., :N_LEVEL])
        level = _combine(lv.a, lv.solve(_robust_keep(lv, rest), rest))
        return (shape + level) / w, mw


class GivebackSums:
    """The give-back's statistics (module doc), summed over batches of rows: `add` the prior's outputs y, the
    measured inputs m and the replicate partners (or clean references) b, all [B, L] in the rows' normalised
    frame, with the rows' scales [B] (the sums are in raw units); `share` is γ [L], or None before two rows."""

    def __init__(self, length: int) -> None:
        self.sums = torch.zeros(4, length, dtype=torch.float64)  # Σq, Σq², Σ L(low²), and the row count

    @torch.no_grad()
    def add(self, y: Tensor, m: Tensor, b: Tensor, scale: Tensor) -> None:
        if y.shape[0] == 0:
            return
        unit = scale.to(device=y.device, dtype=torch.float64)[:, None]
        y64 = y.double()
        low = _running_mean((y64 - m.to(y64)) * unit, GIVEBACK_POINTS)  # the low-passed departure from the input
        q = _running_mean(low * (y64 - b.to(y64)) * unit, GIVEBACK_POINTS)  # against the partner's miss
        den = _running_mean(low.square(), GIVEBACK_POINTS)
        rows = torch.stack([q.sum(0), q.square().sum(0), den.sum(0), torch.full_like(den[0], len(q))])
        self.sums += rows.cpu()

    def share(self) -> Tensor | None:
        q_sum, q_sq, den, count = self.sums
        n = float(count[0])
        if n < 2:
            return None
        mean = q_sum / n
        se = ((q_sq / n - mean.square()).clamp_min(0) / n).sqrt()
        share = (mean - GIVEBACK_SES * se).clamp_min(0) / (den / n).clamp_min(1e-300)
        return share.clamp(0.0, 1.0).float()


def with_prior(model: nn.Module, pred: Tensor, measured: Tensor, scale: Tensor | None = None) -> Tensor:
    """The prediction through the model's subspace prior (unchanged without one or before it is fitted); with
    the rows' normalisation `scale`, guarded (SubspacePrior.forward)."""
    prior = getattr(model, "subspace", None)
    return pred if prior is None else prior(pred, measured.to(pred.device), scale)


def despiked_input(model: nn.Module, x: Tensor, scale: Tensor) -> Tensor:
    """What a predictor feeds the network and the guard: x [B, L] (normalised; rows' scale [B]) despiked by the
    model's fitted prior (unchanged without one: the despike's floor is the prior's noise sd)."""
    prior = getattr(model, "subspace", None)
    if prior is None or not bool(prior.fitted) or x.shape[0] == 0:
        return x
    return prior.despike(x, scale.to(x.device))


def _running_median(x: Tensor, width: int, odd: bool = False) -> Tensor:
    """The centred running median of x [B, L] over `width` points. Past the ends x is mirrored: about the end
    value with `odd` (a slope continues: the end of a steep edge is its own median, where a plain mirror made a
    V of it and the despike took the end point of every real scan's 200 nm edge for a spike), else about the end
    point (for the steps' scale, where a held end would fill the last windows with one value)."""
    pad = width // 2
    if odd:
        head = 2 * x[:, :1] - x[:, 1 : pad + 1].flip(-1)
        tail = 2 * x[:, -1:] - x[:, -pad - 1 : -1].flip(-1)
        padded = torch.cat([head, x, tail], dim=-1)
    else:
        padded = nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
    return padded.unfold(-1, width, 1).median(-1).values


def _running_mean(x: Tensor, width: int) -> Tensor:
    """The running mean of `width` (odd) points of rows [B, L], the end points repeated beyond the grid."""
    pad = torch.nn.functional.pad(x[:, None], (width // 2, width // 2), mode="replicate")
    return torch.nn.functional.avg_pool1d(pad, width, stride=1)[:, 0]


def _unit_columns(a: Tensor) -> Tensor:
    """The columns scaled to unit norm: a window's mean and its components can differ in size by orders of
    magnitude, which the normal equations below would square."""
    return a / a.norm(dim=-2, keepdim=True).clamp_min(1e-300)


class _Columns:
    """A window's columns a [W, n, p] for weighted least squares with the windows as the batch: each point's
    outer product a aᵀ [W, n, p²] is formed once, and the normal equations of any weights over the points are
    one matrix product per window (a [B, W, n, p] copy of the columns per row was 5x slower; bench/prior.py)."""

    def __init__(self, a: Tensor) -> None:
        n_win, n, p = a.shape
        self.a = a
        self.outer = (a[..., :, None] * a[..., None, :]).reshape(n_win, n, p * p)

    def solve(self, keep: Tensor, b: Tensor) -> Tensor:
        """Least-squares coefficients [B, W, p] of b [B, W, n] over the kept points keep [B, W, n] (a tiny ridge
        keeps nearly collinear columns, a smooth mean next to the quadratic baseline, from blowing up)."""
        n_win, _, p = self.a.shape
        gram = (keep.transpose(0, 1) @ self.outer).view(n_win, -1, p, p).transpose(0, 1)  # [B, W, p, p]
        rhs = ((keep * b).transpose(0, 1) @ self.a).transpose(0, 1)  # [B, W, p]
        ridge = torch.eye(p, dtype=self.a.dtype, device=self.a.device) * RIDGE
        return torch.linalg.solve(gram + ridge, rhs)


def _combine(a: Tensor, coef: Tensor) -> Tensor:
    """The columns of a [W, n, p] weighted by coefficients [B, W, p]: [B, W, n], the windows as the batch."""
    return (coef.transpose(0, 1) @ a.transpose(-1, -2)).transpose(0, 1)


@torch.no_grad()
def _robust_keep(cols: _Columns, b: Tensor) -> Tensor:
    """Which points [B, W, n] of b count in its fit on the columns: those within ROBUST_MADS scaled MADs
    of the fit, refitted ROBUST_ITERATIONS times (a spike, or the wiggle a network left of one, drops out)."""
    keep = torch.ones_like(b)
    for _ in range(ROBUST_ITERATIONS):
        resid = b - _combine(cols.a, cols.solve(keep, b))
        mad = MAD_TO_SD * torch.where(keep > 0, resid.abs(), torch.nan).nanmedian(dim=-1, keepdim=True).values
        keep = (resid.abs() <= ROBUST_MADS * mad + 1e-300).to(b.dtype)
    return keep
