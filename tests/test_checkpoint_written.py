"""Only checkpoints the trainer wrote are ranked: a `*.pt` dropped into the checkpoint folder (while training
runs, after the trainer's start-up check) is ignored with a message; one of the trainer's own replaced after it
was written is refused; each checkpoint's hash is checked again when it is loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_evaluator_cli import SEED_QA, make_tiny_checkpoint, workspace  # noqa: F401 (fixture)

from godrun.cli import main as godrun_main
from godrun.errors import InputError
from godrun.fsio import sha256_file
from godrun.model.written import RECORD_NAME, read_record


def _evaluate(ws: Path, monkeypatch, *extra: str) -> int:
    monkeypatch.chdir(ws)
    monkeypatch.setenv("GODRUN_TERMINATION_LOG", str(ws / "term.json"))
    return godrun_main(["evaluate", *SEED_QA, *extra])


def _ranked(ws: Path) -> list[str]:
    gates = json.loads((ws / "final_analytics/panel_eval/gates.json").read_text())
    return [r["checkpoint"] for r in gates["ranking"]]


def test_the_trainers_saves_are_recorded_with_the_hash_before_last(tmp_path):
    path = tmp_path / "c" / "mamba_tiny_uv_best.pt"
    make_tiny_checkpoint(path, seed=0)
    first = sha256_file(path)
    make_tiny_checkpoint(path, seed=1)
    assert read_record(path.parent) == {path.name: [sha256_file(path), first]}


def test_a_pt_dropped_into_the_folder_is_ignored_and_never_the_verdict(workspace, monkeypatch, capsys):  # noqa: F811
    ckpts = workspace / "checkpoints/god_run"
    record = (ckpts / RECORD_NAME).read_bytes()
    make_tiny_checkpoint(ckpts / "aaa_dropped.pt", seed=3)  # a well-formed checkpoint of another "run"...
    (ckpts / RECORD_NAME).write_bytes(record)  # ...that this run's trainer never recorded
    assert _evaluate(workspace, monkeypatch) == 0
    assert "ignored checkpoints/god_run/aaa_dropped.pt: not a checkpoint the trainer wrote" in capsys.readouterr().err
    assert _ranked(workspace) == ["checkpoints/god_run/mamba_tiny_uv_best.pt"]
    hashes = json.loads((workspace / "final_analytics/panel_eval/hashes.json").read_text())
    assert set(hashes["checkpoints"]) == {"checkpoints/god_run/mamba_tiny_uv_best.pt"}


def test_a_recorded_checkpoint_replaced_after_training_is_refused(workspace, monkeypatch, capsys):  # noqa: F811
    ckpts = workspace / "checkpoints/god_run"
    record = (ckpts / RECORD_NAME).read_bytes()
    make_tiny_checkpoint(ckpts / "other.pt", seed=5)
    shutil.copy(ckpts / "other.pt", ckpts / "mamba_tiny_uv_best.pt")  # same name, other bytes
    (ckpts / "other.pt").unlink()
    (ckpts / RECORD_NAME).write_bytes(record)
    assert _evaluate(workspace, monkeypatch) == 2
    assert "not the one the trainer wrote" in capsys.readouterr().err
    assert not (workspace / "final_analytics").exists()


def test_a_runs_evaluator_refuses_a_folder_without_the_record(workspace, monkeypatch, capsys):  # noqa: F811
    (workspace / "checkpoints/god_run" / RECORD_NAME).unlink()
    assert _evaluate(workspace, monkeypatch, "--written-only") == 2
    assert f"no {RECORD_NAME}" in capsys.readouterr().err


def test_the_run_passes_written_only_to_its_evaluator():
    from godrun.core.commands import evaluator_argv
    from godrun.spec import GodRunSpec

    assert "--written-only" in evaluator_argv(GodRunSpec.model_validate({"image": "x"}), "r")


def test_a_checkpoint_swapped_between_hashing_and_loading_is_refused(tmp_path):
    from godrun.model.checkpoint import load_checkpoint

    path = make_tiny_checkpoint(tmp_path / "best.pt", seed=0)
    sha = sha256_file(path)
    make_tiny_checkpoint(path, seed=1)
    with pytest.raises(InputError, match="changed since it was hashed"):
        load_checkpoint(path, sha)


@pytest.mark.parametrize("text", ["[]", '{"files": {"a.pt": ["nothex"]}}', '{"files": {"a.pt": "x"}}', "{"])
def test_a_malformed_record_is_refused(tmp_path, text):
    (tmp_path / RECORD_NAME).write_text(text)
    with pytest.raises(InputError, match="checkpoint record"):
        read_record(tmp_path)


def test_a_fresh_training_forgets_what_an_earlier_one_recorded(tmp_path):
    from godrun.model.written import forget_written

    make_tiny_checkpoint(tmp_path / "old.pt")
    forget_written(tmp_path)
    assert read_record(tmp_path) == {}
    forget_written(tmp_path / "absent")  # no folder, no record: nothing made
    assert not (tmp_path / "absent").exists()


def test_a_resumed_training_without_a_record_records_its_own_best_and_last(tmp_path):
    from godrun.model.written import record_resumed

    best = make_tiny_checkpoint(tmp_path / "mamba_tiny_uv_best.pt")
    (tmp_path / RECORD_NAME).unlink()  # a folder from before checkpoints were recorded
    record_resumed(tmp_path, [best, tmp_path / "mamba_tiny_uv_last.pt"])
    assert read_record(tmp_path) == {best.name: [sha256_file(best)]}
    (tmp_path / RECORD_NAME).write_text("{")
    with pytest.raises(InputError, match="checkpoint record"):  # refused at the start, not after an epoch
        record_resumed(tmp_path, [best])
