"""Docs a newcomer can trust: generated parts do not drift, and nothing points outside the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from godrun.controller.main import build_parser
from godrun.docs import CONTROLLER_README, controller_readme, flag_table

ROOT = Path(__file__).resolve().parents[1]
# Files that may name them: the committed copy of the seed's recipe, the helper checking it, and this test.
ALLOWED = {"tests/fixtures/seed_training_recipe.md", "tests/seed_support.py", "tests/test_docs.py"}


def test_controller_readme_flag_table_is_generated_from_the_parser() -> None:
    text = CONTROLLER_README.read_text(encoding="utf-8")
    assert text == controller_readme(text), "godrun/controller/README.md drifted: run `make docs`"
    table = flag_table(build_parser())
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert f"`{flag}" in table or flag in ("-h", "--help"), flag


def test_a_new_flag_shows_up_in_the_table() -> None:
    parser = build_parser()
    parser.add_argument("--brand-new", type=int, default=7, help="a flag added later")
    assert "| `--brand-new BRAND_NEW` | `7` | a flag added later |" in flag_table(parser)


def test_no_reference_to_files_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = ROOT / name
        if name in ALLOWED or not path.is_file() or path.suffix in (".png", ".npy", ".npz", ".sum"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for needle in ("DESIGN.md", "CONTRACTS.md", "DESIGN §", "../shared", "shared/seeds", "§"):
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert offenders == []
