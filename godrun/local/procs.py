"""Operating-system side of the local runner: one runner per workdir, stages that die with it, leftovers.

- `workdir_lock`: an advisory `flock` on `<workdir>/.godrun/runner.lock`; the kernel drops it when the
  runner exits however it exits, so a killed runner never leaves a stale lock behind.
- `spawn`: a stage in its own process group (the runner stops the whole group) that receives SIGKILL
  when the runner dies (Linux `PR_SET_PDEATHSIG`); elsewhere the next runner cleans it up.
- `kill_leftover`: what a runner that was killed left running (a stage's process group, found from the
  pid and start time the job record holds) is stopped before the stage starts again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from godrun import fsio
from godrun.contract import files
from godrun.errors import InputError, describe

LOCK_NAME = files.RUNNER_LOCK
PR_SET_PDEATHSIG = 1


def _prctl() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libc's prctl, looked up before any fork (a child must not dlopen)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _open_lock(path: Path) -> IO[str]:
    """The lock file, confined (no symlink followed) and only ever a regular file: never a FIFO or folder."""
    try:
        fd = fsio.open_file(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK)
    except fsio.ConfinementError as exc:
        raise InputError(f"runner lock {path}: {exc}") from None
    except OSError as exc:
        raise InputError(f"runner lock {path}: cannot open it ({describe(exc)})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"runner lock {path}: exists and is not a regular file (a FIFO, device or folder)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "r+", encoding="utf-8")


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Hold the workdir's runner lock; a second runner gets an InputError (exit 2) naming the holder's pid."""
    path = files.runner_lock(workdir)
    fh = _open_lock(path)
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise InputError(
                f"--workdir {workdir}: another `godrun run` (pid {holder}) is running there and holds {path}; "
                "wait for it to finish or stop it (Ctrl-C or kill -TERM), then run again"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


def start_ticks(pid: int) -> int | None:
    """The process' start time in clock ticks since boot (Linux), to tell it from a later process of that pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count fields after its closing one
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def spawn(cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a stage in a new session (its own process group) that dies with this process.

    The kernel sends the parent-death signal when the *thread* that forked ends: the runner starts every
    stage from its main thread, which lives as long as the runner.
    """
    parent = os.getpid()

    def die_with_parent() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, grace: float = 10.0, leader: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace` seconds; return once it is gone.

    `leader`: the group leader when it is our child, reaped here (an unreaped zombie still counts as a member).
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if leader is not None:
                leader.poll()
            if not group_alive(pgid):
                return
            time.sleep(0.05)


def kill_leftover(pid: int | None, ticks: int | None) -> bool:
    """Stop the process group a dead runner left behind (leader `pid` started at `ticks`); True if there was one.

    A pid is not reused while it still names a process group with members, so a live group whose leader is
    gone is still ours; a live leader with another start time is somebody else's process: left alone.
    """
    if pid is None or not group_alive(pid):
        return False
    now = start_ticks(pid)
    if now is not None and ticks is not None and now != ticks:
        return False
    stop_group(pid)
    return True
