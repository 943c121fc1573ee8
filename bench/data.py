"""Data figures: full synth time + peak RSS (2 cores), panel build, first vs cached load of the training manifest."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYNTH = """
import sys, time, resource
from godrun.data.cli import synth_into
from pathlib import Path
t = time.perf_counter()
n = synth_into(Path(sys.argv[1]), float(sys.argv[2]), 0, False)
print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        out = subprocess.run([sys.executable, "-c", SYNTH, str(root), str(scale)], check=True, capture_output=True)
        n, secs, rss_kb = out.stdout.decode().split()
        print(f"synth: {n} spectra in {float(secs):.1f} s, peak RSS {int(rss_kb) / 1024:.0f} MiB (scale {scale})")

        from godrun.data.loader import load_corpus
        from godrun.data.panel import build_panel

        t = time.perf_counter()
        build_panel(root)
        print(f"panel + audits + hash verification: {time.perf_counter() - t:.1f} s")
        args = (root / "data/spectra_for_fold/manifest_train.csv", root / "data/spectra_for_fold")
        for label in ("first load", "cached load", "cached load"):
            t = time.perf_counter()
            corpus = load_corpus(*args, wavelength_grid=root / "data/spectra_for_fold/wavelength_grid.npy")
            print(f"{label}: {corpus.spectra.shape[0]} spectra in {time.perf_counter() - t:.2f} s")
        print(f"bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
