"""Selective scan (Mamba-1 S6) in pure PyTorch: exact, chunked, with a hand-written backward.

Layout follows mamba_ssm's ``selective_scan_fn``: u, delta, z [batch, d_inner, L]; A [d_inner, d_state];
B, C [batch, d_state, L] (or [batch, 1, d_state, L]); D, delta_bias [d_inner]. Fastest when those tensors are
stored [batch, L, channels] (transposed views of Linear outputs, as in the Mamba block); outputs and gradients
come back stored that way.

Recurrence per (b, d, n):  h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t,   y_t = sum_n C_t h_t.

Autograd through a Python loop over L records ~L small graph nodes per op and is far slower backward than
forward (bench/README.md). Here the loop is one in-place ``addcmul_`` per step on a [batch, d_state, d_inner] slice, and
everything else (discretisation, readout, all gradients) runs as whole-chunk tensor ops. Forward keeps only
the state at chunk boundaries; backward recomputes each chunk's states from its boundary, runs the adjoint
recurrence dh_t = C_t dy_t + exp(delta_{t+1} A) dh_{t+1} in reverse, and forms the gradients. Peak memory is a
few chunks of [T, batch, d_state, d_inner], never the full [L, ...] state history. (Saving the full history for
small problems was tried: fresh multi-MB allocations cost more in page faults than the recomputation saves.)

The same code is the CUDA fallback when mamba_ssm is not installed (chunks of up to 512 MiB per buffer there);
it is exact but moves every [T, batch, d_state, d_inner] chunk through memory ~30 times, where mamba_ssm's
fused kernel keeps states in registers: prefer mamba_ssm on GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.nn import functional

# Per-tensor working-set target for one chunk [T, batch, d_state, d_inner] in fp32; backward holds ~3 of them.
_CHUNK_BYTES = {"cpu": 2 << 20, "cuda": 512 << 20}


def default_chunk_size(batch: int, d_inner: int, d_state: int, length: int, device: torch.device) -> int:
    budget = _CHUNK_BYTES.get(device.type, 64 << 20)
    per_step = batch * d_inner * d_state * 4
    return int(max(1, min(length, budget // max(per_step, 1))))


class _Workspace:
    """Chunk-sized buffers reused across chunks: fresh multi-MB tensors per chunk cost more in page faults than
    the arithmetic on them."""

    def __init__(self, like: Tensor, chunk: int, nb: int, ns: int, nd: int, count: int) -> None:
        self.bufs = [like.new_empty(chunk, nb, ns, nd) for _ in range(count)]

    def get(self, steps: int) -> list[Tensor]:
        return [b[:steps] for b in self.bufs]


@contextmanager
def _serial_steps(device: torch.device) -> Iterator[None]:
    """Run the per-step loop on one intra-op thread on CPU: each step is a ~100 K-element op, too small to pay
    for an OpenMP barrier, which on a busy machine costs many times the step (bench/README.md)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _chunk_states(dl: Tensor, du: Tensor, bt: Tensor, At: Tensor, h0: Tensor, decay: Tensor, states: Tensor) -> None:
    """Fill decay = exp(delta A) and the states h of one chunk (both [T,b,n,d]) from dl, du [T,b,d], bt [T,b,n]."""
    torch.mul(dl.unsqueeze(2), At, out=decay).exp_()
    torch.mul(bt.unsqueeze(-1), du.unsqueeze(2), out=states)
    prev = h0
    with _serial_steps(states.device):
        for s, a in zip(states.unbind(0), decay.unbind(0), strict=True):
            s.addcmul_(a, prev)
            prev = s


def _time_major(x: Tensor) -> Tensor:
    """Logical [b, c, L] -> contiguous [L, b, c]: moves whole rows when x is stored [b, L, c] (as in the block)."""
    return x.permute(2, 0, 1).contiguous()


def _from_time_major(x: Tensor) -> Tensor:
    """Contiguous [L, b, c] -> logical [b, c, L] stored [b, L, c], the layout Linear layers read and write."""
    return x.transpose(0, 1).contiguous().transpose(1, 2)


def _chunks(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(t0, min(t0 + chunk, length)) for t0 in range(0, length, chunk)]


