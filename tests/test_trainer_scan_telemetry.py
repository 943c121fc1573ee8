"""The trainer says which selective scan it runs (train.log, a metric label, the checkpoint) and its gauges
start as NaN ("no value yet"), not 0."""

from __future__ import annotations

import math
import urllib.request
from pathlib import Path

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from godrun.core.observe import parse_progress
from godrun.errors import InputError
from godrun.model import mamba
from godrun.trainer import telemetry


def _scrape(prom: telemetry.PromMetrics) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_gauges_start_nan_and_the_backend_is_a_label() -> None:
    prom = telemetry.PromMetrics(0, scan_backend="mamba_ssm")
    try:
        text = _scrape(prom)
    finally:
        prom.close()
    values = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    for name in ("godrun_train_epoch", "godrun_train_panel_psnr_mean_decibels", "godrun_train_loss"):
        assert math.isnan(values[name].value), name
    assert values["godrun_train_scan_backend_info"].labels == {"backend": "mamba_ssm"}
    progress = parse_progress(text)  # what the controller makes of a trainer before its first epoch
    assert progress is not None and progress.psnr_mean is None and progress.epoch == 0


def test_cuda_fallback_is_an_error_when_the_fused_scan_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mamba, "_mamba_ssm_scan", lambda: None)
    cuda = torch.device("cuda")
    monkeypatch.delenv(mamba.REQUIRE_FUSED_ENV, raising=False)
    assert mamba.scan_backend(cuda) == "torch"
    monkeypatch.setenv(mamba.REQUIRE_FUSED_ENV, "1")
    with pytest.raises(InputError, match="GODRUN_REQUIRE_FUSED_SCAN=1"):
        mamba.scan_backend(cuda)
    assert mamba.scan_backend(torch.device("cpu")) == "torch"  # CPU never needs the CUDA kernel


def test_import_failure_is_kept_for_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    mamba._mamba_ssm_scan.cache_clear()
    try:
        if mamba._mamba_ssm_scan() is None:
            assert mamba.fused_scan_error() and "selective_scan_cuda" in mamba.fused_scan_error()
    finally:
        mamba._mamba_ssm_scan.cache_clear()


def test_final_gauges_become_the_termination_message(small_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    """A run shorter than the controller's progress poll still reports its epochs: rank 0 writes its last gauges
    as the termination message, and they read back as the same progress as metrics.csv's last row."""
    from test_trainer_train import small_recipe

    from godrun.core.observe import final_progress, read_progress_csv
    from godrun.trainer.loop import train

    term = tmp_path / "termination-log"
    monkeypatch.setenv("GODRUN_TERMINATION_LOG", str(term))
    recipe = small_recipe(small_corpus, tmp_path, epochs=2, metrics_port=0)
    train(recipe, log=False)
    text = term.read_text()
    assert len(text.encode()) < 4096 and "# HELP" not in text
    from_message = final_progress(text)
    from_csv = read_progress_csv(Path(recipe.log_dir) / "metrics.csv", recipe)
    assert from_message is not None and from_message.epoch == 2
    assert from_csv is not None
    assert from_message.epochs == from_csv.epochs == 2
    assert from_message.best_epoch == from_csv.best_epoch in (1, 2)
    assert from_message.psnr_mean == pytest.approx(from_csv.psnr_mean, abs=1e-4)  # metrics.csv keeps 4 decimals
    assert from_message.sam_mean == pytest.approx(from_csv.sam_mean, abs=1e-4)


def test_final_progress_refuses_what_is_not_a_finished_trainers_gauges() -> None:
    from godrun.core.observe import final_progress

    assert final_progress("") is None
    assert final_progress("Traceback (most recent call last):\n  boom {") is None  # a log tail (FallbackToLogs)
    assert final_progress("godrun_train_epoch NaN\ngodrun_train_epochs 4.0\n") is None  # no epoch finished
    assert final_progress("godrun_train_epoch 3.0\ngodrun_train_epochs 4.0\n").epoch == 3
