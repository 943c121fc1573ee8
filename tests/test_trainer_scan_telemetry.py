"""The trainer says which selective scan it runs (train.log, a metric label, the checkpoint) and its gauges
start as NaN ("no value yet"), not 0."""

from __future__ import annotations

import math
import urllib.request

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from godrun.core.observe import parse_progress
from godrun.errors import InputError
from godrun.trainer import mamba, telemetry


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