class _SelectiveScanCore(torch.autograd.Function):
    """y[b,d,t] = sum_n C[b,n,t] h[b,d,n,t] for fp32 u, delta (already biased/softplussed), A, B, C.

    Internally states are [T, b, n, d]: d (hundreds) innermost keeps every broadcast and reduction over n
    (8-16) vectorised along d, and makes the readout and input-gradient contractions fast bmm shapes."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> Tensor:
        nb, nd, length = u.shape
        ns = A.shape[1]
        At = A.t().contiguous()
        dl, du = _time_major(delta), _time_major(delta * u)
        bt, ct = _time_major(B), _time_major(C)
        spans = _chunks(length, chunk)
        ws = _Workspace(u, min(chunk, length), nb, ns, nd, 2)
        boundaries = u.new_empty(len(spans), nb, ns, nd)
        y = u.new_empty(length, nb, nd)
        h = u.new_zeros(nb, ns, nd)
        for i, (t0, t1) in enumerate(spans):
            boundaries[i] = h
            decay, states = ws.get(t1 - t0)
            _chunk_states(dl[t0:t1], du[t0:t1], bt[t0:t1], At, boundaries[i], decay, states)
            m = (t1 - t0) * nb
            torch.bmm(ct[t0:t1].view(m, 1, ns), states.view(m, ns, nd), out=y[t0:t1].view(m, 1, nd))
            h = states[-1]
        ctx.save_for_backward(u, delta, A, B, C, boundaries)
        ctx.chunk = chunk
        return _from_time_major(y)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        u, delta, A, B, C, boundaries = ctx.saved_tensors
        nb, nd, length = u.shape
        ns = A.shape[1]
        At = A.t().contiguous()
        dl, du = _time_major(delta), _time_major(delta * u)
        bt, ct, gy = _time_major(B), _time_major(C), _time_major(grad_y.float())
        g_dl, g_du = torch.empty_like(dl), torch.empty_like(du)
        g_bt, g_ct = torch.empty_like(bt), torch.empty_like(ct)
        g_At = torch.zeros_like(At)
        ws = _Workspace(u, min(ctx.chunk, length), nb, ns, nd, 3)
        carry = u.new_zeros(nb, ns, nd)  # dL/dh at the last step of this chunk, from later chunks
        spans = _chunks(length, ctx.chunk)
        for i in range(len(spans) - 1, -1, -1):
            t0, t1 = spans[i]
            m, h0 = (t1 - t0) * nb, boundaries[i]
            decay, states, dh = ws.get(t1 - t0)
            _chunk_states(dl[t0:t1], du[t0:t1], bt[t0:t1], At, h0, decay, states)
            # contractions over d: multiply into a free buffer and sum the contiguous d axis (faster than bmm here)
            torch.sum(torch.mul(states, gy[t0:t1].unsqueeze(2), out=dh), -1, out=g_ct[t0:t1])
            torch.mul(ct[t0:t1].unsqueeze(-1), gy[t0:t1].unsqueeze(2), out=dh)
            dh[-1] += carry
            dh_steps, decay_steps = dh.unbind(0), decay.unbind(0)
            with _serial_steps(dh.device):
                for k in range(t1 - t0 - 2, -1, -1):
                    dh_steps[k].addcmul_(decay_steps[k + 1], dh_steps[k + 1])
            torch.bmm(bt[t0:t1].view(m, 1, ns), dh.view(m, ns, nd), out=g_du[t0:t1].view(m, 1, nd))
            # G = dL/d(delta*A) = dh_t * exp(delta_t A) * h_{t-1}, in place in `decay`; then `states` is free
            g = decay.mul_(dh)
            carry = g[0].clone()
            g[1:].mul_(states[:-1])
            g[0].mul_(h0)
            torch.sum(torch.mul(dh, du[t0:t1].unsqueeze(2), out=states), -1, out=g_bt[t0:t1])
            g_At += torch.mul(g, dl[t0:t1].unsqueeze(2), out=dh).view(m, ns, nd).sum(0)
            torch.sum(g.mul_(At), 2, out=g_dl[t0:t1])
        g_dl.addcmul_(g_du, _time_major(u))
        g_u = g_du.mul_(dl)
        g_u, g_dl, g_bt, g_ct = (_from_time_major(g) for g in (g_u, g_dl, g_bt, g_ct))
        return g_u, g_dl, g_At.t(), g_bt, g_ct, None


def _as_bl(x: Tensor, name: str) -> Tensor:
    """Accept mamba_ssm's variable B/C as [b, n, L] or [b, 1, n, L]."""
    if x.dim() == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{name}: grouped B/C with {x.shape[1]} groups is not supported")
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{name}: expected [batch, d_state, L], got {tuple(x.shape)}")
    return x


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """Selective scan with mamba_ssm's argument layout, computed in fp32 (also under autocast); returns u's dtype."""
    out_dtype = u.dtype
    with torch.autocast(device_type=u.device.type, enabled=False):
        u32, dt = u.float(), delta.float()
        if delta_bias is not None:
            dt = dt + delta_bias.float().unsqueeze(-1)
        if delta_softplus:
            dt = functional.softplus(dt)
        b32, c32 = _as_bl(B, "B").float(), _as_bl(C, "C").float()
        if A.is_complex():
            raise ValueError("A: complex A is not supported")
        nb, nd, length = u32.shape
        chunk = chunk_size or default_chunk_size(nb, nd, A.shape[1], length, u32.device)
        y = _SelectiveScanCore.apply(u32, dt, A.float(), b32, c32, int(chunk))
        if D is not None:
            y = y + u32 * D.float().unsqueeze(-1)
        if z is not None:
            y = y * functional.silu(z.float())
    return y.to(out_dtype)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """Plain sequential loop, differentiated by autograd: the reference (run it in float64) and the naive baseline."""
    B, C = _as_bl(B, "B"), _as_bl(C, "C")
    if delta_bias is not None:
        delta = delta + delta_bias.unsqueeze(-1)
    if delta_softplus:
        delta = functional.softplus(delta)
    decay = torch.exp(delta.unsqueeze(2) * A.unsqueeze(-1))  # [b, d, n, L]
    drive = (delta * u).unsqueeze(2) * B.unsqueeze(1)  # [b, d, n, L]
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = decay[..., t] * h + drive[..., t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[..., t]))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.unsqueeze(-1)
    if z is not None:
        y = y * functional.silu(z)
    return y
