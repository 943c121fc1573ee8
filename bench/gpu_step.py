"""GPU throughput of the seed's full-size model (bs 600, bf16): spectra/s, s/epoch, peak memory.

Run by bench/gpu.sh on a lent GPU; on a CPU-only machine it exits 0 after saying so.
Measures eager and torch.compile side by side, with our scan and (when importable) mamba-ssm's kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import cast

import torch

from godrun.model.network import MambaTinyUV

TRAIN_SPECTRA = 10_350


def run(model: torch.nn.Module, bs: int, length: int, n_cond: int, steps: int, warmup: int) -> dict[str, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    x = torch.randn(bs, length, device="cuda")
    y = x + 0.01 * torch.randn_like(x)
    cond = torch.randn(bs, n_cond, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x, cond).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    sps = bs * steps / dt
    return {
        "spectra_per_s": sps,
        "s_per_epoch": TRAIN_SPECTRA / sps,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "step_ms": 1000 * dt / steps,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--bs", type=int, default=600)
    p.add_argument("--json", help="write results here")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0
    torch.backends.cudnn.benchmark = True
    rows = []
    for compiled in (False, True):
        model: torch.nn.Module = MambaTinyUV(d_model=384, n_layers=8, d_state=16, n_cond=8, film_hidden_dim=64).cuda()
        if compiled:
            model = cast(torch.nn.Module, torch.compile(model))  # an OptimizedModule wrapping `model`
        res: dict[str, float | str]
        try:
            res = {**run(model, args.bs, 601, 8, args.steps, args.warmup)}
        except Exception as exc:  # report, keep the other row
            res = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        rows.append({"compile": compiled} | res)
        print(json.dumps(rows[-1]), flush=True)
        del model
        torch.cuda.empty_cache()
    print(f"\n{'compile':<8} {'spectra/s':>10} {'s/epoch':>8} {'step ms':>8} {'peak GiB':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['compile']!s:<8} {r['error']}")
        else:
            print(
                f"{r['compile']!s:<8} {r['spectra_per_s']:>10.0f} {r['s_per_epoch']:>8.2f} "
                f"{r['step_ms']:>8.1f} {r['peak_gib']:>9.2f}"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
