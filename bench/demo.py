"""`godrun demo --fresh` timed: wall and CPU seconds, its stages, and its verdict, per seed; optionally side by
side with another checkout of the project, alternating, so both see the same machine.

Each run goes to its own temporary workdir and is deleted after. Columns: the 1-minute load average at the
start (the trainer uses one thread when it is at or above the CPU count), wall seconds, CPU seconds of the demo
and its stage processes (user + system), the data, fold-02 warm start and GodRun stages' seconds as the demo
prints them, the phase, the panel's PSNR (dB) and ROI ratio. The demo's bound: within 60 s on 2 cores, Shipped
with >= 1.5 dB over the PSNR gate and ROI >= 0.95 on its default seed.

    python bench/demo.py [--seeds 2] [--repeat 1] [--compare PATH_TO_OTHER_CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from godrun.contract import files

HERE = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"^ {6}(?:wrote|reusing|run finished)[^\n]*\(([0-9.]+) s\)$", re.M)


@dataclass(frozen=True)
class DemoRun:
    load: float
    wall: float
    cpu: float
    stages: list[float]
    phase: str
    psnr: float | None
    roi: float | None

    def row(self, label: str, seed: int) -> str:
        stages = " / ".join(f"{s:.1f}" for s in self.stages)
        psnr = "-" if self.psnr is None else f"{self.psnr:.2f}"
        roi = "-" if self.roi is None else f"{self.roi:.3f}"
        return (
            f"{label:<10} {seed:>4} {self.load:>5.2f} {self.wall:>6.1f} {self.cpu:>6.1f}  {stages:<20} "
            f"{self.phase:<12} {psnr:>6} {roi:>6}"
        )


def run_demo(tree: Path, seed: int) -> DemoRun:
    """One `godrun demo --fresh` with `tree`'s godrun first on the path (run from outside every checkout)."""
    with tempfile.TemporaryDirectory(prefix="godrun-bench-demo-") as tmp:
        env = os.environ | {"PYTHONPATH": str(tree)}
        cmd = [sys.executable, "-m", "godrun", "demo", "--fresh", "--seed", str(seed), "--workdir", f"{tmp}/w"]
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        status_file = Path(tmp, "w", files.STATUS_JSON)
        status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    if proc.returncode not in (0, 3):  # 3: the run ended Failed-ActB, a verdict like any other
        sys.exit(f"godrun demo --seed {seed} ({tree}) exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    panel = status.get("panel") or {}
    stages = [float(s) for s in STAGE.findall(proc.stdout)]
    return DemoRun(load, wall, cpu, stages, status.get("phase", "?"), panel.get("psnrMean"), panel.get("roiRatio"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="2", help="comma-separated demo seeds (default: 2, the demo's own)")
    p.add_argument("--repeat", type=int, default=1, help="runs per seed (and per checkout)")
    p.add_argument("--compare", type=Path, help="another checkout of the project, run alternately with this one")
    args = p.parse_args()
    trees = [("this", HERE)] + ([("compare", args.compare.resolve())] if args.compare else [])
    for _, tree in trees:
        if not (tree / "godrun" / "__init__.py").is_file():
            sys.exit(f"--compare {tree}: no godrun package there")
    print(
        f"{'checkout':<10} {'seed':>4} {'load':>5} {'wall':>6} {'cpu':>6}  {'stages s':<20} "
        f"{'phase':<12} {'psnr':>6} {'roi':>6}",
        flush=True,
    )
    walls: dict[str, list[float]] = {label: [] for label, _ in trees}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for _ in range(args.repeat):
            for label, tree in trees:
                r = run_demo(tree, seed)
                walls[label].append(r.wall)
                print(r.row(label, seed), flush=True)
    for label, w in walls.items():
        print(f"{label}: wall {min(w):.1f}-{max(w):.1f} s over {len(w)} run(s) ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
