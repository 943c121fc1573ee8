"""The formats between processes (godrun.contract): each schema round-trips through its one writer and one
reader, and its reader refuses a field nobody writes or a value of the wrong type. Torch-free."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from godrun.contract import checkpoint
from godrun.contract.gauges import GAUGES, PROGRESS_GAUGES, SCAN_BACKEND_INFO, SPECTRA, TrainGauges
from godrun.contract.jobrecord import JobRecord
from godrun.contract.termination import gauges_message, read_gauges_message, read_verdict_message, verdict_message
from godrun.core.observe import final_progress, parse_progress
from godrun.errors import InputError
from godrun.spec import Verdict
from godrun.trainer.telemetry import PromMetrics

# --------------------------------------------------------------------------- checkpoint


def _checkpoint(resume: bool) -> checkpoint.Checkpoint:
    meta = checkpoint.CheckpointMeta(
        config={"d_model": 16, "init_checkpoint": None},
        epoch=3,
        panel={"panel_psnr_mean": 21.5},
        norm=checkpoint.NormMeta(method="median_p5p95_v1", scale_floor=1e-6),
        cond_stats=checkpoint.CondStats(features=["dose"], mean=[1.0], std=[2.0]),
        data_hashes={"train_manifest": "a" * 64, "lambda_weights": None},
        code_version="c" * 64,
        scan_backend="torch",
    )
    state = checkpoint.ResumeState(
        optimizer={"state": {}, "param_groups": [{"lr": 0.1}]},
        scheduler={"last_epoch": 9},
        ema_n_averaged=9,
        rng=[1, 2, 3],
        early_stop=checkpoint.EarlyStopState(
            best_score=-math.inf, best_epoch=2, bad_epochs=1, best_rank=(4, -1.5, "e2")
        ),
        history=[{"epoch": 1, "loss": 0.5}],
    )
    return checkpoint.Checkpoint(model={"w": [0.0]}, meta=meta, ema={"w": [1.0]}, resume=state if resume else None)


@pytest.mark.parametrize("resume", [False, True], ids=["best", "last"])
def test_checkpoint_round_trips(resume: bool) -> None:
    ckpt = _checkpoint(resume)
    payload = checkpoint.to_payload(ckpt)
    assert set(payload) <= checkpoint.KEYS and ("optimizer" in payload) == resume
    assert checkpoint.from_payload(payload, "x.pt") == ckpt


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"has_ema": True}, "'has_ema'"),  # what the evaluator once read and nothing wrote
        ({"epoch": "three"}, "epoch"),
        ({"epoch": -1}, "epoch"),
        ({"config": None}, "config"),
        ({"cond_stats": {"features": ["a", "b"], "mean": [0.0], "std": [1.0]}}, "cond_stats"),
        ({"norm": {"method": "m", "scale_floor": 1.0, "extra": 1}}, "norm.extra"),
        ({"early_stop": {"best_score": 0.0, "best_rank": [1, 2]}}, "early_stop.best_rank"),
        ({"ema": [1, 2]}, "'ema'"),
    ],
)
def test_checkpoint_reader_refuses_what_no_writer_writes(change: dict[str, object], named: str) -> None:
    payload = checkpoint.to_payload(_checkpoint(resume=True)) | change
    with pytest.raises(InputError, match=r"x\.pt") as err:
        checkpoint.from_payload(payload, "x.pt")
    assert named in str(err.value)


def test_checkpoint_reader_needs_the_metadata_and_a_whole_resume_state() -> None:
    with pytest.raises(InputError, match="config"):
        checkpoint.from_payload({"model": {}, "epoch": 1}, "x.pt")
    partial = checkpoint.to_payload(_checkpoint(resume=False)) | {"optimizer": {}}
    with pytest.raises(InputError, match="scheduler"):
        checkpoint.from_payload(partial, "x.pt")
    with pytest.raises(InputError, match="'model' state_dict"):
        checkpoint.from_payload([1, 2], "x.pt")


# --------------------------------------------------------------------------- gauges and termination messages


def test_gauges_message_round_trips_and_reads_as_the_live_exposition() -> None:
    gauges = TrainGauges(epoch=3, epochs=4, best_epoch=2, panel_psnr_mean_decibels=21.25, lr=1e-4)
    text = gauges_message(gauges)
    assert read_gauges_message(text) == gauges
    # prometheus_client's own parser (the live endpoint's reader) makes the same progress of it
    assert final_progress(text) == parse_progress(text)
    assert final_progress(text).psnr_mean == 21.25 and final_progress(text).best_epoch == 2
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert set(samples) == set(GAUGES) and math.isnan(samples["godrun_train_loss"])
    assert set(PROGRESS_GAUGES) < set(GAUGES)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Traceback (most recent call last):\n  boom\n",  # a log tail (FallbackToLogsOnError)
        "godrun_train_bogus 1.0\n",
        "godrun_train_epoch 1.0\ngodrun_train_epoch 2.0\n",
        "godrun_train_epoch one\n",
        'godrun_train_epoch{rank="0"} 1.0\n',
    ],
)
def test_gauges_reader_refuses_what_the_writer_never_writes(text: str) -> None:
    assert read_gauges_message(text) is None and final_progress(text) is None


def test_the_gauge_set_refuses_unknown_names() -> None:
    with pytest.raises(ValidationError, match="bogus"):
        TrainGauges.model_validate({"bogus": 1.0})
    prom = PromMetrics(None)
    with pytest.raises(ValidationError, match="panel_psnr_mean"):
        prom.update(epoch=1, panel_psnr_mean=20.0)  # the metrics.csv column, not the gauge's name
    prom.update(epoch=2, loss=None, lr=math.nan)
    assert prom.values == TrainGauges(epoch=2)


def test_the_trainer_serves_exactly_the_gauge_set() -> None:
    prom = PromMetrics(0, scan_backend="torch")
    try:
        prom.update(epoch=1, epochs=2)
        with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        final = prom.final_text()
    finally:
        prom.close()
    families = {f.name: f.type for f in text_string_to_metric_families(text) if f.name.startswith("godrun_train_")}
    families.pop(f"{SPECTRA}_created", None)  # the counter's creation time, where prometheus_client adds it
    assert families == dict.fromkeys(GAUGES, "gauge") | {SCAN_BACKEND_INFO: "gauge", SPECTRA: "counter"}
    assert read_gauges_message(final) == TrainGauges(epoch=1, epochs=2)


def test_verdict_message_round_trips_and_refuses_other_fields() -> None:
    v = Verdict(verdict="fail", psnr_mean=19.5, failed_gates=["psnr"], checkpoints_evaluated=2)
    text = verdict_message(v)
    assert len(text.encode()) < 4096 and " " not in text
    assert read_verdict_message(text) == (v, None)
    assert read_verdict_message("") == (None, None)
    got, err = read_verdict_message(json.dumps(json.loads(text) | {"hasEma": True}))
    assert got is None and err and "hasEma" in err
    got, err = read_verdict_message(json.dumps({"verdict": "maybe"}))
    assert got is None and err and "verdict" in err


# --------------------------------------------------------------------------- the local job record


def test_job_record_round_trips() -> None:
    rec = JobRecord(argv=["python", "-m", "x"], attempts=2, failures=2, created_ts=1.5, last_exit=2)
    rec = rec.changed(exit_code=2, reason="BadInput")
    assert JobRecord.from_json(rec.to_json(), "job.json") == rec
    stopped = rec.changed(exit_code=None, reason=None, last_exit="stopped by the runner")
    assert JobRecord.from_json(stopped.to_json(), "job.json") == stopped


@pytest.mark.parametrize(
    "body",
    [
        {"argv": ["x"], "attempts": 1, "exitcode": 2},  # a misspelt field
        {"argv": ["x"], "attempts": "one"},
        {"argv": ["x"], "exit_code": 2},  # over, but without the reason decided then
        {"argv": ["x"], "exit_code": 3, "reason": "Completed"},
        {"argv": ["x"], "last_exit": "killed"},
        {"attempts": 1},
    ],
)
def test_job_record_reader_refuses_what_the_writer_never_writes(body: dict[str, object]) -> None:
    with pytest.raises(InputError, match=r"jobs/j/job\.json: not a job record"):
        JobRecord.from_json(json.dumps(body), "jobs/j/job.json")
    with pytest.raises(InputError, match="not a job record"):
        JobRecord.from_json(b"\xff{", "jobs/j/job.json")
