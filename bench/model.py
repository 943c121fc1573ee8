"""MambaTinyUV training step on CPU: seconds per step (fwd + bwd + AdamW), spectra/s, fp32 and bf16 autocast.

Sizes: the trainer's presets (tiny, demo), the issue's CPU preset (d_model 32, 2 layers, d_state 8, bs 32) and
the seed's full model (d_model 384, 8 layers, d_state 16) at a small batch, all on L=601 with 8 FiLM inputs.
Wall times on a shared machine are noisy; CPU seconds of this process are printed beside them. bf16 autocast
on a CPU without native bf16 (AVX2 only) is slower than fp32; the seed-size bf16 row is opt-in (--seed-bf16).

    python bench/model.py [--threads 1] [--steps 3] [--no-seed]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from godrun.model.network import MambaTinyUV

CONFIGS = [  # name, d_model, n_layers, d_state, batch
    ("preset tiny", 16, 2, 4, 16),
    ("preset demo", 16, 2, 8, 32),
    ("issue CPU preset", 32, 2, 8, 32),
    ("seed size, bs 8", 384, 8, 16, 8),
]


def time_steps(d_model: int, n_layers: int, d_state: int, batch: int, amp: bool, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = MambaTinyUV(d_model, n_layers, d_state, n_cond=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, cond, target = torch.randn(batch, 601), torch.randn(batch, 8), torch.randn(batch, 601)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = model(x, cond)
        loss = torch.nn.functional.mse_loss(y.float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    wall, cpu = [], []
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-seed", action="store_true", help="skip the seed-size model (the slow rows)")
    p.add_argument("--seed-bf16", action="store_true", help="also time the seed size under bf16 autocast (minutes)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"MambaTinyUV train step, L=601, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{'config':<20}{'d/layers/N':>12}{'batch':>6}{'amp':>6}{'wall s':>9}{'cpu s':>8}{'spectra/s':>11}")
    for name, d_model, n_layers, d_state, batch in CONFIGS:
        if args.no_seed and d_model == 384:
            continue
        for amp in (False, True):
            if amp and d_model == 384 and not args.seed_bf16:
                continue
            steps = 1 if d_model == 384 else args.steps
            wall, cpu = time_steps(d_model, n_layers, d_state, batch, amp, steps)
            size = f"{d_model}/{n_layers}/{d_state}"
            amp_s = "bf16" if amp else "fp32"
            print(f"{name:<20}{size:>12}{batch:>6}{amp_s:>6}{wall:>9.3f}{cpu:>8.3f}{batch / wall:>11.0f}")


if __name__ == "__main__":
    main()
