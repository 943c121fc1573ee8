"""Confinement is checked at use, not once: every open below the run volume walks the path with O_NOFOLLOW
(godrun.fsio), so a symlink planted before the run, or swapped in after its start-up check, is refused and
nothing outside the volume is read or written. Plus the inputs that used to end in a traceback or a hang."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from run_support import LENIENT_GATES, write_godrun

from godrun import fsio
from godrun.cli import main as godrun_main
from godrun.data import layout
from godrun.errors import InputError
from godrun.fsio import sha256_file
from godrun.spec import Recipe
from godrun.trainer.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"GODRUN_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(argv: list[str]) -> int:
    """`godrun run ...` in this process, exit code as the command line gives it."""
    return godrun_main(["run", *argv])


def _copy(small_corpus: Path, tmp_path: Path) -> Path:
    work = tmp_path / "vol"
    shutil.copytree(small_corpus / "data", work / "data")
    return work


def snapshot(folder: Path) -> dict[str, str]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()]
    return {str(p.relative_to(folder)): sha256_file(p) for p in files}


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim.txt").write_text("precious\n")
    return out


def _training(epochs: int = 1) -> dict[str, Any]:
    training = Recipe.model_validate(Recipe().model_dump() | PRESETS["tiny"]).model_dump(mode="json")
    return training | {"init_checkpoint": None, "epochs": epochs}


# --------------------------------------------------------------------------- the primitives


@pytest.mark.parametrize("op", ["atomic-write", "append", "read", "make-dirs", "sha256"])
@pytest.mark.parametrize("where", ["folder", "deep-folder", "file"])
def test_no_open_below_the_root_follows_a_symlink(tmp_path: Path, op: str, where: str) -> None:
    root, outside = tmp_path / "root", _outside(tmp_path)
    (root / "a").mkdir(parents=True)
    if where == "folder":
        (root / "a" / "ln").symlink_to(outside)
        target = root / "a" / "ln" / "victim.txt"
    elif where == "deep-folder":
        (root / "a" / "ln").symlink_to(outside)
        target = root / "a" / "ln" / "sub" / "x.txt"
    else:
        (root / "a" / "victim.txt").symlink_to(outside / "victim.txt")
        target = root / "a" / "victim.txt"
    before = snapshot(outside)
    calls = {
        "atomic-write": lambda: fsio.atomic_write_text(target, "forged"),
        "append": lambda: fsio.append_text(target, "forged"),
        "read": lambda: fsio.read_bytes(target),
        "make-dirs": lambda: fsio.make_dirs(target),
        "sha256": lambda: fsio.sha256_file(target),
    }
    if where == "file" and op == "atomic-write":  # a rename replaces the link itself, never its target
        with fsio.confined_to(root):
            calls[op]()
        assert not target.is_symlink() and target.read_text() == "forged"
    else:
        with fsio.confined_to(root), pytest.raises(InputError, match="symlink"):
            calls[op]()
    assert snapshot(outside) == before and sorted(p.name for p in outside.iterdir()) == ["victim.txt"]


def test_a_folder_swapped_after_the_walk_cannot_redirect_the_write(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", _outside(tmp_path)
    (root / "out").mkdir(parents=True)
    with fsio.confined_to(root), fsio.atomic_path(root / "out" / "f.txt") as tmp:
        (root / "out").rename(root / "moved")
        (root / "out").symlink_to(outside)  # the swap, between the walk and the write
        tmp.write_text("data")
    assert (root / "moved" / "f.txt").read_text() == "data"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]


# --------------------------------------------------------------------------- the local runner's own files


@pytest.mark.parametrize("planted", [".godrun", ".godrun/runner.lock", ".godrun/NAME", ".godrun/NAME/jobs", "logs"])
def test_runner_files_never_follow_a_planted_symlink(small_corpus: Path, tmp_path: Path, planted: str) -> None:
    work, outside = _copy(small_corpus, tmp_path), _outside(tmp_path)
    name = "plant"
    rel = planted.replace("NAME", name)
    (work / rel).parent.mkdir(parents=True, exist_ok=True)
    (work / rel).symlink_to(outside / "victim.txt" if rel.endswith(".lock") else outside)
    path = write_godrun(work, name, image="local", training=_training(), gates=LENIENT_GATES)
    before = snapshot(outside)
    code = _run([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"])
    assert code in (1, 2)
    assert snapshot(outside) == before and sorted(p.name for p in outside.iterdir()) == ["victim.txt"]


def test_a_status_file_symlink_is_replaced_never_written_through(small_corpus: Path, tmp_path: Path) -> None:
    work, outside = _copy(small_corpus, tmp_path), _outside(tmp_path)
    (work / "status.json").symlink_to(outside / "victim.txt")
    path = write_godrun(work, "st", image="local", training=_training(), gates=LENIENT_GATES)
    assert _run([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 0
    assert (outside / "victim.txt").read_text() == "precious\n"
    assert not (work / "status.json").is_symlink()


# --------------------------------------------------------------------------- swapped after the start-up check

SWAP_AFTER_PARSE = """
import os, sys
from pathlib import Path
from godrun.evaluator import cli
real = cli._parse
def parse(argv):
    args = real(argv)  # the start-up check passed; now the attacker swaps {what}
    victim, outside = Path({victim!r}), Path({outside!r})
    if victim.exists() or victim.is_symlink():
        os.rename(victim, str(victim) + ".orig")
    victim.symlink_to(outside)
    return args
