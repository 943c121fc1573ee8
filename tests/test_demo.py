"""`godrun demo`: the README's first command ships on the default seed; `--fail` runs the fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from godrun.cli import main
from godrun.spec import GodRunStatus

pytestmark = pytest.mark.slow


def _status(path: Path) -> GodRunStatus:
    return GodRunStatus.model_validate(json.loads(path.read_text()))


def test_demo_ships_then_fail_mode_runs_the_fallback(tmp_path: Path, capsys) -> None:
    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    status = _status(work / "status.json")
    assert status.phase == "Shipped" and status.panel.verdict == "pass"
    assert all(g.passed for g in status.panel.gates) and len(status.panel.gates) == 4
    assert status.panel.psnr_mean >= 18.0 and status.panel.spurious_peaks == 0
    # ships with margin, not by a hair: 1.5 dB above the PSNR gate and ROI integrity >= 0.95
    assert status.panel.psnr_mean >= 18.0 + 1.5 and status.panel.roi_ratio >= 0.95
    assert (work / "final_analytics/panel_eval/report.html").is_file()
    assert "report:" in out and "Shipped" in out
    # the gates are the seed's: nothing in the demo manifest loosens them
    manifest = (work / "godrun-demo.yaml").read_text()
    assert "gates" not in manifest

    assert main(["demo", "--workdir", str(work), "--fail"]) == 3
    failed = _status(work / "status-godrun-demo-fail.json")
    assert failed.phase == "Failed-ActB" and "aggregate" in failed.panel.failed_gates
    assert failed.archive and Path(failed.archive).name.startswith("god_run_failed_")
    assert (work / failed.archive / "checkpoints/god_run_fail").is_dir()
    assert "godrun-demo-fail" in (work / "final_analytics/reviewing_the_5fold_run.md").read_text()
    child = _status(work / "status-godrun-demo-fail-actb.json")
    assert child.phase in ("Shipped", "Failed-ActB")
    # the shipped run's outputs are untouched by the failing one
    assert _status(work / "status.json") == status
