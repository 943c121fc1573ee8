import sys

from godrun.errors import run_main
from godrun.trainer.cli import main

sys.exit(run_main(main))
