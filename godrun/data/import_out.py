"""The output folder of an import: built in a temp folder beside OUT and renamed into place whole."""

from __future__ import annotations

import tempfile
from pathlib import Path

from godrun.errors import InputError


def prepare_out(out: Path) -> tuple[Path, list[Path]]:
    """A temp folder beside OUT (refused when OUT exists and is not an empty folder), and the parent folders
    made for it (deepest first: removed again when the import fails)."""
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise InputError(f"--out {out}: exists and is not an empty folder (nothing was written)")
    made = [p for p in out.absolute().parents if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name[:64]}.import-", dir=out.parent)), made
