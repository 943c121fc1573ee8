"""The fast selective scan against an independent float64 sequential loop: values and every gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional

from godrun.model.scan import selective_scan

torch.set_num_threads(1)


def loop_scan_f64(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=True):
    """Written out scalar-by-definition (no shared helper with scan.py): h_t = e^{dA} h + d u B, y = C.h."""
    u, delta, A, B, C = (x.double() for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[None, :, None]
    if softplus:
        delta = torch.log1p(torch.exp(delta))
    b, d, length = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64)
    out = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A[None]) * h + dt * u[:, :, t, None] * B[:, None, :, t]
        out.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(out, -1)
    if D is not None:
        y = y + D.double()[None, :, None] * u
    if z is not None:
        y = y * z.double() * torch.sigmoid(z.double())
    return y


def make_inputs(b=2, d=6, n=4, length=29, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {
        "u": r(b, d, length),
        "delta": r(b, d, length) * 0.7,
        "A": -torch.exp(r(d, n) * 0.5 + 0.5),
        "B": r(b, n, length),
        "C": r(b, n, length),
        "D": r(d),
        "z": r(b, d, length),
        "delta_bias": r(d) * 0.5,
    }


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check_against_loop(inputs: dict, chunk: int | None, softplus: bool = True) -> None:
    names = list(inputs)
    ours_in = {k: v.clone().float().requires_grad_() for k, v in inputs.items()}
    ref_in = {k: v.clone().double().requires_grad_() for k, v in inputs.items()}
    y = selective_scan(**ours_in, delta_softplus=softplus, chunk_size=chunk)
    y_ref = loop_scan_f64(
        ref_in["u"], ref_in["delta"], ref_in["A"], ref_in["B"], ref_in["C"],
        ref_in.get("D"), ref_in.get("z"), ref_in.get("delta_bias"), softplus,
    )  # fmt: skip
    assert y.dtype == torch.float32 and y.shape == y_ref.shape
    assert rel_err(y, y_ref) <= 1e-5
    w = torch.randn(y_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(y, [ours_in[k] for k in names], w.float())
    grads_ref = torch.autograd.grad(y_ref, [ref_in[k] for k in names], w)
    for name, g, g_ref in zip(names, grads, grads_ref, strict=True):
        assert rel_err(g, g_ref) <= 1e-5, name


@pytest.mark.parametrize("optional", [(), ("D",), ("z",), ("delta_bias",), ("D", "z", "delta_bias")])
def test_values_and_gradients_match_float64_loop(optional):
    full = make_inputs()
    inputs = {k: full[k] for k in ("u", "delta", "A", "B", "C", *optional)}
    check_against_loop(inputs, chunk=None)
    check_against_loop(inputs, chunk=7)


@pytest.mark.parametrize("chunk", [1, 4, 7, 28, 29, 64])
def test_chunk_boundaries(chunk):
    check_against_loop(make_inputs(length=29, seed=2), chunk=chunk)


def test_backward_twice_with_retain_graph():
    x = {k: v.requires_grad_() for k, v in make_inputs(seed=5).items()}
    y = selective_scan(**x, chunk_size=5)
    first = torch.autograd.grad(y.sum(), list(x.values()), retain_graph=True)
    second = torch.autograd.grad(y.sum(), list(x.values()))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_without_softplus_and_long_sequence():
    inputs = make_inputs(b=1, d=3, n=5, length=301, seed=3)
    inputs["delta"] = functional.softplus(inputs["delta"])
    check_against_loop(inputs, chunk=37, softplus=False)


def test_grouped_bc_layout_and_bad_groups():
    x = make_inputs()
    y3 = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"])
    y4 = selective_scan(x["u"], x["delta"], x["A"], x["B"][:, None], x["C"][:, None], x["D"])
    assert torch.equal(y3, y4)
    with pytest.raises(ValueError, match="groups"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"][:, None].expand(-1, 2, -1, -1), x["C"], x["D"])


def test_autocast_bf16_computes_in_fp32():
    x = make_inputs(seed=4)
    ref = selective_scan(**x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u = torch.nn.functional.linear(x["u"].transpose(1, 2), torch.eye(x["u"].shape[1])).transpose(1, 2)
        assert u.dtype == torch.bfloat16
        y = selective_scan(u, x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"])
    assert y.dtype == torch.bfloat16
    assert rel_err(y.float(), ref) < 2e-2  # bf16 rounding of u and of the output only


def test_backward_keeps_only_chunk_boundary_states():
    """Saved tensors stay far below the full state history [b, d, n, L]."""
    b, d, n, length, chunk = 2, 8, 16, 200, 20
    x = {k: v.requires_grad_() for k, v in make_inputs(b, d, n, length).items()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = selective_scan(**x, chunk_size=chunk)
    assert max(map(math.prod, saved)) <= b * max(d, n) * length  # inputs, never a [b, d, n, L] history
    assert [s for s in saved if len(s) == 4] == [(-(-length // chunk), b, n, d)]  # chunk-boundary states
    y.sum().backward()
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in x.values())
