"""Selective scan: naive (autograd through the Python loop) vs ours (chunked, hand-written backward).

Default size is the issue's: B=8, d_inner=768, L=601, d_state=16, fp32, on --threads cores. Each variant runs in
its own subprocess so that peak RSS (ru_maxrss above the post-setup baseline) belongs to it alone. Autograd
through the loop is quadratic in L in backward (every step's slice gradient is a full-size tensor), so by
default the naive backward is timed at --naive-length and scaled by (L / naive_length)^2; --naive-full runs it
at full length (minutes). Wall times on a shared machine are noisy: CPU seconds are printed beside them.

    python bench/scan.py [--batch 8 --d-inner 768 --length 601 --d-state 16 --threads 2 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable


def _measure(args: argparse.Namespace) -> dict:
    import torch

    from godrun.model.scan import selective_scan, selective_scan_ref

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    length = args.length
    b, d, n = args.batch, args.d_inner, args.d_state
    # [b, channels, L] views of [b, L, channels] storage: the layout the Mamba block hands the scan
    u = torch.randn(b, length, d).transpose(1, 2)
    delta = (torch.randn(b, length, d) * 0.5).transpose(1, 2)
    A = -torch.exp(torch.log(torch.arange(1, n + 1.0)).repeat(d, 1))
    B, C = torch.randn(b, length, n).transpose(1, 2), torch.randn(b, length, n).transpose(1, 2)
    D, z, bias = torch.ones(d), torch.randn(b, length, d).transpose(1, 2), torch.full((d,), -2.0)
    leaves = [x.requires_grad_() for x in (u, delta, A, B, C, D, z, bias)]
    fn: Callable[..., torch.Tensor] = selective_scan_ref if args.variant == "naive" else selective_scan
    small = [x[..., :8].detach().requires_grad_() if x.dim() == 3 else x.detach().requires_grad_() for x in leaves]
    fn(*small[:5], D=small[5], z=small[6], delta_bias=small[7]).sum().backward()  # load kernels before the baseline
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fwd, bwd, fwd_cpu, bwd_cpu = [], [], [], []
    for _ in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        y = fn(*leaves[:5], D=D, z=z, delta_bias=bias, delta_softplus=True)
        c1, t1 = time.process_time(), time.perf_counter()
        y.backward(torch.ones_like(y))
        c2, t2 = time.process_time(), time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        fwd_cpu.append(c1 - c0)
        bwd_cpu.append(c2 - c1)
        del y
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss
    return {"fwd": min(fwd), "bwd": min(bwd), "fwd_cpu": min(fwd_cpu), "bwd_cpu": min(bwd_cpu), "peak_mib": peak / 1024}


def _run(variant: str, length: int, args: argparse.Namespace, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--variant", variant, "--length", str(length)]
    cmd += ["--batch", str(args.batch), "--d-inner", str(args.d_inner), "--d-state", str(args.d_state)]
    cmd += ["--threads", str(args.threads), "--repeats", str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d-inner", type=int, default=768)
    p.add_argument("--length", type=int, default=601)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-length", type=int, default=100)
    p.add_argument("--naive-full", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="ours", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_measure(args)))
        return
    ours = _run("ours", args.length, args, args.repeats)
    naive_len = args.length if args.naive_full else min(args.naive_length, args.length)
    naive = _run("naive", naive_len, args, 1)
    scale_f, scale_b = args.length / naive_len, (args.length / naive_len) ** 2
    naive_full = {"fwd": naive["fwd"] * scale_f, "bwd": naive["bwd"] * scale_b}
    naive_full["peak_mib"] = naive["peak_mib"] * scale_f
    size = f"B={args.batch} d_inner={args.d_inner} L={args.length} N={args.d_state}"
    print(f"selective scan {size} fp32, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<34}{'fwd s':>9}{'bwd s':>9}{'total s':>9}{'cpu s':>9}{'peak MiB':>10}")

    def row(name: str, r: dict, cpu: str) -> None:
        print(f"{name:<34}{r['fwd']:>9.3f}{r['bwd']:>9.3f}{r['fwd'] + r['bwd']:>9.3f}{cpu:>9}{r['peak_mib']:>10.0f}")

    row(f"naive autograd loop, L={naive_len}", naive, f"{naive['fwd_cpu'] + naive['bwd_cpu']:.3f}")
    if naive_len != args.length:
        row(f"naive scaled to L={args.length} (est.)", naive_full, "")
    row("ours (chunked, hand-written bwd)", ours, f"{ours['fwd_cpu'] + ours['bwd_cpu']:.3f}")
    total = ours["fwd"] + ours["bwd"]
    speedup = (naive_full["fwd"] + naive_full["bwd"]) / total
    print(f"speed-up fwd+bwd: {speedup:.0f}x; goal fwd+bwd <= 2 s wall: {'met' if total <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
