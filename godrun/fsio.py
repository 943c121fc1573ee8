"""File helpers every stage shares: confined opens, atomic writes, content hashes, the termination message.

Confinement at use. Inside the confinement root (GODRUN_RUN_VOLUME in a stage, the workdir in the local
runner: `confined_to`) every open walks the path from the root one component at a time with O_NOFOLLOW
(openat-style, relative to the folder descriptor opened just before): a symlink anywhere below the root,
planted before or swapped in after any earlier check, is refused (ConfinementError, exit 2), never
followed. The final open is made relative to the folder descriptor too, so a folder renamed or swapped
after the walk cannot redirect it. Paths outside the root (run by hand, --status elsewhere) have their
folder resolved once and their last component opened without following a symlink for writes.
Reads accept only regular files (opened non-blocking: a FIFO cannot hang a stage).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from godrun.contract import files
from godrun.errors import STORAGE_ERRNOS, InputError

RUN_VOLUME_ENV = "GODRUN_RUN_VOLUME"
TEMP_NAME_HEAD = 128
_ROOT_OVERRIDE: list[Path] = []  # innermost confined_to() last
_PROC_FD = Path("/proc/self/fd")


class ConfinementError(InputError):
    """A path leads through a symlink (or a non-folder) inside the confinement root: refused, exit 2."""


@contextlib.contextmanager
def confined_to(root: str | os.PathLike[str]) -> Iterator[None]:
    """Confine this process' opens below `root` for the block (the local runner's workdir)."""
    _ROOT_OVERRIDE.append(Path(os.path.realpath(root)))
    try:
        yield
    finally:
        _ROOT_OVERRIDE.pop()


def confinement_root() -> Path | None:
    if _ROOT_OVERRIDE:
        return _ROOT_OVERRIDE[-1]
    value = os.environ.get(RUN_VOLUME_ENV)
    return _real(value) if value else None


@functools.lru_cache(maxsize=8)
def _real(value: str) -> Path:
    """The volume's real path, once per value: it is the trusted root (set by the executor), not user input."""
    return Path(os.path.realpath(value))


def _below_root(path: str | os.PathLike[str]) -> tuple[str, list[str]] | None:
    """(root, components below it) when `path` (made absolute lexically) lies under the confinement root."""
    root = confinement_root()
    if root is None:
        return None
    full = os.path.abspath(os.fspath(path))
    for base in dict.fromkeys((str(root), os.path.abspath(os.environ.get(RUN_VOLUME_ENV) or root))):
        if full == base or full.startswith(base.rstrip(os.sep) + os.sep):
            rest = full[len(base) :].strip(os.sep)
            return str(root), [c for c in rest.split(os.sep) if c]
    return None


