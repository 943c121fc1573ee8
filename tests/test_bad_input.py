"""Bad input exits 2 with a message naming the file (or flag), never a traceback, and writes nothing.

One table: every kind of malformed user input (manifests, CSVs, arrays, checkpoints, flags, names), each fed
to the command that reads it, in-process (`godrun.cli.main`) inside a copy of the small corpus. For each:
exit code 2, the file (or flag/field) named on stderr, no traceback, and the workspace unchanged (sha256 of
every file before and after; the loader's content-addressed `.cache` folders aside).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from godrun.cli import main as godrun_main
from godrun.contract.flags import recipe_to_argv
from godrun.spec import MAX_PARENT_NAME, MAX_RUN_NAME, Recipe
from godrun.trainer.presets import PRESETS

SPECTRA = "data/spectra_for_fold"
TRAIN_CSV = f"{SPECTRA}/manifest_train.csv"
PANEL_CSV = "data/validation_panel.csv"
GRID = f"{SPECTRA}/wavelength_grid.npy"
LAMBDA = f"{SPECTRA}/lambda_stats.npz"
DOSE = "data/metadata/dose_features.csv"
WEIGHTS = "data/metadata/dose_sampling_weights.csv"
STATS = "data/metadata/dose_stats.json"
INIT = "init/warm.pt"


def _train_argv(**override: object) -> list[str]:
    body = Recipe().model_dump() | PRESETS["tiny"] | {"epochs": 1, "init_checkpoint": None} | override
    return ["train", *recipe_to_argv(Recipe.model_validate(body))]


TRAIN = _train_argv()
TRAIN_INIT = _train_argv(init_checkpoint=INIT)
EVALUATE = ["evaluate", "--denoiser", "savgol"]
EVALUATE_CKPT = ["evaluate", "--checkpoint-dir", "init"]


def _godrun_yaml(name: str = "bad", act_b: bool = False) -> str:
    spec = {"image": "x", "fallback": {"launchActB": act_b}}
    return yaml.safe_dump(
        {"apiVersion": "godrun.io/v1alpha1", "kind": "GodRun", "metadata": {"name": name}, "spec": spec}
    )


# ----------------------------------------------------------------------------- ways to break a file


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return go


def _random_bytes(rel: str, n: int = 4096) -> Callable[[Path], None]:
    return _write(rel, random.Random(rel).randbytes(n))


def _folder(rel: str) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        path = ws / rel
        if path.exists():
            path.unlink()
        path.mkdir(parents=True)

    return go


def _header_only(rel: str) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        path = ws / rel
        path.write_text(path.read_text().splitlines()[0] + "\n")

    return go


def _not_utf8(rel: str) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        path = ws / rel
        lines = path.read_bytes().split(b"\n")
        lines[1] = lines[1] + b"\xe9\xff"  # a latin-1 byte in the first data row
        path.write_bytes(b"\n".join(lines))

    return go


def _cell(rel: str, column: str, value: str) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        path = ws / rel
        df = pd.read_csv(path, dtype=str)
        df.loc[0, column] = value
        df.to_csv(path, index=False)

    return go


def _npy(rel: str, arr: np.ndarray) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        np.save(ws / rel, arr)
        if not rel.endswith(".npy"):
            os.replace(ws / f"{rel}.npy", ws / rel)

    return go


def _npz(rel: str, **arrays: np.ndarray) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        with open(ws / rel, "wb") as fh:
            np.savez(fh, **arrays)

    return go


def _first_spectrum(arr: np.ndarray) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        rel = pd.read_csv(ws / TRAIN_CSV)["path"].iloc[0]
        with open(ws / SPECTRA / rel, "wb") as fh:
            np.save(fh, arr)

    return go


def _torch(rel: str, obj: object, truncate: bool = False) -> Callable[[Path], None]:
    def go(ws: Path) -> None:
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)
        if truncate:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])

    return go


def _deep_yaml(depth: int) -> str:
    return "apiVersion: godrun.io/v1alpha1\nspec: " + "[" * depth + "]" * depth + "\n"


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    kind: str
    id: str
    breaks: Callable[[Path], None] | None
    argv: list[str]
    expect: str  # what stderr must name: the file, the flag or the field
    extra: list[Callable[[Path], None]] = field(default_factory=list)


BAD = "bad.yaml"
RUN = ["run", BAD, "--workdir", "w"]
CHECK = ["data", "check", "--root", "."]
PANEL = ["data", "panel", "--root", "."]
SYNTH = ["data", "synth", "--out", "out.txt", "--scale", "0.01"]
ALL_CSV = f"{SPECTRA}/manifest_all.csv"
STRINGS = np.array(["x"] * 601)
WARM = {"model": {"w": torch.zeros(64)}}


def _tiny_checkpoint(**weights_of: object) -> dict[str, object]:
    """A checkpoint of the tiny preset as the trainer writes it; `weights_of`: the recipe the weights come from."""
    from godrun.contract.checkpoint import Checkpoint, CheckpointMeta, to_payload
    from godrun.model.inference import build_model
    from godrun.model.normalise import norm_meta
    from godrun.trainer.presets import preset_recipe

    recipe = preset_recipe("tiny", init_checkpoint=None, geometry_film=False)
    state = build_model(preset_recipe("tiny", init_checkpoint=None, geometry_film=False, **weights_of)).state_dict()
    meta = CheckpointMeta(config=recipe.model_dump(), epoch=1, norm=norm_meta())
    return to_payload(Checkpoint(model=state, meta=meta))


LATIN1 = "kind: GodRun\nmetadata: {name: caf\xe9}\n".encode("latin-1")
PORT = "--metrics-port"

CASES = [
    # --- the GodRun manifest (`godrun run`)
    Case("manifest", "yaml-nested-20000-deep", _write("bad.yaml", _deep_yaml(20_000)), RUN, "bad.yaml"),
    Case("manifest", "random-bytes", _random_bytes("bad.yaml"), RUN, "bad.yaml"),
    Case("manifest", "a-folder", _folder("bad.yaml"), RUN, "bad.yaml"),
    Case("manifest", "not-utf8", _write(BAD, LATIN1), RUN, BAD),
    Case("manifest", "yaml-syntax", _write("bad.yaml", "apiVersion: [\n"), RUN, "bad.yaml"),
    Case("manifest", "a-list", _write("bad.yaml", "- 1\n- 2\n"), RUN, "bad.yaml"),
    Case("manifest", "a-string", _write("bad.yaml", "just text\n"), RUN, "bad.yaml"),
    Case("manifest", "empty", _write("bad.yaml", ""), RUN, "bad.yaml"),
    Case("manifest", "missing", None, ["run", "nope.yaml", "--workdir", "w"], "nope.yaml"),
    # --- names that cannot fit the names derived from them
    Case("name", "name-239-chars", _write("bad.yaml", _godrun_yaml("a" * (MAX_RUN_NAME + 1))), RUN, "metadata.name"),
    Case("name", "name-253-chars", _write(BAD, _godrun_yaml("a" * 253)), RUN, "metadata.name"),
    Case("name", "no-room-for-act-b", _write(BAD, _godrun_yaml("a" * (MAX_PARENT_NAME + 1), True)), RUN, "launchActB"),
    # --- flags
    Case("flag", "run-metrics-port-70000", _write(BAD, _godrun_yaml()), [*RUN, PORT, "70000"], PORT),
    Case("flag", "run-metrics-port-text", _write(BAD, _godrun_yaml()), [*RUN, PORT, "http"], PORT),
    Case("flag", "train-metrics-port-70000", None, [*TRAIN, "--metrics_port", "70000"], "--metrics-port"),
    Case("flag", "synth-out-is-a-file", _write("out.txt", "x"), SYNTH, "out.txt"),
    # --- CSV tables
    Case("csv", "check-train-not-utf8", _not_utf8(TRAIN_CSV), CHECK, "manifest_train.csv"),
    Case("csv", "check-panel-header-only", _header_only(PANEL_CSV), CHECK, "validation_panel.csv"),
    Case("csv", "check-panel-a-folder", _folder("p.csv"), [*CHECK, "--panel", "p.csv"], "p.csv"),
    Case("csv", "panel-manifest-all-random", _random_bytes(ALL_CSV), PANEL, "manifest_all.csv"),
    Case("csv", "train-manifest-header-only", _header_only(TRAIN_CSV), TRAIN, "manifest_train.csv"),
    Case("csv", "train-manifest-random-bytes", _random_bytes(TRAIN_CSV), TRAIN, "manifest_train.csv"),
    Case("csv", "dose-features-not-utf8", _not_utf8(DOSE), TRAIN, "dose_features.csv"),
    Case("csv", "dose-features-not-a-number", _cell(DOSE, "UVA_total", "lots"), TRAIN, "dose_features.csv"),
    Case("csv", "sampling-weight-not-a-number", _cell(WEIGHTS, "weight", "heavy"), TRAIN, "dose_sampling_weights.csv"),
    Case("csv", "sampling-weights-not-utf8", _not_utf8(WEIGHTS), TRAIN, "dose_sampling_weights.csv"),
    Case("csv", "eval-panel-header-only", _header_only(PANEL_CSV), EVALUATE, "validation_panel.csv"),
    Case("csv", "eval-panel-not-utf8", _not_utf8(PANEL_CSV), EVALUATE, "validation_panel.csv"),
    # --- arrays (.npy / .npz)
    Case("array", "grid-random-bytes", _random_bytes(GRID), TRAIN, "wavelength_grid.npy"),
    Case("array", "grid-of-strings", _npy(GRID, STRINGS), TRAIN, "wavelength_grid.npy"),
    Case("array", "grid-wrong-shape", _npy(GRID, np.linspace(200, 800, 600)), TRAIN, "wavelength_grid.npy"),
    Case("array", "grid-a-folder", _folder(GRID), EVALUATE, "wavelength_grid.npy"),
    Case("array", "grid-an-npz-archive", _npz(GRID, grid=np.linspace(200, 800, 601)), TRAIN, "wavelength_grid.npy"),
    Case("array", "eval-grid-random-bytes", _random_bytes(GRID), EVALUATE, "wavelength_grid.npy"),
    Case("array", "lambda-random-bytes", _random_bytes(LAMBDA), TRAIN, "lambda_stats.npz"),
    Case("array", "lambda-truncated-zip", _write(LAMBDA, b"PK\x03\x04" + b"\0" * 64), TRAIN, "lambda_stats.npz"),
    Case("array", "lambda-weights-strings", _npz(LAMBDA, weights=STRINGS), TRAIN, "lambda_stats.npz"),
    Case("array", "lambda-a-single-npy", _npy(LAMBDA, np.ones(601)), TRAIN, "lambda_stats.npz"),
    Case("array", "spectrum-of-strings", _first_spectrum(STRINGS), TRAIN, "manifest_train.csv"),
    Case("array", "spectrum-complex", _first_spectrum(np.ones(601, np.complex64)), TRAIN, "manifest_train.csv"),
    Case("array", "dose-stats-not-json", _random_bytes(STATS), TRAIN, "dose_stats.json"),
    Case("array", "dose-stats-a-list", _write(STATS, "[1, 2]"), TRAIN, "dose_stats.json"),
    # --- checkpoints
    Case("checkpoint", "init-truncated", _torch(INIT, WARM, truncate=True), TRAIN_INIT, INIT),
    Case("checkpoint", "init-random-bytes", _random_bytes(INIT), TRAIN_INIT, INIT),
    Case("checkpoint", "init-model-is-5", _torch(INIT, {"model": 5}), TRAIN_INIT, INIT),
    Case("checkpoint", "init-string-in-state-dict", _torch(INIT, {"model": {"w": "tensor"}}), TRAIN_INIT, INIT),
    Case("checkpoint", "init-ema-is-a-list", _torch(INIT, {"model": {}, "ema": [1, 2]}), TRAIN_INIT, INIT),
    Case("checkpoint", "init-a-list", _torch(INIT, [1, 2, 3]), TRAIN_INIT, INIT),
    Case("checkpoint", "init-a-folder", _folder(INIT), TRAIN_INIT, INIT),
    Case("checkpoint", "eval-truncated", _torch(INIT, WARM, truncate=True), EVALUATE_CKPT, INIT),
    Case("checkpoint", "eval-model-is-5", _torch(INIT, {"model": 5}), EVALUATE_CKPT, INIT),
    Case("checkpoint", "eval-wrong-shape", _torch(INIT, _tiny_checkpoint(d_model=24)), EVALUATE_CKPT, INIT),
    Case("checkpoint", "eval-unknown-key", _torch(INIT, {**WARM, "has_ema": True}), EVALUATE_CKPT, "'has_ema'"),
    Case("checkpoint", "init-epoch-a-word", _torch(INIT, {**WARM, "epoch": "three"}), TRAIN_INIT, "epoch"),
]  # fmt: skip


def _tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (and every folder, as 'dir'), the loader's .cache folders aside."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".cache"]
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@pytest.fixture
def workspace(small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(small_corpus / "data", ws / "data", ignore=shutil.ignore_patterns(".cache"))
    monkeypatch.chdir(ws)
    return ws


def _run(argv: list[str]) -> int:
    try:
        return godrun_main(argv)
    except SystemExit as exc:  # argparse refuses a flag with exit 2 and a usage line naming it
        return int(exc.code or 0)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}:{c.id}" for c in CASES])
def test_bad_input_exits_2_naming_the_file_and_writes_nothing(
    case: Case, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for step in [*case.extra, *([case.breaks] if case.breaks else [])]:
        step(workspace)
    before = _tree_hashes(workspace)
    code = _run(case.argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert case.expect in err, err
    assert "Traceback" not in err
    assert _tree_hashes(workspace) == before


def test_a_bug_while_loading_a_model_is_a_crash_not_bad_input(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the file decides bad input: an internal error while building the model from a good checkpoint
    propagates (exit 1, retried by the executor), never exit 2 (never retried, blamed on the user)."""
    from godrun.model.network import MambaTinyUV

    _torch(INIT, _tiny_checkpoint())(workspace)

    def broken(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("injected internal error")

    monkeypatch.setattr(MambaTinyUV, "__init__", broken)
    with pytest.raises(RuntimeError, match="injected internal error"):
        _run(EVALUATE_CKPT)


def test_the_table_covers_every_kind() -> None:
    kinds: dict[str, int] = {}
    for c in CASES:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    assert set(kinds) == {"manifest", "name", "flag", "csv", "array", "checkpoint"}
    assert len({(c.kind, c.id) for c in CASES}) == len(CASES)
    assert min(kinds.values()) >= 2 and len(CASES) >= 45


def test_report_draws_user_text_as_written(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A spectrum_id that is a broken mathtext expression (`$\\frac{$`) is text in the report, not a crash."""
    panel = pd.read_csv(workspace / PANEL_CSV, dtype=str)
    panel["spectrum_id"] = [f"$\\frac{{${i}" for i in range(len(panel))]  # every one: the worst are plotted
    panel.to_csv(workspace / PANEL_CSV, index=False)
    assert _run([*EVALUATE, "--output-dir", "out"]) == 0, capsys.readouterr().err
    for name in ("per_spectrum_metrics.csv", "per_group_summary.csv", "gates.json", "hashes.json", "report.html"):
        assert (workspace / "out" / name).is_file(), name
    assert "$\\frac{$0" in (workspace / "out/per_spectrum_metrics.csv").read_text()


def test_trainer_metrics_port_in_use_is_transient_before_writing(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port another process holds now is transient (issue 22): exit 1 (retried), naming it, no train.log."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        before = _tree_hashes(workspace)
        code = _run([*TRAIN, "--metrics_port", str(port)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"--metrics-port {port}" in err and "Traceback" not in err
    assert _tree_hashes(workspace) == before