cli._parse = parse
from godrun.errors import run_main
sys.exit(run_main(cli.main, sys.argv[1:]))
"""


@pytest.mark.parametrize("what", ["output-dir", "archive-dir", "spectra-group", "checkpoint-file"])
def test_paths_swapped_after_the_start_up_check_are_refused(small_corpus: Path, tmp_path: Path, what: str) -> None:
    work, outside = _copy(small_corpus, tmp_path), _outside(tmp_path)
    argv = ["--denoiser", "identity", "--output-dir", "out", "--termination-log", "verdict.json"]
    if what == "output-dir":
        victim = work / "out"
        victim.mkdir()
    elif what == "archive-dir":
        victim = work / "artifacts"
        victim.mkdir()
        argv += ["--archive-on-fail", "--run-name", "x"]  # the raw spectra fail: the archive is written
    elif what == "spectra-group":
        rel = pd.read_csv(work / layout.PANEL_MANIFEST)["path"].iloc[0]
        victim = (work / layout.SPECTRA_DIR / rel).parent
        shutil.copytree(victim, outside / "group")  # same files outside: only the folder differs
        outside = outside / "group"
    else:
        ckpts = work / "checkpoints" / "c"
        ckpts.mkdir(parents=True)
        np.save(outside / "evil.npy", np.zeros(3))
        victim = ckpts / "best.pt"
        argv = ["--checkpoint-dir", "checkpoints/c", "--output-dir", "out", "--termination-log", "verdict.json"]
        shutil.copy(outside / "evil.npy", outside / "evil.pt")
        outside = outside / "evil.pt"
    before = snapshot(outside if outside.is_dir() else outside.parent)
    script = SWAP_AFTER_PARSE.format(what=what, victim=str(victim), outside=str(outside))
    env = ENV | {fsio.RUN_VOLUME_ENV: str(work)}
    out = subprocess.run(
        [sys.executable, "-c", script, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "symlink" in out.stderr and "Traceback" not in out.stderr
    assert snapshot(outside if outside.is_dir() else outside.parent) == before
    assert not (work / "verdict.json").exists()


# --------------------------------------------------------------------------- hangs and tracebacks


def _evaluate(work: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = ["evaluate", "--denoiser", "identity", "--output-dir", "out", "--termination-log", "verdict.json"]
    return subprocess.run(
        [sys.executable, "-m", "godrun", *argv, *extra],
        cwd=work,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("which", [layout.WAVELENGTH_GRID, layout.DOSE_FEATURES, layout.PANEL_MANIFEST])
def test_a_fifo_input_is_refused_not_waited_on(small_corpus: Path, tmp_path: Path, which: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    (work / which).unlink()
    os.mkfifo(work / which)
    out = _evaluate(work, timeout=60)  # blocked forever before
    assert out.returncode == 2, out.stdout + out.stderr
    assert which.name in out.stderr and "Traceback" not in out.stderr


def _huge_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(np.zeros(601, np.float32))
    header["shape"] = shape
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + np.zeros(601, np.float32).tobytes()


@pytest.mark.parametrize("which", ["spectrum", "grid"])
@pytest.mark.parametrize("shape", [(601, 2**40), (2**62,), (601, 601, 601, 601)])
def test_an_npy_header_claiming_a_huge_shape_is_bad_input(
    small_corpus: Path, tmp_path: Path, which: str, shape: tuple[int, ...]
) -> None:
    work = _copy(small_corpus, tmp_path)
    data = _huge_header(shape)
    meta = pd.read_csv(work / layout.PANEL_MANIFEST, dtype=str)
    if which == "grid":  # the panel re-pinned to it: the header itself must be refused
        (work / layout.WAVELENGTH_GRID).write_bytes(data)
        meta["grid_sha256"] = fsio.sha256_bytes(data)
    else:
        (work / layout.SPECTRA_DIR / meta["path"].iloc[0]).write_bytes(data)
        meta.loc[0, "content_sha256"] = fsio.sha256_bytes(data)
    meta.to_csv(work / layout.PANEL_MANIFEST, index=False)
    out = _evaluate(work)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "header claims shape" in out.stderr and "MemoryError" not in out.stderr


def test_a_nul_byte_in_a_manifest_path_is_bad_input(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    meta = pd.read_csv(work / layout.PANEL_MANIFEST, dtype=str)
    meta.loc[2, "path"] = meta.loc[2, "path"] + "\x00.npy"
    meta.to_csv(work / layout.PANEL_MANIFEST, index=False)
    out = _evaluate(work)
    assert out.returncode == 2 and "row 3" in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize(
    "case",
    ["lock-fifo", "lock-folder", "workdir-file", "status-folder", "poll-inf", "poll-huge", "poll-nan", "suspend"],
)
def test_runner_bad_input_is_exit_2_with_a_message(small_corpus: Path, tmp_path: Path, case: str) -> None:
    work = tmp_path / "w"
    work.mkdir()
    path = write_godrun(tmp_path, "r", image="local", training=_training(), gates=LENIENT_GATES)
    argv = [str(path), "--workdir", str(work), "--quiet"]
    if case in ("lock-fifo", "lock-folder"):
        (work / ".godrun").mkdir()
        lock = work / ".godrun" / "runner.lock"
        os.mkfifo(lock) if case == "lock-fifo" else lock.mkdir()
    elif case == "workdir-file":
        argv[2] = str(tmp_path / "afile")
        (tmp_path / "afile").write_text("x")
    elif case == "status-folder":
        (tmp_path / "st").mkdir()
        argv += ["--status", str(tmp_path / "st")]
    elif case.startswith("poll"):
        argv += ["--poll", {"poll-inf": "inf", "poll-huge": "1e300", "poll-nan": "nan"}[case]]
    else:
        path = write_godrun(tmp_path, "r", image="local", training=_training(), gates=LENIENT_GATES, suspend=True)
    result: dict[str, Any] = {}

    def go() -> None:
        out = subprocess.run(
            [sys.executable, "-m", "godrun", "run", *argv], env=ENV, capture_output=True, text=True, timeout=120
        )
        result["out"] = out

    t = threading.Thread(target=go)
    t.start()
    t.join(150)
    out = result["out"]
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error:") and "Traceback" not in out.stderr


def test_spreadsheet_formulas_in_ids_are_defused(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    meta = pd.read_csv(work / layout.PANEL_MANIFEST, dtype=str)
    leads = ["=1+1", "+cmd", "-2+3", "@SUM(A1)"]
    meta.loc[: len(leads) - 1, "spectrum_id"] = leads
    meta.to_csv(work / layout.PANEL_MANIFEST, index=False)
    assert _evaluate(work).returncode == 0
    cells = pd.read_csv(work / "out" / "per_spectrum_metrics.csv", dtype=str)["spectrum_id"].tolist()
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    assert [c for c in cells if c.startswith("'")] == ["'" + lead for lead in leads]


def test_evaluator_outputs_are_all_or_nothing_when_the_disk_fills(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    assert _evaluate(work).returncode == 0
    before = snapshot(work / "out")
    script = (
        "import errno, sys\n"
        "from godrun.evaluator import outputs\n"
        "real = outputs._to_csv\n"
        "n = [0]\n"
        "def full(path, df):\n"
        "    n[0] += 1\n"
        "    if n[0] == 2: raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "    real(path, df)\n"
        "outputs._to_csv = full\n"
        "from godrun.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["evaluate", "--denoiser", "wavelet", "--output-dir", "out", "--termination-log", "verdict2.json"]
    out = subprocess.run([sys.executable, "-c", script, *argv], cwd=work, env=ENV, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "No space left" in out.stderr or "space" in out.stderr
    assert snapshot(work / "out") == before  # nothing renamed: no mix of new and old outputs
    assert not [p for p in (work / "out").iterdir() if fsio.is_temp_name(p.name)]


def test_an_archive_dir_that_is_a_file_is_refused_before_any_output(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    (work / "artifacts").write_text("not a folder")
    out = _evaluate(work, "--archive-on-fail", "--run-name", "x")
    assert out.returncode == 2 and "--archive-dir" in out.stderr, out.stderr
    assert not (work / "out").exists() and not (work / "verdict.json").exists()


def test_a_nan_prediction_fails_every_gate_even_when_lenient() -> None:
    from godrun.gates.metrics import evaluate_gates, panel_metrics
    from godrun.spec import Gates

    rng = np.random.default_rng(0)
    wl = np.linspace(200, 800, 601)
    ref = 1 + 0.1 * rng.standard_normal((6, 601))
    pred = ref.copy()
    pred[2, 100] = np.nan
    lenient = Gates.model_validate(LENIENT_GATES)
    verdict = evaluate_gates(panel_metrics(pred, ref, ref, wl, lenient), lenient)
    assert verdict.verdict == "fail" and sorted(verdict.failed_gates) == ["aggregate", "downstream", "roi", "tail"]


def test_names_the_api_server_refuses_are_refused_locally(tmp_path: Path) -> None:
    for name in ("x.-y", "a..b", "a-.b", "a.-b"):
        path = write_godrun(tmp_path, "ok", image="local")
        path.write_text(path.read_text().replace("name: ok", f"name: {name}"))
        out = subprocess.run(
            [sys.executable, "-m", "godrun", "run", str(path), "--workdir", str(tmp_path / "w")],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and "metadata.name" in out.stderr, (name, out.stderr)


def test_a_killed_synth_leaves_nothing_the_next_one_keeps(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".synth-{dead.pid}-abc123").mkdir()
    (out / f".synth-{dead.pid}-abc123" / "half.npy").write_bytes(b"x")
    (out / f".data-old-{dead.pid}").mkdir()
    code = subprocess.run(
        [sys.executable, "-m", "godrun", "data", "synth", "--out", str(out), "--scale", "0.02"],
        env=ENV,
        capture_output=True,
        timeout=120,
    ).returncode
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["data"]


def test_checkpoint_dir_symlinked_to_the_volume_is_refused(small_corpus: Path, tmp_path: Path) -> None:
    work = _copy(small_corpus, tmp_path)
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "god_run").symlink_to(work)
    path = write_godrun(work, "loop", image="local", training=_training(), gates=LENIENT_GATES)
    assert _run([str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 2
    status = json.loads((work / "status.json").read_text())
    assert status["phase"] == "Error" and "checkpoint_dir" in status["message"]
    assert not (work / "artifacts").exists()


def test_a_full_disk_while_saving_a_checkpoint_leaves_the_old_one_and_names_it(tmp_path: Path) -> None:
    import errno

    import torch

    from godrun.contract.checkpoint import Checkpoint, CheckpointMeta
    from godrun.errors import run_main
    from godrun.model.checkpoint import save_checkpoint

    dest = tmp_path / "ckpts" / "best.pt"
    save_checkpoint(dest, Checkpoint(model={"w": torch.zeros(2)}, meta=CheckpointMeta(config={}, epoch=1)))
    before = dest.read_bytes()
    real = torch.save

    def full(obj: object, f: object) -> None:
        real(obj, f)
        raise OSError(errno.ENOSPC, "No space left on device")

    def save() -> int:
        torch.save = full  # type: ignore[assignment]
        try:
            save_checkpoint(dest, Checkpoint(model={"w": torch.ones(2)}, meta=CheckpointMeta(config={}, epoch=2)))
        finally:
            torch.save = real  # type: ignore[assignment]
        return 0

    assert run_main(lambda _argv: save()) == 2
    assert dest.read_bytes() == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["best.pt", "checkpoints_written.json"]