def _step(fd: int, part: str, path: str, create: bool) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(part, flags, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = "a symlink" if _is_link(fd, part) else "not a folder"
            raise ConfinementError(f"{path}: {part!r} on the way is {kind}; refusing to follow it") from None
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(part, 0o777, dir_fd=fd)
    return _step(fd, part, path, create=False)


def _is_link(fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode)
    except OSError:
        return False


def open_dir(path: str | os.PathLike[str], *, create: bool = False) -> int:
    """A descriptor of the folder `path` (created with its parents when `create`), confined as the module says."""
    below = _below_root(path)
    if below is None:
        real = os.path.realpath(path)
        if create:
            os.makedirs(real, exist_ok=True)
        return os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    root, parts = below
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            nxt = _step(fd, part, os.fspath(path), create)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dirs(path: str | os.PathLike[str]) -> None:
    """mkdir -p, confined: no symlink below the root is followed."""
    os.close(open_dir(path, create=True))


def _split(path: str | os.PathLike[str]) -> tuple[str, str]:
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    if not name:
        raise InputError(f"{os.fspath(path)}: not a file name")
    return parent, name


def open_file(path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
    """os.open of `path` relative to its confined folder; never follows a symlink below the root (writes: ever),
    never writes in place a regular file that has other hard links."""
    parent, name = _split(path)
    dfd = open_dir(parent, create=bool(flags & os.O_CREAT))
    writes = (flags & os.O_ACCMODE) != os.O_RDONLY
    follow = _below_root(path) is None and not writes
    try:
        # O_TRUNC waits for the hard-link check: truncating first would already change the shared inode
        fd = os.open(name, (flags & ~os.O_TRUNC) | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW), mode, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfinementError(f"{os.fspath(path)}: a symlink; refusing to follow it") from None
        raise
    finally:
        os.close(dfd)
    if writes:
        _refuse_hard_link(fd, path)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
    return fd


def _refuse_hard_link(fd: int, path: str | os.PathLike[str]) -> None:
    """A regular file with another name (a hard link, maybe to a file outside the volume) is never written in
    place: appending or truncating would change the other name's content too."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        os.close(fd)
        raise ConfinementError(
            f"{os.fspath(path)}: has {st.st_nlink} hard links (another name shares its content); refusing to write it"
        )


def read_bytes(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (a FIFO, device or folder raises OSError without blocking), confined."""
    fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a folder, FIFO or device)")
        if max_bytes is not None and st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than the {max_bytes} allowed here")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


def open_append(path: str | os.PathLike[str]) -> IO[bytes]:
    """A log file opened for appending (created if missing): confined, and only ever a regular file."""
    fd = open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{os.fspath(path)}: exists and is not a regular file (a FIFO, device or folder)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def append_text(path: str | os.PathLike[str], text: str) -> None:
    with open_append(path) as fh:
        fh.write(text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `dest`; rename it over `dest` only if the block succeeds.

    The temp file is created (exclusively, no symlink followed) in the confined folder of `dest`, and the
    path yielded names it through that folder's descriptor (/proc/self/fd/N/...), so the folder cannot be
    swapped between the walk and the rename. A failure (ENOSPC included) leaves `dest` untouched.
    """
    parent, name = _split(dest)
    dfd = open_dir(parent, create=True)
    try:
        # the temp name keeps at most TEMP_NAME_HEAD characters of the final one: a final name that fits the
        # 255-byte limit must not fail because its temp file (14 bytes longer) does not
        tmp = f".{name[:TEMP_NAME_HEAD]}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(tmp, flags, 0o666, dir_fd=dfd))  # the mode the umask gives any new file
        via = _PROC_FD / str(dfd) / tmp if _PROC_FD.is_dir() else Path(parent) / tmp
        try:
            try:
                yield via
            except OSError as exc:  # a full disk names the file being written, not its /proc/self/fd temp
                if exc.errno in STORAGE_ERRNOS:
                    raise OSError(exc.errno, exc.strerror, os.fspath(dest)) from exc
                raise
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def atomic_paths(dests: Iterator[str | os.PathLike[str]] | list[Path]) -> Iterator[list[Path]]:
    """atomic_path for several files at once: every temp file is written before any is renamed into place, so
    a failure while writing (ENOSPC, a bug) leaves every destination as it was, never some new and some old."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(d)) for d in dests]


def is_temp_name(name: str) -> bool:
    """A temp file of atomic_path (`.<name>.<random>.tmp`): never a result, never archived."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files a killed writer left in `folder` (call it before this folder's writer starts)."""
    removed: list[Path] = []
    try:
        fd = open_dir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    try:
        for entry in list(os.scandir(fd)):
            if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=fd)
                removed.append(Path(folder) / entry.name)
    finally:
        os.close(fd)
    return removed


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{os.fspath(path)}: not a regular file")
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


K8S_TERMINATION_LOG = Path(files.K8S_TERMINATION_LOG)


def termination_path(explicit: str | None) -> Path | None:
    """--termination-log, else $GODRUN_TERMINATION_LOG, else /dev/termination-log when Kubernetes mounted it."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(files.TERMINATION_LOG_ENV)
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
