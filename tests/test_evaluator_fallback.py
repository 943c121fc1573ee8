"""Fallback: archives never overwrite, the analytics doc gains a dated section naming failed gates and numbers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
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


# --------------------------------------------------------------------------- once per verdict, no debris

STRICT = ["--psnr-mean-min", "99"]


@pytest.fixture
def failing_run(small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A workspace whose evaluation fails gate 1, with a checkpoint folder holding a killed write's temp file."""
    ws = tmp_path / "ws"
    shutil.copytree(small_corpus / "data", ws / "data", ignore=shutil.ignore_patterns(".cache"))
    ckpts = ws / "checkpoints/god_run"
    ckpts.mkdir(parents=True)
    (ckpts / "notes.txt").write_text("kept\n")
    (ckpts / ".mamba_tiny_uv_last.pt.k3j2.tmp").write_bytes(b"half a checkpoint")
    monkeypatch.chdir(ws)
    return [
        "evaluate", "--denoiser", "identity", *STRICT, "--archive-on-fail", "--run-name", "god-run",
        "--run-dir", "checkpoints/god_run", "final_analytics/panel_eval", "--termination-log", "verdict.json",
    ]  # fmt: skip


def _archives(root: Path) -> list[Path]:
    return sorted((root / "artifacts").iterdir()) if (root / "artifacts").exists() else []


def test_evaluator_retried_after_archiving_archives_and_documents_once(failing_run: list[str], monkeypatch) -> None:
    from godrun.cli import main
    from godrun.evaluator import fallback

    real = fallback.append_failure_doc

    def crash(*args, **kwargs):
        raise RuntimeError("evaluator crashed after archiving")

    monkeypatch.setattr(fallback, "append_failure_doc", crash)
    with pytest.raises(RuntimeError):
        main(failing_run)
    monkeypatch.setattr(fallback, "append_failure_doc", real)
    for _ in range(3):  # the Job's retries
        assert main(failing_run) == 0
    root = Path.cwd()
    (archive,) = _archives(root)
    assert json.loads((root / "verdict.json").read_text())["archive"] == str(Path("artifacts") / archive.name)
    doc = (root / "final_analytics/reviewing_the_5fold_run.md").read_text()
    assert doc.count("\n## ") == 1 and doc.count("godrun-verdict") == 1
    assert (archive / "checkpoints/god_run/notes.txt").is_file()
    assert not list(archive.rglob("*.tmp")), "a killed write's temp file was archived"


KILL_MID_ARCHIVE = """
import os, signal, sys
from godrun.cli import main
from godrun.evaluator import fallback
real = fallback._copy_tree
def copy_tree(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # killed after the first folder is copied
fallback._copy_tree = copy_tree
sys.exit(main(sys.argv[1:]))
"""


def test_archive_killed_halfway_leaves_no_debris_after_the_retry(failing_run: list[str]) -> None:
    from godrun.cli import main

    root = Path.cwd()
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", KILL_MID_ARCHIVE, *failing_run], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert [p.name for p in _archives(root) if p.name.startswith(".")], "the kill should have left a staging folder"
    assert main(failing_run) == 0
    (archive,) = _archives(root)  # the staging folder is gone, no empty archive was claimed
    assert not archive.name.startswith(".") and (archive / "final_analytics/panel_eval/gates.json").is_file()
