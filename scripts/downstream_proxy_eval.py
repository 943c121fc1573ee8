#!/usr/bin/env python3
"""The downstream proxy (gate 4) on its own: baseline pipeline on a prediction vs on the raw spectra.

    python scripts/downstream_proxy_eval.py --manifest data/validation_panel.csv --root-dir data/spectra_for_fold \
        --wavelength-grid data/spectra_for_fold/wavelength_grid.npy --predictions pred.npy --output-csv ds.csv

Runs from any workspace: godrun comes from the installed package. The evaluator computes the same proxy
in-process (godrun.gates.metrics.downstream_quantities); this script is for looking at it alone.
"""

import sys

from godrun.errors import run_main
from godrun.evaluator.cli import downstream_main

if __name__ == "__main__":
    sys.exit(run_main(downstream_main))
