"""The seed's training command, from the copy committed under tests/fixtures (the seed file itself lives
outside the repository; when it sits beside the checkout, `seed_training_argv` checks the copy against it)."""

from __future__ import annotations

import shlex
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "seed_training_recipe.md"
SEED_FILE = HERE.parents[1] / "shared" / "seeds" / "000_1b7f79dc8a580ca6.txt"


def _recipe_argv(text: str) -> list[str]:
    """The flags of the `python -m src.train ...` block under "## Training recipe"."""
    block = text.split("## Training recipe", 1)[1].split("```", 2)[1]
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:3] == ["python", "-m", "src.train"], argv[:3]
    return argv[3:]


def seed_training_argv() -> list[str]:
    """The seed's trainer flags (from the committed copy, which must equal the seed file when that is here)."""
    argv = _recipe_argv(FIXTURE.read_text(encoding="utf-8"))
    if SEED_FILE.is_file():
        assert _recipe_argv(SEED_FILE.read_text(encoding="utf-8")) == argv, f"{FIXTURE} no longer matches {SEED_FILE}"
    return argv


def seed_training_flags() -> dict[str, list[str]]:
    """flag -> its values ([] for a switch), in the seed's order."""
    flags: dict[str, list[str]] = {}
    current = None
    for tok in seed_training_argv():
        if tok.startswith("--"):
            current = tok[2:]
            flags[current] = []
        elif current is not None:
            flags[current].append(tok)
    return flags
