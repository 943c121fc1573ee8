"""File helpers every stage shares: atomic writes, content hashes, the termination message."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
TEMP_NAME_HEAD = 128


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `dest`; rename it over `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the temp name keeps at most TEMP_NAME_HEAD characters of the final one: a final name that fits the
    # 255-byte limit must not fail because its temp file (14 bytes longer) does not
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:TEMP_NAME_HEAD]}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def is_temp_name(name: str) -> bool:
    """A temp file of atomic_path (`.<name>.<random>.tmp`): never a result, never archived."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files a killed writer left in `folder` (call it before this folder's writer starts)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def code_version() -> str:
    """sha256 over the godrun package's Python sources: identifies the code that produced an artefact."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


# A Job container's termination message: the file Kubernetes reads back into the pod status (at most 4096 bytes).
K8S_TERMINATION_LOG = Path("/dev/termination-log")


def termination_path(explicit: str | None) -> Path | None:
    """--termination-log, else $GODRUN_TERMINATION_LOG, else /dev/termination-log when Kubernetes mounted it."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("GODRUN_TERMINATION_LOG")
    if env:
        return Path(env)
    # Only the file Kubernetes mounts: creating /dev/termination-log on a workstation would litter /dev.
    if K8S_TERMINATION_LOG.is_file() and os.access(K8S_TERMINATION_LOG, os.W_OK):
        return K8S_TERMINATION_LOG
    return None


def write_termination(path: Path, text: str) -> None:
    """Atomic for ordinary files; in place for the file Kubernetes bind-mounts (renaming over a mount fails)."""
    if path == K8S_TERMINATION_LOG or (path.exists() and not path.is_file()):
        path.write_text(text, encoding="utf-8")
        return
    try:
        atomic_write_text(path, text)
    except OSError:
        path.write_text(text, encoding="utf-8")
