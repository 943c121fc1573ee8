"""The evaluator's command line: the seed's QA command verbatim, fail-fast hash check, compact verdict, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from godrun.contract.termination import verdict_message
from godrun.errors import InputError, run_main
from godrun.evaluator import cli, outputs
from godrun.evaluator.panel import Panel, load_panel, prediction_candidate
from godrun.fsio import sha256_file
from godrun.spec import FILM_FEATURES, Gates, Verdict

REPO = Path(__file__).resolve().parents[1]
OUTPUT_FILES = ("per_spectrum_metrics.csv", "per_group_summary.csv", "gates.json", "hashes.json", "report.html")


def make_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained tiny mamba_tiny_uv checkpoint in the trainer's format (with EMA weights and FiLM stats)."""
    import torch

    from godrun.contract.checkpoint import Checkpoint, CheckpointMeta, CondStats
    from godrun.model.checkpoint import save_checkpoint
    from godrun.model.inference import build_model
    from godrun.model.normalise import norm_meta
    from godrun.trainer.presets import preset_recipe

    torch.manual_seed(seed)
    recipe = preset_recipe("tiny", init_checkpoint=None)
    model = build_model(recipe)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    n = len(FILM_FEATURES)
    meta = CheckpointMeta(
        config=recipe.model_dump(),
        epoch=1,
        code_version="test",
        norm=norm_meta(),
        cond_stats=CondStats(features=list(FILM_FEATURES), mean=[0.0] * n, std=[1.0] * n),
    )
    save_checkpoint(path, Checkpoint(model=model.state_dict(), meta=meta, ema=ema))
    return path


