"""Our Mamba block matches mamba_ssm's Mamba (mamba_ssm/modules/mamba_simple.py) in names, shapes and init."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional

from godrun.model.mamba import Mamba, scan_backend
from godrun.model.network import MambaTinyUV

torch.set_num_threads(1)


def mamba_ssm_table(d_model: int, d_state: int) -> list[tuple[str, tuple[int, ...]]]:
    """state_dict of mamba_ssm.Mamba(d_model, d_state) with defaults expand=2, d_conv=4, dt_rank='auto',
    conv_bias=True, bias=False, in state_dict order (own parameters A_log, D first, then submodules)."""
    d_inner, dt_rank = 2 * d_model, math.ceil(d_model / 16)
    return [
        ("A_log", (d_inner, d_state)),
        ("D", (d_inner,)),
        ("in_proj.weight", (2 * d_inner, d_model)),
        ("conv1d.weight", (d_inner, 1, 4)),
        ("conv1d.bias", (d_inner,)),
        ("x_proj.weight", (dt_rank + 2 * d_state, d_inner)),
        ("dt_proj.weight", (d_inner, dt_rank)),
        ("dt_proj.bias", (d_inner,)),
        ("out_proj.weight", (d_model, d_inner)),
    ]


@pytest.mark.parametrize(("d_model", "d_state"), [(384, 16), (48, 8), (17, 4)])
def test_state_dict_names_and_shapes_equal_mamba_ssm(d_model, d_state):
    ours = [(k, tuple(v.shape)) for k, v in Mamba(d_model, d_state=d_state).state_dict().items()]
    assert ours == mamba_ssm_table(d_model, d_state)


def test_model_blocks_carry_mamba_ssm_names():
    sd = MambaTinyUV(32, 3, 8).state_dict()
    for i in range(3):
        prefix = f"blocks.{i}.mixer."
        mixer = [(k.removeprefix(prefix), tuple(v.shape)) for k, v in sd.items() if k.startswith(prefix)]
        assert mixer == mamba_ssm_table(32, 8)


def test_initialisation_follows_mamba():
    torch.manual_seed(0)
    m = Mamba(64, d_state=16)
    assert torch.allclose(m.A_log, torch.log(torch.arange(1, 17.0)).expand(128, 16))
    assert torch.equal(m.D, torch.ones(128))
    dt = functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert dt.max() / dt.min() > 10  # log-uniform over two decades, not a constant
    bound = m.dt_rank**-0.5
    assert m.dt_proj.weight.abs().max() <= bound and m.dt_proj.weight.abs().max() > bound / 2


def test_causal_conv_equals_conv1d():
    m = Mamba(24, d_state=4)
    x = torch.randn(3, 50, m.d_inner)
    ref = m.conv1d(x.transpose(1, 2))[..., :50].transpose(1, 2)
    assert torch.allclose(m._causal_conv(x), ref, atol=1e-6)


def reference_mamba(m: Mamba, h: torch.Tensor) -> torch.Tensor:
    """The block written out in float64 with an explicit time loop (independent of scan.py)."""
    p = {k: v.double() for k, v in m.state_dict().items()}
    h = h.double()
    xz = h @ p["in_proj.weight"].T
    x, z = xz.chunk(2, dim=-1)
    x = functional.silu(
        functional.conv1d(x.transpose(1, 2), p["conv1d.weight"], p["conv1d.bias"], padding=3, groups=m.d_inner)
    )
    x = x[..., : h.shape[1]].transpose(1, 2)  # [B, L, d_inner]
    dt, b, c = (x @ p["x_proj.weight"].T).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = functional.softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])
    A = -torch.exp(p["A_log"])
    state = torch.zeros(h.shape[0], m.d_inner, m.d_state, dtype=torch.float64)
    ys = []
    for t in range(h.shape[1]):
        state = torch.exp(dt[:, t, :, None] * A) * state + (dt[:, t] * x[:, t])[..., None] * b[:, t, None, :]
        ys.append((state * c[:, t, None, :]).sum(-1) + p["D"] * x[:, t])
    y = torch.stack(ys, 1) * functional.silu(z)
    return y @ p["out_proj.weight"].T


def test_block_matches_float64_reference():
    torch.manual_seed(1)
    m = Mamba(20, d_state=6)
    h = torch.randn(2, 33, 20)
    assert scan_backend(h.device) == "torch"
    out = m(h)
    ref = reference_mamba(m, h)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-5


def test_block_is_causal():
    m = Mamba(16, d_state=4)
    h = torch.randn(1, 40, 16, requires_grad=True)
    m(h)[0, 20].sum().backward()
    assert h.grad[0, 21:].abs().max() == 0
    assert h.grad[0, :21].abs().max() > 0


def test_mamba_ssm_is_optional_and_never_used_on_cpu(monkeypatch):
    import godrun.model.mamba as mamba_mod

    mamba_mod._mamba_ssm_scan.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "mamba_ssm", None)  # import mamba_ssm -> ImportError
    assert mamba_mod._mamba_ssm_scan() is None
    mamba_mod._mamba_ssm_scan.cache_clear()
    calls = []
    monkeypatch.setattr(mamba_mod, "_mamba_ssm_scan", lambda: lambda *a, **k: calls.append(1))
    m = Mamba(16, d_state=4)
    assert m(torch.randn(1, 10, 16)).shape == (1, 10, 16)
    assert not calls


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scan_matches_cpu_and_mamba_ssm():
    torch.manual_seed(0)
    m = Mamba(64, d_state=16)
    h = torch.randn(4, 601, 64)
    ref = m(h)
    m_cuda = Mamba(64, d_state=16, use_mamba_ssm=False).cuda()
    m_cuda.load_state_dict(m.state_dict())
    out = m_cuda(h.cuda())
    assert ((out.cpu() - ref).norm() / ref.norm()).item() < 1e-4
    if scan_backend(torch.device("cuda")) == "mamba_ssm":
        m_cuda.use_mamba_ssm = True
        fused = m_cuda(h.cuda())
        assert ((fused.cpu() - ref).norm() / ref.norm()).item() < 1e-3
