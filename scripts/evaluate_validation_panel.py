#!/usr/bin/env python3
"""The seed's panel QA entry point: `python scripts/evaluate_validation_panel.py --checkpoint-dir ... `.

Runs from any workspace (the run volume), not only the repository: godrun comes from the installed package.
Same flags as `godrun evaluate --help`. Exit 0 on a pass or fail verdict, 2 on bad input.
"""

import sys

from godrun.errors import run_main
from godrun.evaluator.cli import main

if __name__ == "__main__":
    sys.exit(run_main(main))
