"""`python -m godrun.trainer.launch <torchrun options> -m godrun.trainer ...`: torch's launcher, keeping exit codes.

torchrun re-raises any worker failure as exit 1, so a worker's exit 2 (bad input: never retry) would look like
a crash and be retried. This runs the same launcher and exits with the first failed worker's code instead
(a worker killed by signal N exits 128 + N, as a shell reports it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun_main


def worker_exit_code(err: ChildFailedError) -> int:
    """The exit code of the worker that failed first (by failure time)."""
    _rank, failure = err.get_first_failure()
    code = failure.exitcode
    if code < 0:
        return 128 - code
    return code or 1


def main(argv: Sequence[str] | None = None) -> int:
    os.environ["GODRUN_LAUNCHER_PID"] = str(os.getpid())  # its workers die with it (godrun.trainer.cli)
    try:
        torchrun_main(list(argv) if argv is not None else None)
    except ChildFailedError as err:  # torchrun has already logged the failure summary
        return worker_exit_code(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
