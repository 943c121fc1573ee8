"""Data figures: full synth time + peak RSS, panel build, and the cost of verified loading.

Side by side for the training manifest (10 350 spectra at scale 1) and the panel (750):
  * verified load (godrun.data.loader.load_corpus): every spectrum and reference read, confined, hashed
    and checked against the manifest on every load; cold (first) and warm (files in the page cache);
  * the earlier unverified cache, for comparison: a key from the manifest bytes and every file's
    size + mtime, then one .npz read (what `load_corpus` did before it verified; it trusted the .npz).
The goal is a verified warm load of the training manifest in <= 2 s on 2 cores. The CPUs may be shared:
the 1-minute load average is printed with the figures.

    python bench/data.py [scale]
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from godrun.contract import files

SYNTH = """
import sys, time, resource
from godrun.data.cli import synth_into
from pathlib import Path
t = time.perf_counter()
n = synth_into(Path(sys.argv[1]), float(sys.argv[2]), 0, False)
print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def stat_keyed_npz_load(manifest: Path, root: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The earlier cached load: size+mtime key over every file, then the consolidated .npz (no hashing)."""
    meta = pd.read_csv(manifest, dtype=str)
    h = hashlib.sha256(manifest.read_bytes())
    base = os.fspath(root)
    for rel in (*meta["path"], *meta["reference_path"]):
        st = os.stat(os.path.join(base, rel))
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    path = cache / f"corpus_{h.hexdigest()[:32]}.npz"
    if not path.is_file():
        from godrun.data.loader import load_corpus

        c = load_corpus(manifest, root)
        np.savez(path, spectra=c.raw, references=c.reference)
    with np.load(path) as z:
        return z["spectra"], z["references"]


def _timed(label: str, fn, *args, **kw) -> float:
    t = time.perf_counter()
    out = fn(*args, **kw)
    secs = time.perf_counter() - t
    n = (out.raw if hasattr(out, "raw") else out[0]).shape[0]
    print(f"  {label:<34} {n:>6} spectra  {secs:6.2f} s   (load average {os.getloadavg()[0]:.1f})")
    return secs


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
        spectra = root / files.SPECTRA_DIR
        grid = root / files.WAVELENGTH_GRID
        cache = Path(tmp) / "cache"
        cache.mkdir()
        print(f"cores: {os.cpu_count()}")
        for name, manifest in (
            ("training manifest", root / files.MANIFEST_TRAIN),
            ("panel", root / files.PANEL_MANIFEST),
        ):
            print(f"{name}:")
            _timed("verified load, cold", load_corpus, manifest, spectra, wavelength_grid=grid)
            for _ in range(2):
                _timed("verified load, warm", load_corpus, manifest, spectra, wavelength_grid=grid)
            stat_keyed_npz_load(manifest, spectra, cache)  # writes the .npz once
            for _ in range(2):
                _timed("unverified stat-keyed .npz (earlier)", stat_keyed_npz_load, manifest, spectra, cache)
        print(f"bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
