"""Variants of the issue-22 attacks that the first fixes missed: hard links to outside files (a write in place
through one changes the outside file), checkpoints planted in the run's checkpoint folder (judged as the
run's own), and the other classes tried as hidden variants."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from run_support import LENIENT_GATES, write_godrun
from test_evaluator_cli import make_tiny_checkpoint

from godrun import fsio
from godrun.cli import main as godrun_main
from godrun.errors import InputError
from godrun.spec import Recipe
from godrun.trainer.presets import PRESETS


def _training(epochs: int = 1) -> dict[str, Any]:
    training = Recipe.model_validate(Recipe().model_dump() | PRESETS["tiny"]).model_dump(mode="json")
    return training | {"init_checkpoint": None, "epochs": epochs}


def _copy(small_corpus: Path, tmp_path: Path) -> Path:
    work = tmp_path / "vol"
    shutil.copytree(small_corpus / "data", work / "data")
    return work


def _victim(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    victim = out / "victim.txt"
    victim.write_text("precious\n")
    return victim


# --------------------------------------------------------------------------- hard links


@pytest.mark.parametrize("op", ["append", "truncate", "read-write"])
def test_a_hard_linked_file_is_never_written_in_place(tmp_path: Path, op: str) -> None:
    root, victim = tmp_path / "root", _victim(tmp_path)
    root.mkdir()
    link = root / "train.log"
    os.link(victim, link)
    calls = {
        "append": lambda: fsio.append_text(link, "forged"),
        "truncate": lambda: os.close(fsio.open_file(link, os.O_WRONLY | os.O_TRUNC)),
        "read-write": lambda: os.close(fsio.open_file(link, os.O_RDWR | os.O_CREAT)),
    }
    with fsio.confined_to(root), pytest.raises(InputError, match="hard link"):
        calls[op]()
    assert victim.read_text() == "precious\n"


def test_an_atomic_write_over_a_hard_link_replaces_the_name_not_the_content(tmp_path: Path) -> None:
    root, victim = tmp_path / "root", _victim(tmp_path)
    root.mkdir()
    os.link(victim, root / "status.json")
    with fsio.confined_to(root):
        fsio.atomic_write_text(root / "status.json", "{}")
    assert victim.read_text() == "precious\n" and (root / "status.json").read_text() == "{}"


def test_a_hard_linked_input_is_read_as_the_file_it_is(tmp_path: Path) -> None:
    """Reading through a hard link is reading a file of the volume: its bytes are what is hashed and parsed."""
    root, victim = tmp_path / "root", _victim(tmp_path)
    root.mkdir()
    os.link(victim, root / "in.txt")
    with fsio.confined_to(root):
        assert fsio.read_bytes(root / "in.txt") == b"precious\n"


@pytest.mark.parametrize("planted", [".godrun/runner.lock", ".godrun/NAME/events.log", "logs/god_run/train.log"])
def test_runner_and_trainer_never_append_through_a_hard_link(small_corpus: Path, tmp_path: Path, planted: str) -> None:
    work, victim = _copy(small_corpus, tmp_path), _victim(tmp_path)
    name = "hardlink"
    link = work / planted.replace("NAME", name)
    link.parent.mkdir(parents=True, exist_ok=True)
    os.link(victim, link)
    path = write_godrun(work, name, image="local", training=_training(), gates=LENIENT_GATES)
    assert godrun_main(["run", str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 2
    assert victim.read_text() == "precious\n"


# --------------------------------------------------------------------------- planted checkpoints


def test_a_checkpoint_planted_before_the_run_never_produces_its_verdict(small_corpus: Path, tmp_path: Path) -> None:
    """A *.pt in the checkpoint folder that this run's trainer did not write (copied from another run, any
    name) would be ranked with the run's own by the evaluator: the trainer refuses to start beside it."""
    work = _copy(small_corpus, tmp_path)
    folder = work / "checkpoints" / "god_run"
    folder.mkdir(parents=True)
    make_tiny_checkpoint(folder / "aaa_better.pt")
    path = write_godrun(work, "planted", image="local", training=_training(), gates=LENIENT_GATES)
    assert godrun_main(["run", str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"]) == 2
    status = (work / "status.json").read_text()
    assert "aaa_better.pt" in status and "Shipped" not in status
    assert not (work / "final_analytics").exists()


# --------------------------------------------------------------------------- .npy headers


def _npy(header: dict[str, Any], body: bytes) -> bytes:
    text = repr(header).encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


@pytest.mark.parametrize("shape", [(-1, -601), (2**64, 0), (-601, -1, 1)])
def test_an_npy_shape_with_negative_or_absurd_dimensions_is_bad_input(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """The product of the dimensions matches the bytes, the dimensions do not: exit 2, not a traceback."""
    from godrun.inputs import load_array

    count = abs(int(np.prod([float(n) for n in shape])))
    path = tmp_path / "grid.npy"
    path.write_bytes(_npy({"descr": "<f4", "fortran_order": False, "shape": shape}, b"\0" * 4 * count))
    with pytest.raises(InputError, match="claims shape"):
        load_array(path, "--wavelength-grid")


# --------------------------------------------------------------------------- numbers at their extremes


@pytest.mark.parametrize("seed", [2**45, 2**63, 2**64])
def test_a_seed_the_trainer_cannot_use_is_bad_input_before_anything_starts(tmp_path: Path, seed: int) -> None:
    """seed * 1_000_003 + epoch seeds torch (at most 2**64 - 1): a larger seed used to crash every attempt."""
    path = write_godrun(tmp_path, "seeded", image="local", training=_training() | {"seed": seed}, gates=LENIENT_GATES)
    assert godrun_main(["run", str(path), "--workdir", str(tmp_path), "--quiet"]) == 2
    assert not (tmp_path / ".godrun").exists()


def test_the_largest_seed_allowed_seeds_every_epoch() -> None:
    import torch

    from godrun.spec import MAX_SEED, Recipe

    recipe = Recipe.model_validate(Recipe().model_dump() | {"seed": MAX_SEED, "epochs": 10**9})
    torch.Generator().manual_seed(recipe.seed * 1_000_003 + recipe.epochs)


# --------------------------------------------------------------------------- the Act B child's name


@pytest.mark.parametrize("launch", [False, True])
def test_a_planted_act_b_manifest_is_never_run_as_the_child(small_corpus: Path, tmp_path: Path, launch: bool) -> None:
    """`<parent>-actb.yaml` that the parent did not write (another GodRun, lenient gates, its own folders) is
    not the parent's Act B child: never run under that title, never overwritten."""
    work = _copy(small_corpus, tmp_path)
    planted = write_godrun(
        work,
        "parent-actb",
        image="local",
        training=_training() | {"checkpoint_dir": "checkpoints/other", "log_dir": "logs/other"},
        gates=LENIENT_GATES,
        panel={"outputDir": "final_analytics/other"},
    )
    before = planted.read_bytes()
    strict = LENIENT_GATES | {"psnrMeanMin": 100.0}
    path = write_godrun(
        work, "parent", image="local", training=_training(), gates=strict, fallback={"launchActB": launch}
    )
    code = godrun_main(["run", str(path), "--workdir", str(work), "--poll", "0.2", "--quiet"])
    assert code == (2 if launch else 3)
    assert planted.read_bytes() == before
    assert not (work / "status-parent-actb.json").exists() and not (work / "checkpoints" / "other").exists()


# --------------------------------------------------------------------------- leakage on the values: the stated limits


def test_leakage_catches_re_encoded_and_slightly_noisy_panel_values_not_scaled_ones() -> None:
    """What the README states: re-encodings and 1e-4 relative noise are the same spectrum; a scaled, offset or
    reversed copy is not (a scaled spectrum is the same sample at another concentration)."""
    from godrun.data.overlap import near_duplicates

    rng = np.random.default_rng(1)
    x = np.linspace(0.0, 3.0, 601)
    panel = np.stack([np.exp(-((x - c) ** 2) / 0.1) + 0.1 * x + 0.05 for c in (1.0, 1.4, 2.0)]).astype(np.float32)
    p = panel[1].astype(np.float64)
    same = {
        "float16": p.astype(np.float16),
        "big-endian": p.astype(">f8"),
        "noise": p * (1 + 1e-4 * rng.standard_normal(p.shape)),
    }
    for name, row in same.items():
        assert near_duplicates(np.asarray(row)[None], panel) == [(0, 1)], name
    for name, row in {"scaled": p * 1.05, "offset": p + 0.01, "reversed": p[::-1]}.items():
        assert near_duplicates(row[None], panel) == [], name


@pytest.mark.parametrize("poll", ["1e-300", "0.001", "5e-324"])
def test_a_poll_interval_that_would_spin_a_core_is_bad_input(tmp_path: Path, poll: str) -> None:
    path = write_godrun(tmp_path, "spin", image="local", training=_training(), gates=LENIENT_GATES)
    assert godrun_main(["run", str(path), "--workdir", str(tmp_path), "--poll", poll, "--quiet"]) == 2
    assert not (tmp_path / ".godrun").exists()
