"""`godrun train` / `python -m godrun.trainer`: the seed's recipe flags -> Recipe -> training loop."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from godrun.contract.flags import parse_trainer_args

LAUNCHER_PID_ENV = "GODRUN_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1


def die_with_launcher() -> None:
    """A worker torchrun started (in a session of its own) dies with its launcher: when the runner is SIGKILLed,
    the launcher dies with it (its parent-death signal) and no worker goes on training alone."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher or not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util
    import signal

    if os.getppid() != int(launcher):  # not the launcher's child (or it is gone already)
        if os.getppid() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(launcher):  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when training ran (or had already finished); bad input raises InputError (exit 2 via run_main)."""
    args = parse_trainer_args(sys.argv[1:] if argv is None else argv)
    die_with_launcher()
    # before torch loads OpenMP: idle threads sleep instead of spinning (matters on a shared machine)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from godrun.trainer.loop import train

    train(args.recipe, gates=args.gates, verify_data=args.verify_data)
    return 0
