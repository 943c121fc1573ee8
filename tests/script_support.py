"""Load a repository script (bench/, scripts/) as a module, for the tests of its functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(rel: str) -> ModuleType:
    """The module at ROOT/rel (e.g. "bench/quality.py"), executed once per call."""
    spec = importlib.util.spec_from_file_location(Path(rel).stem, ROOT / rel)
    assert spec and spec.loader, rel
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
