"""Fallback: archives never overwrite, the analytics doc gains a dated section naming failed gates and numbers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from godrun.errors import InputError
from godrun.evaluator.fallback import append_failure_doc, archive_run
from godrun.spec import Check, GateResult, Verdict

DAY = date(2025, 3, 7)


def _run_tree(root: Path, marker: str) -> list[Path]:
    (root / "checkpoints/god_run").mkdir(parents=True, exist_ok=True)
    (root / "logs/god_run").mkdir(parents=True, exist_ok=True)
    (root / "checkpoints/god_run/best.pt").write_text(marker)
    (root / "logs/god_run/train.log").write_text(f"log {marker}\n")
    return [root / "checkpoints/god_run", root / "logs/god_run", root / "missing_dir"]


def test_archive_never_overwrites(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    dirs = _run_tree(tmp_path, "first")
    a1 = archive_run(dirs, "artifacts", DAY)
    assert a1 == Path("artifacts/god_run_failed_20250307")
    assert (a1 / "checkpoints/god_run/best.pt").read_text() == "first"
    assert (a1 / "logs/god_run/train.log").is_file() and not (a1 / "missing_dir").exists()
    _run_tree(tmp_path, "second")
    a2 = archive_run(dirs, "artifacts", DAY)
    (tmp_path / "artifacts/god_run_failed_20250307_3").mkdir()  # someone else's folder, even an empty one
    a4 = archive_run(dirs, "artifacts", DAY)
    assert a2.name == "god_run_failed_20250307_2" and a4.name == "god_run_failed_20250307_4"
    assert (a1 / "checkpoints/god_run/best.pt").read_text() == "first"
    assert (a2 / "checkpoints/god_run/best.pt").read_text() == "second"
    assert not any((tmp_path / "artifacts/god_run_failed_20250307_3").iterdir())
    assert not [p for p in Path("artifacts").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_archive_inside_run_dir_does_not_recurse(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _run_tree(tmp_path, "x")
    a = archive_run([Path(".")], "artifacts", DAY, name="act_a")
    assert a.name == "act_a_failed_20250307" and (a / "checkpoints/god_run/best.pt").is_file()
    assert not (a / "artifacts").exists()


def test_archive_with_nothing_to_copy_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to archive"):
        archive_run([tmp_path / "nope"], tmp_path / "artifacts", DAY)
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def _failed_verdict() -> Verdict:
    def check(metric: str, value: float, op: str, threshold: float, passed: bool) -> Check:
        return Check(metric=metric, value=value, op=op, threshold=threshold, passed=passed)

    gates = [
        GateResult(name="aggregate", passed=True, checks=[check("psnr_mean", 21.5, ">=", 18, True)]),
        GateResult(name="tail", passed=True, checks=[check("tail_ratio", 0.97, ">=", 0.95, True)]),
        GateResult(
            name="roi",
            passed=False,
            checks=[check("roi_ratio", 0.8125, ">=", 0.9, False), check("spurious_peaks", 3.0, "<=", 0, False)],
        ),
        GateResult(name="downstream", passed=True, checks=[check("downstream_err_mean", 0.01, "<=", 0.02, True)]),
    ]
    return Verdict(verdict="fail", gates=gates, failed_gates=["roi"], checkpoints_evaluated=2)


def test_failure_doc_appends_dated_sections_with_numbers(tmp_path: Path) -> None:
    doc = tmp_path / "final_analytics/reviewing_the_5fold_run.md"
    v = _failed_verdict()
    append_failure_doc(doc, v, "god_run", DAY, Path("artifacts/god_run_failed_20250307"))
    first = doc.read_text()
    assert first.startswith("# ") and "## 2025-03-07 — god_run" in first
    assert "roi_ratio = 0.8125" in first and ">= 0.9" in first and "spurious_peaks = 3" in first
    assert "psnr_mean" not in first  # only failed gates are itemised
    assert "artifacts/god_run_failed_20250307" in first
    append_failure_doc(doc, v, "god_run-actb", date(2025, 3, 8))
    text = doc.read_text()
    assert text.startswith(first) and text.count("## 2025-") == 2 and "## 2025-03-08 — god_run-actb" in text
