"""Where a stage may read and write: inside the run volume, regular files, nothing followed out of it.

Both executors run each stage with the run volume as working directory and name it in
`GODRUN_RUN_VOLUME`; the GodRun's paths are relative to it (godrun.spec refuses absolute paths and `..`).
`confine` is the check at use: the path, with every symlink resolved, must still lie inside the volume.
Run by hand (no GODRUN_RUN_VOLUME) a stage reads and writes where it is told, as the seed's scripts did.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from godrun.errors import InputError
from godrun.fsio import RUN_VOLUME_ENV, confinement_root

__all__ = ["RUN_VOLUME_ENV", "confine", "escape_text", "run_volume", "writable_file"]


def run_volume() -> Path | None:
    return confinement_root()


def confine(path: str | os.PathLike[str], what: str) -> Path:
    """`path` unchanged when no run volume is set or it stays inside it; else InputError naming `what`."""
    p = Path(path)
    volume = run_volume()
    if volume is None:
        return p
    resolved = (p if p.is_absolute() else Path.cwd() / p).resolve()
    if not resolved.is_relative_to(volume):
        raise InputError(f"{what}: {os.fspath(path)!r} leads to {resolved}, outside the run volume {volume}")
    return p


def writable_file(path: str | os.PathLike[str], what: str, suffixes: tuple[str, ...]) -> Path:
    """A file the run appends to: inside the run volume, named `*<suffix>`, and a regular file if it exists.

    So a doc or log setting can never make the run append to a manifest, a spectrum, a `.pth` or a device.
    """
    p = confine(path, what)
    if p.suffix not in suffixes:
        raise InputError(f"{what}: {os.fspath(path)!r} must be a {' or '.join(suffixes)} file")
    try:
        st = p.lstat()
    except FileNotFoundError:
        return p
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what}: {os.fspath(path)!r} exists and is not a regular file (symlink, folder or device)")
    return p


def escape_text(text: object) -> str:
    """`text` on one line: control characters (newline, tab, ESC, ...) written as `\\n`, `\\x1b`, ..."""
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)
