"""Progress and verdict reading shared by both executors: the trainer's best epoch (its one ranking rule),
the same Progress from the trainer's Prometheus endpoint and from its metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from godrun.core.observe import parse_progress, read_progress_csv, read_verdict_file
from godrun.spec import Recipe, Verdict


def _csv(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["epoch", "panel_psnr_mean", "panel_sam_mean", "panel_score", "best_epoch"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_and_prometheus_give_the_same_progress(tmp_path: Path):
    rows = [
        {"epoch": 1, "panel_psnr_mean": 17.0, "panel_sam_mean": 9.5, "panel_score": 2.0, "best_epoch": 1},
        {"epoch": 2, "panel_psnr_mean": 18.5, "panel_sam_mean": 8.0, "panel_score": 3.0, "best_epoch": 2},
        {"epoch": 3, "panel_psnr_mean": 18.25, "panel_sam_mean": 8.25, "panel_score": 3.0, "best_epoch": 2},
    ]
    from_csv = read_progress_csv(_csv(tmp_path / "metrics.csv", rows), Recipe(epochs=10))
    reg = CollectorRegistry()
    values = {
        "godrun_train_epoch": 3,
        "godrun_train_epochs": 10,
        "godrun_train_best_epoch": 2,  # what the trainer reports: a tie does not improve
        "godrun_train_panel_psnr_mean_decibels": 18.25,
        "godrun_train_panel_sam_mean_degrees": 8.25,
    }
    for name, value in values.items():
        Gauge(name, name, registry=reg).set(value)
    assert from_csv == parse_progress(generate_latest(reg).decode())
    assert from_csv is not None and from_csv.best_epoch == 2


def test_csv_progress_before_the_first_epoch_and_with_nan(tmp_path: Path):
    assert read_progress_csv(tmp_path / "missing.csv", Recipe()) is None
    assert read_progress_csv(_csv(tmp_path / "empty.csv", []), Recipe()) is None
    rows = [{"epoch": 1, "panel_psnr_mean": "nan", "panel_sam_mean": "", "panel_score": "nan"}]
    p = read_progress_csv(_csv(tmp_path / "nan.csv", rows), Recipe(epochs=4))
    assert p is not None and (p.epoch, p.epochs, p.best_epoch, p.psnr_mean, p.sam_mean) == (1, 4, None, None, None)


def test_verdict_file(tmp_path: Path):
    path = tmp_path / "termination-log"
    assert read_verdict_file(path) == (None, f"{path} is missing")
    path.write_text("")
    assert read_verdict_file(path) == (None, f"{path} is empty")
    path.write_text("Traceback (most recent call last): boom")
    assert read_verdict_file(path)[1]
    v = Verdict(verdict="pass", psnr_mean=21.0)
    path.write_text(v.model_dump_json(by_alias=True))
    assert read_verdict_file(path) == (v, None)
