"""`python -m godrun.evaluator`: the panel QA (same flags as `godrun evaluate`)."""

import sys

from godrun.errors import run_main
from godrun.evaluator.cli import main

sys.exit(run_main(main))
