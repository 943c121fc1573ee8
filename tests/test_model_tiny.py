"""MambaTinyUV: learns, is conditioned by FiLM, sees both sides of the spectrum, Act B starts as identity."""

from __future__ import annotations

import time

import pytest
import torch

from godrun.model.network import MambaTinyUV

torch.set_num_threads(1)


def synthetic_batch(n: int = 8, length: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, 1, length)
    centres, widths = torch.rand(n, 3, 1, generator=g), 0.03 + 0.1 * torch.rand(n, 3, 1, generator=g)
    clean = -(torch.exp(-(((grid - centres) / widths) ** 2))).sum(1) + grid * torch.randn(n, 1, generator=g)
    noisy = clean + 0.2 * torch.randn(n, length, generator=g)
    return noisy, clean


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    noisy, clean = synthetic_batch()
    model = MambaTinyUV(32, 2, 8, seq_len=noisy.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    start = time.perf_counter()
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    elapsed = time.perf_counter() - start
    assert min(losses[-10:]) < losses[0] / 10, (losses[0], losses[-10:])
    assert elapsed < 60  # ~3 s of CPU; generous for a shared machine


def test_residual_output_is_identity_at_init():
    x = torch.randn(4, 64)
    assert torch.equal(MambaTinyUV(16, 2, 4, seq_len=64)(x), x)


def with_random_head(model: MambaTinyUV) -> MambaTinyUV:
    torch.nn.init.normal_(model.head.weight, std=0.5)
    if model.film is not None:
        torch.nn.init.normal_(model.film.mlp[2].weight, std=0.5)
    return model


def test_film_changes_output_when_cond_changes():
    torch.manual_seed(0)
    model = MambaTinyUV(16, 2, 4, n_cond=3, film_hidden_dim=8, seq_len=50)
    x, cond = torch.randn(2, 50), torch.randn(2, 3)
    with_random_head(model)
    assert torch.equal(model(x, cond), model(x, cond))
    assert (model(x, cond) - model(x, cond + 1.0)).abs().max() > 1e-3
    torch.nn.init.zeros_(model.film.mlp[2].weight)
    torch.nn.init.zeros_(model.film.mlp[2].bias)
    assert torch.allclose(model(x, cond), model(x, cond + 1.0))  # zeroed FiLM output: cond has no path


def test_film_cond_shape_is_checked():
    model = MambaTinyUV(16, 1, 4, n_cond=3, seq_len=20)
    with pytest.raises(ValueError, match="cond"):
        model(torch.randn(2, 20))
    with pytest.raises(ValueError, match="cond"):
        model(torch.randn(2, 20), torch.randn(2, 4))


def test_alternating_blocks_see_both_sides():
    torch.manual_seed(0)
    model = with_random_head(MambaTinyUV(16, 2, 4, seq_len=40))
    x = torch.randn(1, 40, requires_grad=True)
    model(x)[0, 5].backward()
    assert x.grad[0, 30:].abs().max() > 0 and x.grad[0, :5].abs().max() > 0


def test_calibrator_is_identity_when_loading_a_god_run_checkpoint():
    torch.manual_seed(0)
    god = with_random_head(MambaTinyUV(16, 2, 4, n_cond=2, seq_len=60))
    act_b = MambaTinyUV(16, 2, 4, n_cond=2, calibrator_head=True, seq_len=60)
    result = act_b.load_state_dict(god.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith("calibrator.") for k in result.missing_keys)
    x, cond = torch.randn(3, 60), torch.randn(3, 2)
    assert torch.allclose(act_b(x, cond), god(x, cond), atol=1e-6)
    names = {id(p) for p in act_b.act_b_parameters()}
    assert {id(p) for p in act_b.calibrator.parameters()} <= names
    assert id(act_b.head.weight) not in names


def test_autocast_bf16_forward_backward():
    model = with_random_head(MambaTinyUV(16, 2, 4, n_cond=2, seq_len=30))
    x, cond = torch.randn(4, 30), torch.randn(4, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x, cond)
    assert y.dtype == torch.float32
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.blocks[0].mixer.A_log.grad is not None
