"""The output folder of an import: built in a temp folder beside OUT and renamed into place whole.

The temp folder is `.<OUT's name>.import-<host>-<pid>-<random>`. SIGTERM and SIGINT end the import through
KeyboardInterrupt (godrun.errors.run_main), so the temp folder is removed and OUT is not touched; the removal
and the final rename run with both signals held back, so a second signal cannot cut them short; one that arrives
during the rename is too late to stop the import (OUT is complete) and is only reported. A SIGKILLed
(or crashed) import cannot clean up: the next import into the same OUT on the same host removes the temp folders
whose pid is no longer running there, and says so on stderr; another host's (OUT on a shared volume) and older
imports' folders without host and pid are reported, not removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from godrun.errors import InputError, reading

_HELD = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def output_folder(out: Path) -> Iterator[Path]:
    """The temp folder to build OUT in; renamed to OUT when the block ends normally, removed otherwise."""
    out = Path(os.path.abspath(out))  # `.`, `x/..`: the folder itself, so the temp folder is beside it
    with reading(out, "--out"):  # a parent that is a file, a name too long, a read-only place: exit 2
        tmp, made = prepare_out(out)
    try:
        yield tmp
        late: list[str] = []
        with _signals_held(late), reading(out, "--out"):
            if out.exists():
                out.rmdir()  # empty (checked); a rename onto it would also work, but not across a race
            os.rename(tmp, out)
            made = []
        for name in late:
            print(f"note: {name} arrived while {out} was being put in place; the import had finished", file=sys.stderr)
    finally:
        with _signals_held():
            shutil.rmtree(tmp, ignore_errors=True)
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty


def prepare_out(out: Path) -> tuple[Path, list[Path]]:
    """A temp folder beside OUT (refused when OUT exists and is not an empty folder), and the parent folders
    made for it (deepest first: removed again when the import fails)."""
    if not out.name:
        raise InputError(f"--out {out}: a file system's root cannot be the output folder")
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise InputError(f"--out {out}: exists and is not an empty folder (nothing was written)")
    made = [p for p in out.parents if not p.exists()]
    above = next(p for p in out.parents if p.exists())
    if not above.is_dir():
        raise InputError(f"--out {out}: {above} is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    prefix = f".{out.name[:64]}.import-{_host()}-{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent)), made


def _host() -> str:
    """This machine (a pod's name on a cluster): a pid says whether an import runs only on its own host."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def remove_stale(out: Path) -> list[str]:
    """Remove the temp folders beside OUT of imports into OUT, made on this host, that are no longer running;
    report the others (another host's, or an older import's without host and pid); returns the notes."""
    pattern = re.compile(rf"\.{re.escape(out.name[:64])}\.import-(?:([A-Za-z0-9._]+)-(\d+)-)?[\w]+")
    notes = []
    for entry in sorted(out.parent.iterdir()):
        m = pattern.fullmatch(entry.name)
        if m is None or entry.is_symlink() or not entry.is_dir():
            continue
        host, pid = m.group(1), m.group(2)
        if host is None or host != _host():
            notes.append(f"note: {entry} is the temp folder of another import into {out.name} (host {host}); "
                         "remove it once that import has ended")  # fmt: skip
        elif not running_elsewhere(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            done = "removed" if not entry.exists() else "could not remove (remove it yourself)"
            notes.append(f"note: {done} {entry}, left by an import (pid {pid}) that did not finish")
    for note in notes:
        print(note, file=sys.stderr)
    return notes


def running_elsewhere(pid: int) -> bool:
    """Whether another live process has this pid (ours: a folder from before this import, as in a container
    where every run has the same pid, is stale)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _signals_held(dropped: list[str] | None = None) -> Iterator[None]:
    """SIGINT/SIGTERM wait until the block is done, then act as usual; with `dropped`, they are consumed instead
    and their names appended to it (OUT is in place: a stop request that came too late must not turn a finished
    import into a failure, exit 130/143 with OUT written, which a retry would then refuse).

    Handlers that record, not a signal mask: a mask holds back only this thread's signals, and a process-directed
    signal goes to any thread that does not block it (numpy's BLAS threads), whose handler then interrupts us."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; Python delivers signals there anyway
        return
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda num, _frame: got.append(num)) for sig in _HELD}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if dropped is not None:
            dropped.extend(signal.Signals(num).name for num in got)
        else:
            for num in dict.fromkeys(got):
                signal.raise_signal(num)
