"""The verdict belongs to one run and to pinned inputs: another run's state, a swapped grid or dose-feature
table, panel spectra re-encoded into the training data, a stale metrics.csv: none of them reaches it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from run_support import LENIENT_GATES, write_godrun

from godrun.data import layout
from godrun.fsio import sha256_file
from godrun.local.cli import main as run_main
from godrun.spec import GodRunStatus, Recipe
from godrun.trainer.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"GODRUN_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _copy(small_corpus: Path, tmp_path: Path) -> Path:
    work = tmp_path / "vol"
    shutil.copytree(small_corpus / "data", work / "data")
    return work


def _godrun(*argv: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "godrun", *argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def _evaluate(work: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = ["evaluate", "--denoiser", "identity", "--output-dir", "out", "--termination-log", "verdict.json"]
    return _godrun(*argv, *extra, cwd=work)


def _training(epochs: int = 1, **over: Any) -> dict[str, Any]:
    training = Recipe.model_validate(Recipe().model_dump() | PRESETS["tiny"]).model_dump(mode="json")
    return training | {"init_checkpoint": None, "epochs": epochs} | over


def _folders(tag: str) -> dict[str, Any]:
    return {"log_dir": f"logs/{tag}", "checkpoint_dir": f"checkpoints/{tag}", "audit_log": f"logs/{tag}/audit.log"}


# --------------------------------------------------------------------------- one run, one state


def _shipped_status() -> dict[str, Any]:
    st = GodRunStatus(phase="Shipped", reason="GatesPassed", observed_generation=1)
    return st.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.mark.parametrize("how", ["status-file", "same-folders"])
def test_a_second_run_never_inherits_the_first_ones_status(small_corpus: Path, tmp_path: Path, how: str) -> None:
    work = _copy(small_corpus, tmp_path)
    (work / "status.json").write_text(json.dumps(_shipped_status()))  # what `first` left: Shipped
    (work / ".godrun" / "first").mkdir(parents=True)
    (work / ".godrun" / "first" / "state.json").write_text(json.dumps({"generation": 1, "spec_sha256": "0" * 64}))
    folders = _folders("second") if how == "status-file" else {}
    strict = LENIENT_GATES | {"psnrMeanMin": 100.0}
    path = write_godrun(
        work,
        "second",
        image="local",
        training=_training(**folders),
        gates=strict,
        fallback={"launchActB": False},
    )
    code = run_main([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"])
    assert code == 3  # it trained and was judged by its own gates (100 dB fails)
    status = GodRunStatus.model_validate_json((work / "status.json").read_text())
    assert status.phase == "Failed-ActB" and status.panel is not None
    assert status.panel.failed_gates and "aggregate" in status.panel.failed_gates
    ckpts = work / (folders.get("checkpoint_dir") or "checkpoints/god_run")
    assert any(ckpts.glob("*.pt"))


def test_a_second_run_never_takes_over_the_first_ones_folders(small_corpus: Path, tmp_path: Path) -> None:
    """`first` shipped from checkpoints/god_run; `second` (same folders, stricter gates) must not resume,
    evaluate or ship first's checkpoints: refused before anything starts, naming the folder and the owner."""
    work = _copy(small_corpus, tmp_path)
    first = write_godrun(work, "first", image="local", training=_training(), gates=LENIENT_GATES)
    assert run_main([str(first), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 0
    shipped = (work / "status.json").read_bytes()
    for gates in (LENIENT_GATES | {"psnrMeanMin": 100.0}, LENIENT_GATES):
        second = write_godrun(work, "second", image="local", training=_training(), gates=gates)
        out = _godrun("run", str(second), "--workdir", str(work), "--quiet", cwd=work)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "'first'" in out.stderr and "checkpointDir" in out.stderr
        assert (work / "status.json").read_bytes() == shipped
        shutil.rmtree(work / ".godrun" / "second", ignore_errors=True)


def test_editing_the_recipe_of_a_finished_run_is_refused(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    path = write_godrun(work, "edit", image="local", training=_training(), gates=LENIENT_GATES)
    assert run_main([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 0
    before = (work / "status.json").read_bytes()
    for field, change in (("training", {"epochs": 2}), ("gates", {"psnrMeanMin": 50.0})):
        body = yaml.safe_load(path.read_text())
        body["spec"][field] |= change
        edited = tmp_path / f"edited-{field}.yaml"
        edited.write_text(yaml.safe_dump(body))
        out = _godrun("run", str(edited), "--workdir", str(work), "--quiet", cwd=work)
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"spec.{field}" in out.stderr and "immutable" in out.stderr
        assert (work / "status.json").read_bytes() == before
    # resources.queueName is the one editable part of the fixed fields (as on the API server); the run stays final
    body = yaml.safe_load(path.read_text())
    body["spec"].setdefault("resources", {})["queueName"] = "another-queue"
    path.write_text(yaml.safe_dump(body))
    out = _godrun("run", str(path), "--workdir", str(work), "--quiet", cwd=work)
    assert out.returncode == 0, out.stdout + out.stderr
    old, new = json.loads(before), json.loads((work / "status.json").read_bytes())
    assert (new["phase"], new["panel"], new["lineage"]) == (old["phase"], old["panel"], old["lineage"])


# --------------------------------------------------------------------------- the panel pins grid and metadata


def _other_grid(work: Path, how: str) -> None:
    grid_path = work / layout.WAVELENGTH_GRID
    wl = np.load(grid_path)
    if how == "one-point-in-roi":  # the attack: the ROI 320-500 nm holds one grid point
        lo, hi = np.linspace(200, 319, 300), np.linspace(501, 800, 300)
        new = np.concatenate([lo, [400.0], hi]).astype(wl.dtype)
    elif how == "shifted":
        new = wl + 0.5
    else:  # same values as float64: other bytes, same grid (still not the pinned file)
        new = wl.astype(np.float64) if wl.dtype != np.float64 else wl.astype(np.float32)
    np.save(grid_path, new)


@pytest.mark.parametrize("how", ["one-point-in-roi", "shifted", "re-encoded"])
def test_a_replaced_wavelength_grid_is_refused(small_corpus: Path, tmp_path: Path, how: str) -> None:
    work = _copy(small_corpus, tmp_path)
    pinned = sha256_file(work / layout.PANEL_MANIFEST)
    _other_grid(work, how)
    out = _evaluate(work, "--expected-hash", pinned)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "wavelength grid" in out.stderr and "grid_sha256" in out.stderr
    assert not (work / "verdict.json").exists()


@pytest.mark.parametrize("how", ["value", "new-column-value", "row-dropped"])
def test_changed_dose_features_of_a_panel_group_are_refused(small_corpus: Path, tmp_path: Path, how: str) -> None:
    work = _copy(small_corpus, tmp_path)
    path = work / layout.DOSE_FEATURES
    df = pd.read_csv(path, dtype=str)
    group = pd.read_csv(work / layout.PANEL_MANIFEST, dtype=str)["group_id"].iloc[0]
    row = df.index[df["group_id"] == group][0]
    feature = next(c for c in df.columns if c != "group_id")
    if how == "value":
        df.loc[row, feature] = str(float(df.loc[row, feature]) * 2 + 1)
    elif how == "new-column-value":
        df["extra"] = "0"
        df.loc[row, "extra"] = "1"
    else:
        df = df.drop(index=row)
    df.to_csv(path, index=False)
    out = _evaluate(work)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "dose" in out.stderr and repr(group) in out.stderr


def test_a_panel_that_pins_nothing_is_refused_and_lineage_names_the_pins(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    ok = _evaluate(work)
    assert ok.returncode == 0, ok.stderr
    lineage = json.loads((work / "verdict.json").read_text())["lineage"]
    assert lineage["wavelengthGridSha256"] == sha256_file(work / layout.WAVELENGTH_GRID)
    assert lineage["metadataSha256"] == sha256_file(work / layout.DOSE_FEATURES)
    hashes = json.loads((work / "out" / "hashes.json").read_text())
    assert hashes["wavelength_grid"]["sha256"] == lineage["wavelengthGridSha256"]
    for column in ("grid_sha256", "dose_sha256"):
        panel = pd.read_csv(small_corpus / layout.PANEL_MANIFEST, dtype=str).drop(columns=[column])
        panel.to_csv(work / layout.PANEL_MANIFEST, index=False)
        out = _evaluate(work)
        assert out.returncode == 2 and column in out.stderr, out.stderr
    panel = pd.read_csv(small_corpus / layout.PANEL_MANIFEST, dtype=str)
    panel.loc[1, "grid_sha256"] = "0" * 64  # rows that disagree on the one grid
    panel.to_csv(work / layout.PANEL_MANIFEST, index=False)
    out = _evaluate(work)
    assert out.returncode == 2 and "row 2" in out.stderr and "grid_sha256" in out.stderr


# --------------------------------------------------------------------------- leakage by value


def _reencode(vec: np.ndarray, how: str) -> np.ndarray:
    if how == "float64":
        return vec.astype(np.float64)
    if how == "big-endian":
        return vec.astype(">f4")
    if how == "float16":
        return vec.astype(np.float16)
    return vec.astype(np.float64) * (1 + 1e-7)  # "nudged": not the same bytes in any encoding


def _leak_by_value(work: Path, how: str, kind: str) -> None:
    """Panel spectra (or references) re-saved under new ids and new files in a training group."""
    root = work / layout.SPECTRA_DIR
    train = pd.read_csv(work / layout.MANIFEST_TRAIN, dtype=str)
    panel = pd.read_csv(work / layout.PANEL_MANIFEST, dtype=str)
    rows = train.head(3).copy()
    for i, (src, ref) in enumerate(zip(panel["path"].head(3), panel["reference_path"].head(3), strict=True)):
        sources = {"path": src if kind == "spectra" else rows["path"].iloc[i], "reference_path": ref}
        if kind == "spectra":
            sources["reference_path"] = rows["reference_path"].iloc[i]
        for col, hcol in (("path", "content_sha256"), ("reference_path", "reference_sha256")):
            rel = f"leak/{how}_{kind}_{i}_{col}.npy"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(root / rel, _reencode(np.load(root / sources[col]), how))
            rows.iloc[i, rows.columns.get_loc(col)] = rel
            rows.iloc[i, rows.columns.get_loc(hcol)] = sha256_file(root / rel)
        rows.iloc[i, rows.columns.get_loc("spectrum_id")] = f"fresh_{i}"
        if "pair_id" in rows.columns:
            rows.iloc[i, rows.columns.get_loc("pair_id")] = f"fresh_pair_{i}"
    pd.concat([train, rows]).to_csv(work / layout.MANIFEST_TRAIN, index=False)


@pytest.mark.parametrize("how", ["float64", "big-endian", "float16", "nudged"])
@pytest.mark.parametrize("kind", ["spectra", "references"])
def test_data_check_sees_panel_values_under_new_bytes(small_corpus: Path, tmp_path: Path, how: str, kind: str) -> None:
    work = _copy(small_corpus, tmp_path)
    assert _godrun("data", "check", "--root", ".", cwd=work).returncode == 0  # honest corpus: no leakage
    _leak_by_value(work, how, kind)
    out = _godrun("data", "check", "--root", ".", cwd=work)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no leakage" not in out.stdout and "panel" in out.stderr and "fresh_" in out.stderr


def test_the_trainer_refuses_panel_values_under_new_ids(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    _leak_by_value(work, "float64", "spectra")
    path = write_godrun(work, "leaky", image="local", training=_training(), gates=LENIENT_GATES)
    code = run_main([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"])
    assert code == 2
    status = GodRunStatus.model_validate_json((work / "status.json").read_text())
    assert status.phase == "Error" and "leak" in status.message
    assert not any((work / "checkpoints").rglob("*.pt"))


# --------------------------------------------------------------------------- progress only from this run


def test_a_stale_metrics_csv_never_reaches_the_status(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    logs = work / "logs/god_run"
    logs.mkdir(parents=True)
    header = "epoch,best_epoch,panel_psnr_mean,panel_sam_mean,seconds\n"
    (logs / "metrics.csv").write_text(header + "".join(f"{e},{e},40,1,1\n" for e in range(1, 401)))
    (work / layout.MANIFEST_TRAIN).write_text("not,a\nmanifest,\n")  # the trainer fails on its input
    path = write_godrun(work, "stale", image="local", training=_training(), gates=LENIENT_GATES)
    seen: list[GodRunStatus] = []
    import godrun.local.executor as executor_mod

    real = executor_mod.LocalExecutor.write_status

    def spy(self, run, status):  # every status the runner writes, in order
        seen.append(status.model_copy(deep=True))
        real(self, run, status)

    executor_mod.LocalExecutor.write_status = spy  # type: ignore[method-assign]
    try:
        code = run_main([str(path), "--workdir", str(work), "--poll", "0.1", "--quiet"])
    finally:
        executor_mod.LocalExecutor.write_status = real  # type: ignore[method-assign]
    assert code == 2
    assert seen and all(s.progress.epoch == 0 for s in seen)
    for s in seen:
        verified = next((c for c in s.conditions if c.type == "DataVerified"), None)
        assert verified is None or verified.status != "True"


# --------------------------------------------------------------------------- Act B resumes like its parent


def test_a_rerun_resumes_the_act_b_child_the_parent_created(small_corpus: Path, tmp_path: Path) -> None:
    """The child's manifest exists and the parent ended Failed-ActB: running the same command again runs (or
    resumes) the child instead of returning 3 at once with the child left where it stopped."""
    work = _copy(small_corpus, tmp_path)
    strict = LENIENT_GATES | {"psnrMeanMin": 99.0}
    fallback = {"launchActB": True, "actB": {"epochs": 1}}
    path = write_godrun(work, "parent", image="local", training=_training(), gates=strict, fallback=fallback)
    argv = [str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]
    assert run_main([*argv, "--no-act-b"]) == 3  # the child is created, not run (as after a SIGTERM)
    child_status = work / "status-parent-actb.json"
    assert (work / "parent-actb.yaml").is_file() and not child_status.exists()
    assert run_main(argv) == 3
    child = GodRunStatus.model_validate_json(child_status.read_text())
    assert child.phase in ("Failed-ActB", "Shipped") and child.progress.epoch == 1
    assert any((work / "checkpoints/god_run_actb").glob("*.pt"))
