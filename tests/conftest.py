"""Shared fixtures: one small synthetic corpus per test session (synth + panel at scale 0.05, seed 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_SCALE = 0.05


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace root holding data/ (manifests, spectra, panel, metadata); treat it as read-only."""
    from godrun.cli import main

    root = tmp_path_factory.mktemp("small_corpus")
    assert main(["data", "synth", "--out", str(root), "--scale", str(SMALL_SCALE)]) == 0
    assert main(["data", "panel", "--root", str(root)]) == 0
    return root
