"""The seed's fallback on a failed verdict: archive the run's artefacts, document the failure.

Archives are never overwritten: `<parent>/<name>_failed_YYYYMMDD`, then `_2`, `_3`, ... The copy goes to a
temporary folder first and is renamed into place, so a half-copied archive never carries the final name.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from datetime import date as Date
from pathlib import Path

from godrun.errors import InputError
from godrun.paths import escape_text, writable_file
from godrun.spec import Verdict


def today_utc() -> Date:
    return datetime.now(UTC).date()


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
) -> Path:
    """Copy the run's folders (or files) into a fresh `<archive_parent>/<name>_failed_YYYYMMDD[_N]`; return it.

    `run_dir` is one path or several; each keeps its path relative to the cwd inside the archive
    (checkpoints/god_run/..., logs/god_run/...). Missing sources are skipped; none existing is an InputError.
    """
    sources = [Path(run_dir)] if isinstance(run_dir, str | os.PathLike) else [Path(p) for p in run_dir]
    present = [p for p in sources if p.exists()]
    if not present:
        raise InputError(f"--run-dir: nothing to archive, none of {[str(p) for p in sources]} exists")
    parent = Path(archive_parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = (date or today_utc()).strftime("%Y%m%d")
    target = _claim_target(parent, f"{name}_failed_{stamp}")
    staging = parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    parent_resolved = parent.resolve()

    def skip(d: str, names: list[str]) -> list[str]:
        # never copy the archive parent into itself when a run dir contains it
        return [n for n in names if (Path(d) / n).resolve() == parent_resolved]

    try:
        staging.mkdir()
        for src in present:
            dest = staging / _inside_name(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest, ignore=skip, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dest)
        os.replace(staging, target)  # target is the empty folder this call claimed
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        target.rmdir()
        raise
    return target


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
) -> Path:
    """Append a dated failure section to the analytics doc (created with a title when missing).

    Only a regular `.md` file inside the run volume is appended to (godrun.paths.writable_file).
    """
    path = writable_file(doc_path, "--analytics-doc", (".md",))
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "" if path.exists() and path.stat().st_size else "# Reviewing the 5-fold run\n\n"
    if head == "" and not path.read_text(encoding="utf-8").endswith("\n"):
        head = "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(head + failure_section(verdict, run_name, date or today_utc(), archive) + "\n")
    return path
