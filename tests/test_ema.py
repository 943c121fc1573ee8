"""The weights' moving average (godrun/trainer/ema.py): the warm-up of its decay, checked step by step."""

from __future__ import annotations

import pytest
import torch

from godrun.trainer.ema import EMA_WARMUP, build_ema, decay_at


def test_the_decay_ramps_up_to_the_recipes_and_stays_there() -> None:
    assert decay_at(1, 0.999, True) == pytest.approx(2 / (EMA_WARMUP + 1))
    assert decay_at(100, 0.999, True) == pytest.approx(101 / (EMA_WARMUP + 100))
    assert decay_at(100_000, 0.999, True) == 0.999
    assert all(decay_at(n, 0.999, False) == 0.999 for n in (1, 10, 10_000))
    ramp = [decay_at(n, 0.99, True) for n in range(1, 2000)]
    assert ramp == sorted(ramp) and max(ramp) == 0.99


@pytest.mark.parametrize("warmup", [True, False])
def test_the_average_follows_the_weights_by_that_decay(warmup: bool) -> None:
    model = torch.nn.Linear(3, 2)
    model.register_buffer("level", torch.zeros(2))
    ema = build_ema(model, 0.999, warmup)
    want = None
    for step in range(5):
        with torch.no_grad():
            model.weight.fill_(float(step + 1))
            model.level.fill_(float(step + 1))
        ema.update_parameters(model)
        n = step  # steps the average held before this one
        w = float(step + 1)
        want = w if n == 0 else want * decay_at(n, 0.999, warmup) + w * (1 - decay_at(n, 0.999, warmup))
        assert torch.allclose(ema.module.weight, torch.full((2, 3), want), rtol=1e-6)
        assert torch.allclose(ema.module.level, torch.full((2,), want), rtol=1e-6)  # buffers are averaged too
    assert (want > 3.0) if warmup else (want < 1.01)  # with the warm-up, near the latest weights (1..5)
