"""The seed's fallback on a failed verdict: archive the run's artefacts, document the failure.

Archives are never overwritten: `<parent>/<name>_failed_YYYYMMDD`, then `_2`, `_3`, ... The copy goes to a
temporary folder first and is renamed into place, so a half-copied archive never carries the final name.

Once per verdict, however often the evaluator is retried: a failed verdict has a key (`verdict_key`: the run,
the panel, the checkpoints' hashes, the gates and the failed gates). The archive holds it in `ARCHIVE_MARKER`
and the doc section in an HTML comment; both are looked up before anything is written, so a retried
evaluator reuses the archive and does not append the section twice. The staging folder is named after the
key, so the debris of a killed copy is removed by the next attempt at the same verdict.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from datetime import date as Date
from pathlib import Path
from typing import Any

from godrun.contract.files import ARCHIVE_MARKER
from godrun.errors import InputError
from godrun.fsio import (
    atomic_write_json,
    atomic_write_text,
    is_temp_name,
    open_dir,
    open_file,
    read_bytes,
    sha256_bytes,
)
from godrun.paths import escape_text, writable_file
from godrun.spec import Verdict


def today_utc() -> Date:
    return datetime.now(UTC).date()


DOC_MARKER = "<!-- godrun-verdict {key} -->"


def verdict_key(run_name: str, verdict: Verdict, inputs: dict[str, Any]) -> str:
    """Identifies one failed verdict: the same run, inputs (panel, checkpoints, gates) and failed gates."""
    body = {"run": run_name, "failed": sorted(verdict.failed_gates), "inputs": inputs}
    return sha256_bytes(json.dumps(body, sort_keys=True, default=str).encode())[:24]


def find_archive(archive_parent: str | os.PathLike[str], key: str) -> Path | None:
    """The archive already written for this verdict key, if any (markers read confined: no symlink followed)."""
    parent = Path(archive_parent)
    try:
        pfd = open_dir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        names = sorted(e.name for e in os.scandir(pfd) if e.is_dir(follow_symlinks=False))
    finally:
        os.close(pfd)
    for name in names:
        try:
            if json.loads(read_bytes(parent / name / ARCHIVE_MARKER, max_bytes=1 << 20)).get("key") == key:
                return parent / name
        except (OSError, ValueError, AttributeError, InputError):
            continue
    return None


def _claim_target(pfd: int, base: str) -> str:
    """Create the first free `base`, `base_2`, ... exclusively: the mkdir is the claim, two runs never share one."""
    n = 1
    while True:
        target = base if n == 1 else f"{base}_{n}"
        try:
            os.mkdir(target, dir_fd=pfd)
            return target
        except FileExistsError:
            n += 1


def _inside_name(src: Path) -> Path:
    """Where `src` goes inside the archive: its path relative to the cwd when below it, else its name."""
    try:
        rel = Path(os.path.abspath(src)).relative_to(Path.cwd())
    except ValueError:
        rel = Path(src.name)
    return rel  # Path(".") when src is the cwd itself: its contents go to the archive's top


def archive_run(
    run_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    archive_parent: str | os.PathLike[str],
    date: Date | None = None,
    *,
    name: str = "god_run",
    key: str | None = None,
) -> Path:
    """Copy the run's folders (or files) into a fresh `<archive_parent>/<name>_failed_YYYYMMDD[_N]`; return it.

    `run_dir` is one path or several; each keeps its path relative to the cwd inside the archive
    (checkpoints/god_run/..., logs/god_run/...). Missing sources are skipped; none existing is an InputError.
    With `key` (verdict_key), the archive already made for that key is returned instead of a second copy.
    Everything is opened relative to folder descriptors, symlinks never followed (a source, or anything in
    one, that is a symlink is not archived; a symlinked archive folder is refused). Temp files of
    interrupted writes are never archived.
    """
    parent = Path(archive_parent)
    if parent.exists() and not parent.is_dir():
        raise InputError(f"archive folder {parent}: exists and is not a folder")
    if key is not None and (done := find_archive(parent, key)) is not None:
        return done
    sources = [Path(run_dir)] if isinstance(run_dir, str | os.PathLike) else [Path(p) for p in run_dir]
    # a source that is itself a symlink (checkpoint_dir -> the volume root) is never followed nor archived
    present = [p for p in sources if p.exists() and not p.is_symlink()]
    if not present:
        raise InputError(f"--run-dir: nothing to archive, none of {[str(p) for p in sources]} exists")
    base = f"{name}_failed_{(date or today_utc()).strftime('%Y%m%d')}"
    staging = f".{base}.{key}.partial" if key else f".{base}.partial-{os.getpid()}"
    pfd = open_dir(parent, create=True)
    try:
        shutil.rmtree(staging, dir_fd=pfd, ignore_errors=True)  # a killed attempt at this same verdict
        try:
            os.mkdir(staging, dir_fd=pfd)
            _copy_sources(present, pfd, staging)
            marker = {"key": key, "run": name, "sources": [str(p) for p in present], "created": datetime.now(UTC)}
            atomic_write_json(parent / staging / ARCHIVE_MARKER, marker)
            target = _claim_target(pfd, base)  # claimed only now: a kill during the copy leaves no empty archive
            os.replace(staging, target, src_dir_fd=pfd, dst_dir_fd=pfd)  # target: the empty folder just claimed
        except BaseException:
            shutil.rmtree(staging, dir_fd=pfd, ignore_errors=True)
            raise
    finally:
        os.close(pfd)
    return parent / target


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _copy_sources(present: Sequence[Path], pfd: int, staging: str) -> None:
    skip = os.fstat(pfd)  # never copy the archive parent into itself when a run dir contains it
    sfd = os.open(staging, _DIR_FLAGS, dir_fd=pfd)
    try:
        for src in present:
            rel = _inside_name(src)
            dfd = _make_dirs_at(sfd, rel.parts if src_is_dir(src) else rel.parent.parts)
            try:
                if src_is_dir(src):
                    srcfd = open_dir(src)  # confined: a source that is (or lies behind) a symlink is refused
                    try:
                        _copy_tree(srcfd, dfd, (skip.st_dev, skip.st_ino))
                    finally:
                        os.close(srcfd)
                else:
                    sfile = open_file(src, os.O_RDONLY | os.O_NONBLOCK)
                    try:
                        _copy_file(sfile, dfd, rel.name)
                    finally:
                        os.close(sfile)
            finally:
                os.close(dfd)
    finally:
        os.close(sfd)


def src_is_dir(src: Path) -> bool:
    return src.is_dir() and not src.is_symlink()


def _make_dirs_at(fd: int, parts: Sequence[str]) -> int:
    cur = os.dup(fd)
    try:
        for part in parts:
            if part in ("", "."):
                continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=cur)
            nxt = os.open(part, _DIR_FLAGS, dir_fd=cur)
            os.close(cur)
            cur = nxt
    except BaseException:
        os.close(cur)
        raise
    return cur


def _copy_tree(src_fd: int, dst_fd: int, skip: tuple[int, int]) -> None:
    """Copy folders and regular files (never symlinks, FIFOs or devices, never temp files) fd to fd."""
    for entry in sorted(os.scandir(src_fd), key=lambda e: e.name):
        if is_temp_name(entry.name):
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) != skip:
            child = os.open(entry.name, _DIR_FLAGS, dir_fd=src_fd)
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(entry.name, dir_fd=dst_fd)
                out = os.open(entry.name, _DIR_FLAGS, dir_fd=dst_fd)
                try:
                    _copy_tree(child, out, skip)
                finally:
                    os.close(out)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                _copy_file(fd, dst_fd, entry.name)
            finally:
                os.close(fd)


def _copy_file(src: int, dst_dir: int, name: str) -> None:
    if not stat.S_ISREG(os.fstat(src).st_mode):
        return
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dst_dir)
    try:
        while block := os.read(src, 1 << 20):
            os.write(out, block)
    finally:
        os.close(out)


def failure_section(verdict: Verdict, run_name: str, date: Date, archive: Path | None = None) -> str:
    """The dated markdown section: which gates failed, with each failing number against its threshold."""
    failed = [g for g in verdict.gates if not g.passed]
    # every string from the spec or the file system is escaped onto one line: it cannot add markdown lines
    run_name = escape_text(run_name)
    lines = [f"## {date.isoformat()} — {run_name}: panel verdict {verdict.verdict.upper()}", ""]
    names = ", ".join(g.name for g in failed) or "none"
    lines.append(f"Failed gates: **{names}** ({verdict.checkpoints_evaluated} checkpoint(s) evaluated).")
    if verdict.lineage.best_checkpoint:
        lines.append(f"Best checkpoint: `{escape_text(verdict.lineage.best_checkpoint)}`.")
    lines.append("")
    for gate in failed:
        for c in gate.checks:
            mark = "pass" if c.passed else "**FAIL**"
            value = "n/a" if c.value is None else f"{c.value:.4g}"
            lines.append(f"- gate `{gate.name}`: {c.metric} = {value} (needs {c.op} {c.threshold:g}) — {mark}")
    if archive is not None:
        lines += ["", f"Artefacts archived to `{escape_text(archive)}`."]
    if verdict.report:
        lines.append(f"Panel report: `{escape_text(verdict.report)}`.")
    lines += ["", "Next: resume the Act B schedule (calibrator head + loss rebalance), warm-started from this run.", ""]
    return "\n".join(lines) + "\n"


def append_failure_doc(
    doc_path: str | os.PathLike[str],
    verdict: Verdict,
    run_name: str,
    date: Date | None = None,
    archive: Path | None = None,
    *,
    key: str | None = None,
) -> Path:
    """Append a dated failure section to the analytics doc (created with a title when missing).

    With `key`, a doc that already holds this verdict's section is left as it is. The doc is rewritten
    atomically, so a kill never leaves half a section. Only a regular `.md` file inside the run volume is
    written (godrun.paths.writable_file).
    """
    path = writable_file(doc_path, "--analytics-doc", (".md",))
    try:
        old = read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        old = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--analytics-doc {path}: cannot read it ({exc})") from None
    marker = DOC_MARKER.format(key=key) if key else ""
    if marker and marker in old:
        return path
    head = "" if old else "# Reviewing the 5-fold run\n\n"
    if old and not old.endswith("\n"):
        head = "\n"
    section = failure_section(verdict, run_name, date or today_utc(), archive)
    atomic_write_text(path, old + head + (f"{marker}\n" if marker else "") + section + "\n")
    return path
