"""Import speed: `godrun data import` of N files of P points each (default 10 000 x 1 000), wall time.

The files are two-column CSV (wavelength nm, absorbance with 6 decimals; 199.7-800.7 nm, 0.6 nm steps at P = 1
000, so the source is finer than the grid and every bin is averaged), one spectrum each, in 20 groups of
replicate pairs; the last group is the panel with leave-one-out references. The import reads, parses, converts
and resamples every file, writes every .npy, then the panel build re-reads and hashes every one (the check
every load does). The goal: 10 000 x 1 000 in <= 30 s on 2 cores. The CPUs may be shared: the 1-minute load
average before and after is printed with the figure, and the CPU time of the import (its worker processes
included) beside the wall time.

    python bench/import_speed.py [N] [P]
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_files(folder: Path, n: int, points: int) -> Path:
    rng = np.random.default_rng(0)
    x = np.linspace(199.7, 800.7, points)
    spectra = folder / "spectra"
    spectra.mkdir()
    clean = 0.6 + 0.1 * (x - 500) / 300 - 0.05 * np.exp(-0.5 * ((x - 420) / 8) ** 2)
    xs = [f"{v:.2f}" for v in x]
    rows = ["file,group_id,replicate"]
    for i in range(n):
        y = clean + 0.003 * rng.standard_normal(points)
        body = "\n".join(f"{a},{b:.6f}" for a, b in zip(xs, y, strict=True))
        (spectra / f"s{i:06d}.csv").write_text("Wavelength (nm),Absorbance\n" + body + "\n")
        rows.append(f"s{i:06d}.csv,g{i * 20 // n:02d},{i}")
    meta = folder / "META.csv"
    meta.write_text("\n".join(rows) + "\n")
    return meta


def main(argv: list[str]) -> None:
    from godrun.cli import main as godrun_main

    n = int(argv[0]) if argv else 10_000
    points = int(argv[1]) if len(argv) > 1 else 1_000
    with tempfile.TemporaryDirectory(prefix="import-speed-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        meta = write_files(folder, n, points)
        print(f"wrote {n} files of {points} points in {time.perf_counter() - t:.1f} s")
        load0 = os.getloadavg()[0]
        cpu0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        t = time.perf_counter()
        argv_import = ["data", "import", str(folder / "spectra"), "--metadata", str(meta), "--out", str(folder / "ws")]
        code = godrun_main([*argv_import, "--panel-group", "g19", "--references", "replicate-mean"])
        wall = time.perf_counter() - t
        cpu1 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        cpu = sum((b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime) for a, b in zip(cpu0, cpu1, strict=True))
        print(
            f"import of {n} files x {points} points: {wall:.1f} s wall, {cpu:.1f} s CPU (exit {code}); "
            f"load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after; {os.cpu_count()} CPUs"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
