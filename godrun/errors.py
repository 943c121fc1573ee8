"""Exit codes every stage and command follows: 0 it ran (a failed gate is a verdict), 2 bad input (the message
names the field, row or file; nothing half-written), anything else unexpected. docs/design.md, section 4.

Bad input is a class, not a list of cases: every place that reads a user's file does it inside
`reading(path)`, which turns the decoding, parsing, shape and type errors of that file into one
`InputError` naming the file. Errors raised outside such a boundary stay what they are: bugs (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import pickle
import signal
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 128 + signal.SIGTERM


class TransientError(Exception):
    """A failure of the moment (a port another process holds): exit 1 with the message, so the stage is retried."""


EXIT_TRANSIENT = 1

# A full disk, a quota, a read-only volume: what the user has to fix before a re-run, said in one line.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class InputError(Exception):
    """Bad input from the user: the message names the field, row or file. Maps to exit 2."""


# What reading or parsing a malformed file raises: OSError (folder, truncated, unreadable), ValueError (bad
# text, bad numbers, UnicodeDecodeError, JSON, CSV), TypeError/KeyError/IndexError (wrong structure),
# EOFError/BadZipFile/UnpicklingError/RuntimeError (truncated or foreign binary: numpy, torch),
# RecursionError (absurdly nested YAML/JSON).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    RecursionError,
    RuntimeError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)


def describe(exc: BaseException) -> str:
    """A short, human reason for a failed read (never a traceback)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(exc, NotADirectoryError):
        return "a parent of this path is not a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    mark = getattr(exc, "problem_mark", None)  # YAML: say where
    if mark is not None:
        problem = getattr(exc, "problem", None) or "parse error"
        return f"not valid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"
    text = str(exc).strip()
    first = text.splitlines()[0][:300] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextlib.contextmanager
def reading(
    path: str | os.PathLike[str], label: str = "", extra: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Inside this block, a failure to read or decode `path` is an InputError: `<label> <path>: <reason>`."""
    try:
        yield
    except InputError:
        raise
    except (*DECODE_ERRORS, *extra) as exc:
        head = f"{label} {os.fspath(path)}" if label else os.fspath(path)
        raise InputError(f"{head}: {describe(exc)}") from exc


def tcp_port(text: str) -> int:
    """argparse type of a port flag: an integer 0..65535 (0: let the system pick, or off where documented)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0..65535)")
    return port


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the command stops as on Ctrl-C (whatever cleans up after KeyboardInterrupt runs)."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises Terminated while the block runs. In a container the command is PID 1, and PID 1 ignores
    every signal it has no handler for: without one, a deleted or evicted pod's stage would keep training and
    writing to the run volume for the whole grace period, beside the pod that replaces it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's main(); turn InputError into one clear line on stderr and exit code 2, SIGTERM into 143."""
    try:
        with _stop_on_sigterm():
            code = main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TransientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TRANSIENT
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        where = f" of {exc.filename}" if exc.filename else ""
        print(f"error: the run volume refused the write{where}: {os.strerror(exc.errno or 0)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if code is None else int(code)
