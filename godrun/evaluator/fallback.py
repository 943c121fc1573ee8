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

import json
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from datetime import date as Date
from pathlib import Path
from typing import Any

from godrun.errors import InputError
from godrun.fsio import atomic_write_json, atomic_write_text, is_temp_name, sha256_bytes
from godrun.paths import escape_text, writable_file
from godrun.spec import Verdict


def today_utc() -> Date:
    return datetime.now(UTC).date()


ARCHIVE_MARKER = ".godrun-archive.json"
DOC_MARKER = "<!-- godrun-verdict {key} -->"


def verdict_key(run_name: str, verdict: Verdict, inputs: dict[str, Any]) -> str:
    """Identifies one failed verdict: the same run, inputs (panel, checkpoints, gates) and failed gates."""
    body = {"run": run_name, "failed": sorted(verdict.failed_gates), "inputs": inputs}
    return sha256_bytes(json.dumps(body, sort_keys=True, default=str).encode())[:24]


def find_archive(archive_parent: str | os.PathLike[str], key: str) -> Path | None:
    """The archive already written for this verdict key, if any."""
    parent = Path(archive_parent)
    for marker in sorted(parent.glob(f"*/{ARCHIVE_MARKER}")):
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("key") == key:
                return marker.parent
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _claim_target(archive_parent: Path, base: str) -> Path:
    """Create the first free `base`, `base_2`, ... exclusively: the mkdir is the claim, two runs never share one."""
    n = 1
    while True:
        target = archive_parent / (base if n == 1 else f"{base}_{n}")
        try:
            target.mkdir()
            return target
        except FileExistsError:
            n += 1


def _inside_name(src: Path) -> Path:
    """Where `src` goes inside the archive: its path relative to the cwd when below it, else its name."""
    try:
        rel = src.resolve().relative_to(Path.cwd().resolve())
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
    Temp files of interrupted writes are never archived.
    """
    parent = Path(archive_parent)
    if key is not None and (done := find_archive(parent, key)) is not None:
        return done
    sources = [Path(run_dir)] if isinstance(run_dir, str | os.PathLike) else [Path(p) for p in run_dir]
    present = [p for p in sources if p.exists()]
    if not present:
        raise InputError(f"--run-dir: nothing to archive, none of {[str(p) for p in sources]} exists")
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{name}_failed_{(date or today_utc()).strftime('%Y%m%d')}"
    staging = parent / (f".{base}.{key}.partial" if key else f".{base}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # a killed attempt at this same verdict
    try:
        _copy_sources(present, staging, parent.resolve())
        marker = {"key": key, "run": name, "sources": [str(p) for p in present], "created": datetime.now(UTC)}
        atomic_write_json(staging / ARCHIVE_MARKER, marker)
        target = _claim_target(parent, base)  # claimed only now: a kill during the copy leaves no empty archive
        os.replace(staging, target)  # target is the empty folder this call claimed
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _copy_sources(present: Sequence[Path], staging: Path, parent_resolved: Path) -> None:
    def skip(d: str, names: list[str]) -> list[str]:
        # never copy the archive parent into itself when a run dir contains it, nor half-written temp files
        return [n for n in names if is_temp_name(n) or (Path(d) / n).resolve() == parent_resolved]

    staging.mkdir()
    for src in present:
        dest = staging / _inside_name(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=skip, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest)


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
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    marker = DOC_MARKER.format(key=key) if key else ""
    if marker and marker in old:
        return path
    head = "" if old else "# Reviewing the 5-fold run\n\n"
    if old and not old.endswith("\n"):
        head = "\n"
    section = failure_section(verdict, run_name, date or today_utc(), archive)
    atomic_write_text(path, old + head + (f"{marker}\n" if marker else "") + section + "\n")
    return path
