"""Real 1 nm UV-vis replicate spectra from scikit-spectra's source distribution, fetched reproducibly.

The sdist (version and sha256 pinned below) is downloaded once into ~/.cache/godrun/skspec/ (temp + rename,
checked against the pinned sha256 on every use) and read in place: only skspec/data/aunps_water.csv is
parsed, straight from the tarball, never extracted or installed. That file holds 78 scans of one
spectrometer session, raw counts at 200-850 nm in 1 nm steps, one scan every 46 s: 26 water blanks, then
three runs of gold-nanoparticle replicates (33, 9, 10 scans). Runs are told apart by the jumps in level
between consecutive scans (bench/skspec.py: split_runs).

    from skspec import load_session
    session = load_session()      # Session(wl [651], counts [78, 651], seconds [78], runs {name: slice})

Used by bench/noise_realism.py and meant for bench/realdata.py.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

VERSION = "0.3.2.2"
SDIST = f"scikit-spectra-{VERSION}.tar.gz"
URL = (
    "https://files.pythonhosted.org/packages/e9/59/"
    f"03f228fb8987226fcfd0501184c9924464b2ee90456002e53bc4d27a6e1e/{SDIST}"
)
SHA256 = "778a08ace9f06e39d590be2bd04dfde6078eefda771076cba96578811bb721c7"
MEMBER = f"scikit-spectra-{VERSION}/skspec/data/aunps_water.csv"
EXPECTED_RUNS = {"blank": 26, "aunp1": 33, "aunp2": 9, "aunp3": 10}
ATTRIBUTION = (
    f"Real spectra: scikit-spectra {VERSION} (author Adam Hughes), "
    "skspec/data/aunps_water.csv, from the PyPI source distribution "
    f"(sha256 {SHA256[:16]}...). Licence: BSD (the sdist's README.rst: '3-Clause Revised BSD', "
    "LICENSE.txt in github.com/hugadams/scikit-spectra). Used unmodified, read-only, as measurement data."
)


def cache_dir() -> Path:
    return Path(os.environ.get("GODRUN_CACHE", Path.home() / ".cache" / "godrun")) / "skspec"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch(quiet: bool = False) -> Path:
    """The pinned sdist in the cache, downloaded if missing; a mismatching sha256 is an error, never used."""
    dest = cache_dir() / SDIST
    if dest.exists():
        if _sha256(dest) == SHA256:
            return dest
        raise SystemExit(f"{dest}: sha256 does not match the pinned {SHA256}; delete it to fetch again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"fetching {URL}", file=sys.stderr)
    tmp = dest.with_name(f".{SDIST}.{os.getpid()}.tmp")
    try:
        with urllib.request.urlopen(URL, timeout=120) as resp, tmp.open("wb") as out:
            while block := resp.read(1 << 20):
                out.write(block)
        got = _sha256(tmp)
        if got != SHA256:
            raise SystemExit(f"{URL}: sha256 {got} is not the pinned {SHA256}")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


@dataclass(frozen=True)
class Session:
    wl: np.ndarray  # [L] nm
    counts: np.ndarray  # [N, L] raw counts, scans in time order
    seconds: np.ndarray  # [N] since the first scan
    runs: dict[str, slice]  # name -> scans of that run

    def run(self, name: str) -> np.ndarray:
        return self.counts[self.runs[name]]

    def transmittance(self, name: str) -> np.ndarray:
        """Scans of a run divided by the mean blank (T ≈ 1 for the blanks)."""
        return self.run(name) / self.run("blank").mean(axis=0)


def split_runs(counts: np.ndarray, wl: np.ndarray, jump: float = 0.05) -> list[slice]:
    """Consecutive scans whose 240-320 nm level changes by more than `jump` (relative) start a new run."""
    level = counts[:, (wl >= 240) & (wl <= 320)].mean(axis=1)
    cuts = [0, *(i + 1 for i in np.flatnonzero(np.abs(np.diff(level)) / level[:-1] > jump)), len(level)]
    return [slice(a, b) for a, b in itertools.pairwise(cuts)]


def load_session(quiet: bool = False) -> Session:
    sdist = fetch(quiet)
    with tarfile.open(sdist, "r:gz") as tar:
        f = tar.extractfile(MEMBER)
        if f is None:
            raise SystemExit(f"{sdist}: {MEMBER} missing")
        df = pd.read_csv(io.BytesIO(f.read()), index_col=0)
    wl = df.index.to_numpy(dtype=np.float64)
    counts = df.to_numpy(dtype=np.float64).T
    t = pd.to_datetime(pd.Series(df.columns))
    seconds = (t - t.iloc[0]).dt.total_seconds().to_numpy()
    slices = split_runs(counts, wl)
    runs = dict(zip(EXPECTED_RUNS, slices, strict=False))
    sizes = {k: s.stop - s.start for k, s in runs.items()}
    if sizes != EXPECTED_RUNS or len(slices) != len(EXPECTED_RUNS):
        raise SystemExit(f"{MEMBER}: runs {[s.stop - s.start for s in slices]}, expected {EXPECTED_RUNS}")
    return Session(wl=wl, counts=counts, seconds=seconds, runs=runs)


if __name__ == "__main__":
    s = load_session()
    print(ATTRIBUTION)
    for name, sl in s.runs.items():
        print(f"{name}: {sl.stop - sl.start} scans, {s.seconds[sl.stop - 1] - s.seconds[sl.start]:.0f} s")