@pytest.fixture()
def workspace(small_corpus: Path, tmp_path: Path) -> Path:
    """A run volume: data/ from the shared corpus (linked, read-only) and one tiny checkpoint in checkpoints/god_run."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "data").symlink_to(small_corpus / "data", target_is_directory=True)
    (ws / "checkpoints" / "god_run").mkdir(parents=True)
    make_tiny_checkpoint(ws / "checkpoints" / "god_run" / "mamba_tiny_uv_best.pt")
    return ws


SEED_QA = [
    "--checkpoint-dir", "checkpoints/god_run",
    "--manifest", "data/validation_panel.csv",
    "--root-dir", "data/spectra_for_fold",
    "--baseline-dir", "data/spectra_for_fold",
    "--metadata", "data/metadata/dose_features.csv",
    "--wavelength-grid", "data/spectra_for_fold/wavelength_grid.npy",
    "--output-dir", "final_analytics/panel_eval",
    "--downstream-script", "scripts/downstream_proxy_eval.py",
]  # fmt: skip


def test_seed_qa_command_runs_verbatim_and_writes_every_output(workspace: Path) -> None:
    ckpts = workspace / "checkpoints/god_run"
    make_tiny_checkpoint(ckpts / "mamba_tiny_uv_last.pt", seed=1)  # written (and recorded) as the trainer does
    term = workspace / "termination.json"
    panel_hash = sha256_file(workspace / "data/validation_panel.csv")
    env = {**os.environ, "GODRUN_TERMINATION_LOG": str(term), "PYTHONPATH": ""}
    cmd = [sys.executable, str(REPO / "scripts/evaluate_validation_panel.py"), *SEED_QA, "--expected-hash", panel_hash]
    proc = subprocess.run([*cmd, "--archive-on-fail"], cwd=workspace, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = workspace / "final_analytics/panel_eval"
    for name in OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "report: final_analytics/panel_eval/report.html" in proc.stdout
    verdict = Verdict.model_validate_json(term.read_text())
    assert len(term.read_bytes()) < 4096 and verdict.checkpoints_evaluated == 2
    assert verdict.lineage.panel_sha256 == panel_hash
    gates = json.loads((out / "gates.json").read_text())
    assert gates["ranking"][0]["checkpoint"] == verdict.lineage.best_checkpoint
    assert len(gates["ranking"]) == 2 and all(len(g["checks"]) for g in gates["gates"])
    hashes = json.loads((out / "hashes.json").read_text())
    assert hashes["panel_manifest"]["sha256"] == panel_hash
    assert set(hashes["checkpoints"]) == {f"checkpoints/god_run/mamba_tiny_uv_{k}.pt" for k in ("best", "last")}
    assert hashes["downstream_script"]["sha256"] == sha256_file(REPO / "scripts/downstream_proxy_eval.py")
    n_rows = len((out / "per_spectrum_metrics.csv").read_text().splitlines()) - 1
    assert n_rows == len((workspace / "data/validation_panel.csv").read_text().splitlines()) - 1
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Readiness gates" in html
    # an untrained model fails: the fallback archived the run and documented the failed gates
    assert verdict.verdict == "fail"
    (archive,) = list((workspace / "artifacts").iterdir())
    assert archive.name.startswith("god_run_failed_") and verdict.archive == f"artifacts/{archive.name}"
    assert (archive / "checkpoints/god_run/mamba_tiny_uv_best.pt").is_file()
    assert (archive / "final_analytics/panel_eval/gates.json").is_file()
    doc = (workspace / "final_analytics/reviewing_the_5fold_run.md").read_text()
    assert all(g in doc for g in verdict.failed_gates)


def test_hash_mismatch_exits_2_before_any_model_is_loaded(workspace: Path, monkeypatch, capsys) -> None:
    from godrun.model import inference

    bogus = workspace / "checkpoints/god_run/bogus.pt"
    bogus.write_bytes(b"not a checkpoint at all")
    from godrun.model.written import note_written

    note_written(bogus, sha256_file(bogus))  # recorded as the trainer's (else it is ignored, never loaded)
    loads: list[str] = []
    real = inference.load_model
    monkeypatch.setattr(inference, "load_model", lambda p, **kw: loads.append(str(p)) or real(p, **kw))
    monkeypatch.chdir(workspace)
    wrong = "0" * 64
    actual = sha256_file("data/validation_panel.csv")
    args = [*SEED_QA, "--expected-hash", wrong, "--termination-log", "term.json"]
    assert run_main(cli.main, args) == 2
    err = capsys.readouterr().err
    assert wrong in err and actual in err
    assert loads == [] and not Path("final_analytics").exists() and not Path("term.json").exists()
    # control: with the right hash the bogus checkpoint is loaded and refused (exit 2 naming the file)
    args[args.index(wrong)] = actual
    assert run_main(cli.main, args) == 2
    assert loads and "bogus.pt" in capsys.readouterr().err


def _panel(root: Path) -> Panel:
    data = root / "data"
    return load_panel(
        data / "validation_panel.csv", data / "spectra_for_fold", data / "spectra_for_fold/wavelength_grid.npy"
    )


def _mini_panel(panel: Panel, n: int) -> Panel:
    return Panel(
        panel.raw[:n], panel.reference[:n], panel.meta.iloc[:n].reset_index(drop=True), panel.wavelengths,
        panel.manifest, panel.manifest_sha256,
    )  # fmt: skip


def test_termination_json_stays_under_4kb_for_100_checkpoints(small_corpus: Path, tmp_path: Path) -> None:
    panel = _panel(small_corpus)
    mini = _mini_panel(panel, 2)
    long_dir = "checkpoints/god_run/" + "very_long_folder_name_" * 4
    rng = np.random.default_rng(0)
    noise = [rng.normal(0, 0.01 * k, mini.reference.shape).astype(np.float32) for k in range(100)]
    names = [f"{long_dir}/epoch_{k:04d}_mamba_tiny_uv.pt" for k in range(100)]
    cands = [prediction_candidate(names[k], mini.reference + noise[k]) for k in range(100)]
    res = outputs.evaluate_and_write(mini, cands, Gates(), output_dir=tmp_path / "out")
    text = verdict_message(res.verdict)
    assert len(text.encode()) < 4096
    v = Verdict.model_validate_json(text)
    assert v.checkpoints_evaluated == 100 and v.lineage.best_checkpoint == res.ranking[0]["checkpoint"]
    assert len(json.loads((tmp_path / "out/gates.json").read_text())["ranking"]) == 100
    # a pathological path is shortened, never allowed to break the limit
    huge = res.verdict.model_copy(update={"report": "x/" * 3000})
    assert len(verdict_message(huge).encode()) < 4096


def test_denoiser_mode_and_gate_flags(small_corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(small_corpus)
    out = tmp_path / "den"
    base = ["--denoiser", "savgol", "--output-dir", str(out), "--termination-log", str(tmp_path / "t.json")]
    assert run_main(cli.main, [*base, "--tail-fraction-min", "2"]) == 2
    assert "--tail-fraction-min" in capsys.readouterr().err and not out.exists()
    assert run_main(cli.main, [*base, "--psnr-mean-min", "99", "--spurious-peaks-max", "1000"]) == 0
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    v = Verdict.model_validate_json((tmp_path / "t.json").read_text())
    assert v.lineage.best_checkpoint == "denoiser:savgol" and v.checkpoints_evaluated == 1
    agg = next(g for g in v.gates if g.name == "aggregate")
    assert agg.checks[0].threshold == 99 and not agg.passed
    spur = next(c for g in v.gates for c in g.checks if c.metric == "spurious_peaks")
    assert spur.threshold == 1000 and spur.passed
    assert "FAIL" in capsys.readouterr().out


def test_missing_downstream_script_or_checkpoints_exit_2(workspace: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workspace)
    args = [*SEED_QA]
    args[args.index("scripts/downstream_proxy_eval.py")] = "scripts/nope.py"
    assert run_main(cli.main, args) == 2 and "--downstream-script" in capsys.readouterr().err
    empty = workspace / "empty"
    empty.mkdir()
    args = [*SEED_QA]
    args[args.index("checkpoints/god_run")] = str(empty)
    assert run_main(cli.main, args) == 2 and "no *.pt" in capsys.readouterr().err


def test_downstream_script_runs_alone_from_a_workspace(small_corpus: Path, tmp_path: Path) -> None:
    panel = _panel(small_corpus)
    np.save(tmp_path / "pred.npy", panel.reference)
    common = [
        sys.executable, str(REPO / "scripts/downstream_proxy_eval.py"),
        "--manifest", "data/validation_panel.csv",
        "--root-dir", "data/spectra_for_fold",
        "--wavelength-grid", "data/spectra_for_fold/wavelength_grid.npy",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": ""}
    runs = {}
    for name, extra in {
        "clean": ["--predictions", str(tmp_path / "pred.npy")],
        "raw": ["--denoiser", "identity"],
    }.items():
        csv = tmp_path / f"{name}.csv"
        proc = subprocess.run(
            [*common, *extra, "--output-csv", str(csv)], cwd=small_corpus, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads(csv.with_suffix(".json").read_text())
    assert runs["clean"]["downstream_err_mean"] == 0.0 and runs["clean"]["passed"]
    assert runs["raw"]["downstream_err_mean"] == pytest.approx(runs["raw"]["downstream_err_raw_mean"])
    assert runs["raw"]["downstream_err_raw_mean"] > 0


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"\x93NUMPY" + b"\x00" * 40, "not a readable .npy"), (b"PK\x03\x04junk", "an .npz archive"), (None, "folder")],
)
def test_downstream_predictions_that_are_not_an_array_exit_2(
    small_corpus: Path, tmp_path: Path, monkeypatch, capsys, content: bytes | None, why: str
) -> None:
    """--predictions is read inside the bad-input boundary: a broken file exits 2 naming it, writing nothing."""
    pred = tmp_path / "pred.npy"
    if content is None:
        pred.mkdir()
    else:
        pred.write_bytes(content)
    monkeypatch.chdir(small_corpus)
    out = tmp_path / "down.csv"
    argv = ["--predictions", str(pred), "--output-csv", str(out)]
    assert run_main(cli.downstream_main, argv) == 2
    err = capsys.readouterr().err
    assert str(pred) in err and (why in err or content is None), err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_controller_argv_parses_with_the_same_gates(tmp_path: Path, monkeypatch) -> None:
    from godrun.core.commands import evaluator_argv
    from godrun.spec import GodRunSpec

    spec = GodRunSpec.model_validate({"image": "x", "gates": {"psnrMeanMin": 21.5, "spuriousPeaksMax": 2}})
    argv = evaluator_argv(spec, "god-run")
    args = cli.build_parser().parse_args(argv[argv.index("--checkpoint-dir") :])
    assert cli.gates_from_args(args) == spec.gates
    assert args.archive_on_fail and args.run_name == "god-run"
    assert args.run_dir == ["checkpoints/god_run", "logs/god_run", "final_analytics/panel_eval"]
    # the image keeps scripts/ outside the workspace: a relative script is found under $GODRUN_HOME
    home = tmp_path / "home"
    (home / "scripts").mkdir(parents=True)
    (home / "scripts/proxy.py").write_text("# proxy\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GODRUN_HOME", str(home))
    assert cli.resolve_script("scripts/proxy.py") == home / "scripts/proxy.py"
    with pytest.raises(InputError):
        cli.resolve_script("scripts/absent_proxy.py")


def test_report_draws_the_training_runs_learning_curves(workspace: Path, monkeypatch, capsys) -> None:
    """metrics.csv beside the checkpoints (logs/<checkpoint dir name>/) becomes a learning-curve figure."""
    from godrun.evaluator.cli import main
    from godrun.trainer.telemetry import write_metrics_csv

    monkeypatch.chdir(workspace)
    args = [a for a in SEED_QA if "downstream" not in a]
    assert main(args) == 0
    html = (workspace / "final_analytics/panel_eval/report.html").read_text()
    assert "Learning curves" not in html  # no training log: nothing invented
    history = [
        {"epoch": e, "panel_psnr_mean": 15.0 + e, "panel_sam_mean": 9.0 - e, "panel_roi_ratio": 0.9,
         "panel_spurious": 0, "panel_downstream_err": 3e-4, "panel_downstream_err_raw": 5e-4}
        for e in (1, 2, 3)
    ]  # fmt: skip
    write_metrics_csv(workspace / "logs/god_run/metrics.csv", history)
    assert main(args) == 0
    html = (workspace / "final_analytics/panel_eval/report.html").read_text()
    assert "Learning curves" in html
    after = html.split("Learning curves", 1)[1]
    assert "data:image/png;base64," in after.split("Checkpoint ranking", 1)[0]
