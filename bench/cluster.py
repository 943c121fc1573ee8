"""Test control plane figures: binary build time (cold from the build record, cached = a no-op run), sizes,
and etcd + kube-apiserver start time until /readyz (median of a few starts).

    .venv/bin/python bench/cluster.py [--starts 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from godrun.testcluster import BINARIES, Cluster, bin_dir, missing_binaries

ROOT = Path(__file__).resolve().parents[1]


def build_figures() -> None:
    record = bin_dir() / ".builds.jsonl"
    builds = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    for cold in (True, False):
        last = next((b for b in reversed(builds) if b["cold"] is cold), None)
        kind = "cold (empty Go build cache)" if cold else "warm (cached packages, relink)"
        if last:
            print(f"control-plane build, {kind}: {last['seconds']} s ({last['kubernetes']}, helm {last['helm']})")
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(ROOT / "tests" / "cluster" / "build.sh")], capture_output=True, text=True)
    print(f"control-plane build, cached (no-op): {time.monotonic() - t0:.2f} s  [{res.stdout.strip()}]")
    sizes = {b: (bin_dir() / b).stat().st_size / 2**20 for b in BINARIES if (bin_dir() / b).exists()}
    print(
        "binary sizes (MiB): "
        + ", ".join(f"{b} {mib:.1f}" for b, mib in sizes.items())
        + f"; total {sum(sizes.values()):.1f}"
    )


def start_figures(starts: int) -> None:
    seconds = []
    for _ in range(starts):
        cluster = Cluster().start()
        seconds.append(cluster.start_seconds)
        cluster.stop()
    print(
        f"etcd + kube-apiserver start to /readyz: median {statistics.median(seconds):.1f} s "
        f"(min {min(seconds):.1f}, max {max(seconds):.1f}, n={starts})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    if missing_binaries():
        print(f"control plane not built in {bin_dir()} (make cluster-bin); skipping")
        return 0
    build_figures()
    start_figures(args.starts)
    print("controller at 200 GodRuns: bench/controller_scale.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
