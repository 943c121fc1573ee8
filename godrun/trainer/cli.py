"""`godrun train` / `python -m godrun.trainer`: the seed's recipe flags -> Recipe -> training loop."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from godrun.trainer.flags import parse_trainer_args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when training ran (or had already finished); bad input raises InputError (exit 2 via run_main)."""
    args = parse_trainer_args(sys.argv[1:] if argv is None else argv)
    # before torch loads OpenMP: idle threads sleep instead of spinning (matters on a shared machine)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from godrun.trainer.loop import train

    train(args.recipe, gates=args.gates, verify_data=args.verify_data)
    return 0
