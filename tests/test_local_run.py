"""`godrun run`: the state machine driving local processes, end to end on a small corpus."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from run_support import LENIENT_GATES, write_godrun

from godrun.local.cli import main as run_main
from godrun.spec import MAX_PARENT_NAME, GodRunStatus, Recipe
from godrun.tables import RUN_HEADER, format_plain, run_row
from godrun.trainer.presets import PRESETS


def _workdir(small_corpus: Path, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(small_corpus / "data", work / "data")
    return work


def _manifest(work: Path, name: str, *, gates: dict[str, Any], epochs: int = 2, **spec: Any) -> Path:
    training = Recipe.model_validate(Recipe().model_dump() | PRESETS["tiny"]).model_dump(mode="json")
    training |= {"init_checkpoint": None, "epochs": epochs}
    return write_godrun(work, name, **({"image": "local", "training": training, "gates": gates} | spec))


def _status(path: Path) -> GodRunStatus:
    return GodRunStatus.model_validate_json(path.read_text())


def test_tiny_manifest_ships_and_writes_outputs(small_corpus: Path, tmp_path: Path, capsys) -> None:
    work = _workdir(small_corpus, tmp_path)
    path = _manifest(work, "tiny", gates=LENIENT_GATES)
    assert run_main([str(path), "--workdir", str(work), "--poll", "0.2"]) == 0
    status = _status(work / "status.json")
    assert status.phase == "Shipped"
    assert {c.type: c.status for c in status.conditions} == {
        "DataVerified": "True", "Trained": "True", "Evaluated": "True", "GatesPassed": "True",
        "Succeeded": "True", "Failed": "False",
    }  # fmt: skip
    assert status.panel is not None and status.panel.verdict == "pass"
    assert status.lineage.best_checkpoint_sha256 and status.lineage.panel_sha256
    assert status.lineage.scan_backend == "torch"  # CPU: the pure-torch scan, recorded with the verdict
    assert "selective scan backend: torch" in (work / "logs/god_run/train.log").read_text()
    assert status.progress.epoch == 2
    assert (work / "checkpoints/god_run/mamba_tiny_uv_best.pt").is_file()
    for out in ("gates.json", "per_spectrum_metrics.csv", "report.html", "hashes.json"):
        assert (work / "final_analytics/panel_eval" / out).is_file(), out
    # the printed table is the status file's table (age aside)
    printed = capsys.readouterr().out
    table = format_plain(RUN_HEADER, [run_row("tiny", status, status.start_time)])
    header, row = table.splitlines()
    assert header in printed
    assert any(line.split()[:6] == row.split()[:6] for line in printed.splitlines())
    # re-running a finished run changes nothing
    before = (work / "status.json").read_bytes()
    assert run_main([str(path), "--workdir", str(work), "--quiet"]) == 0
    assert (work / "status.json").read_bytes() == before


def test_failing_manifest_reaches_failed_actb_and_archives(small_corpus: Path, tmp_path: Path) -> None:
    work = _workdir(small_corpus, tmp_path)
    strict = LENIENT_GATES | {"psnrMeanMin": 99.0}
    name = "strict-" + "x" * (MAX_PARENT_NAME - len("strict-"))  # the longest name: every derived name must fit
    path = _manifest(work, name, gates=strict, epochs=1, fallback={"launchActB": True, "actB": {"epochs": 1}})
    assert run_main([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 3
    status = _status(work / "status.json")
    assert status.phase == "Failed-ActB" and status.panel.failed_gates == ["aggregate"]
    assert status.archive and (work / status.archive).is_dir()
    assert any((work / status.archive).rglob("mamba_tiny_uv_best.pt"))
    doc = (work / "final_analytics/reviewing_the_5fold_run.md").read_text()
    assert "aggregate" in doc and "psnr_mean" in doc
    child = yaml.safe_load((work / f"{name}-actb.yaml").read_text())
    assert child["spec"]["training"]["calibrator_head"] is True
    assert child["spec"]["training"]["init_checkpoint"] == status.lineage.best_checkpoint
    child_status = _status(work / f"status-{name}-actb.json")
    assert child_status.phase == "Failed-ActB"  # same strict gates: the child is judged as strictly


def test_invalid_manifest_exits_2_naming_the_field(tmp_path: Path, capsys) -> None:
    path = _manifest(tmp_path, "bad", gates={"tailFractionMin": 1.5})
    assert run_main_cli(["run", str(path), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "spec.gates.tailFractionMin" in err and str(path) in err
    assert not (tmp_path / "status.json").exists()


def _epochs(work: Path) -> list[int]:
    with open(work / "logs/god_run/metrics.csv", newline="") as fh:
        return [int(float(r["epoch"])) for r in csv.DictReader(fh)]


def test_interrupted_run_resumes_without_losing_epochs(small_corpus: Path, tmp_path: Path) -> None:
    work = _workdir(small_corpus, tmp_path)
    path = _manifest(work, "resume", gates=LENIENT_GATES, epochs=4)
    cmd = [sys.executable, "-m", "godrun", "run", str(path), "--workdir", str(work), "--poll", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (work / "logs/god_run/metrics.csv").exists() and len(_epochs(work)) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, out
    interrupted = _status(work / "status.json")
    assert interrupted.phase == "Training"
    done_before = _epochs(work)
    assert 1 <= len(done_before) < 4
    assert run_main([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 0
    assert _epochs(work) == [1, 2, 3, 4]
    status = _status(work / "status.json")
    assert status.phase == "Shipped" and status.progress.epoch == 4
    log = (work / "logs/god_run/train.log").read_text()
    assert "resum" in log.lower()
    gates = json.loads((work / "final_analytics/panel_eval/gates.json").read_text())
    assert gates["verdict"] == "pass"


@pytest.mark.parametrize("text", ["apiVersion: [", "kind: GodRun\n---\nkind: GodRun\n"])
def test_unreadable_manifest_exits_2(tmp_path: Path, text: str, capsys) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert run_main_cli(["run", str(path), "--workdir", str(tmp_path)]) == 2
    assert str(path) in capsys.readouterr().err


def run_main_cli(argv: list[str]) -> int:
    from godrun.cli import main

    return main(argv)


def test_stage_exit_2_is_error_with_the_stage_message_and_no_retry(small_corpus: Path, tmp_path: Path) -> None:
    work = _workdir(small_corpus, tmp_path)
    path = _manifest(work, "nodata", gates=LENIENT_GATES)
    body = yaml.safe_load(path.read_text())
    body["spec"]["training"]["train_manifest"] = "data/missing.csv"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    assert run_main([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 2
    status = _status(work / "status.json")
    assert status.phase == "Error" and status.reason == "BadInput"
    assert "data/missing.csv" in status.message and "exit code 2" in status.message
    job = json.loads((work / ".godrun/nodata/jobs/nodata-train-g1/job.json").read_text())
    assert job["attempts"] == 1 and job["exit_code"] == 2
