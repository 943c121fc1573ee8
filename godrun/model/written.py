"""The record of the checkpoints the trainer wrote: `checkpoints_written.json` in the checkpoint folder.

Every checkpoint the trainer saves is hashed from the bytes it is about to write and recorded here first
(then the file is renamed into place), keeping each name's last two hashes: a kill between the record and the
rename leaves the previous file, still recorded. The evaluator ranks only the checkpoints of the record whose
bytes have a recorded hash (verified again when each is loaded): a `*.pt` dropped into the folder is ignored
with a message, a recorded one whose bytes changed is refused (exit 2). Without a record, the evaluator ranks
every `*.pt` (the seed's command on a folder of checkpoints), unless `--written-only` (what a GodRun passes)
requires one. No torch here: the evaluator reads the record before loading anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from godrun.contract import files
from godrun.errors import InputError, reading
from godrun.fsio import atomic_write_json, read_bytes

RECORD_NAME = files.CHECKPOINTS_WRITTEN
KEEP = 2  # hashes kept per name: the file's and, while a save is under way, the one before
_SHA = re.compile(r"[0-9a-f]{64}")


def record_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / RECORD_NAME


def note_written(path: str | Path, sha256: str) -> None:
    """Record that the trainer is writing `sha256` as `path` (call before the file is renamed into place)."""
    path = Path(path)
    files = read_record(path.parent) or {}
    files[path.name] = [sha256, *(h for h in files.get(path.name, []) if h != sha256)][:KEEP]
    atomic_write_json(record_path(path.parent), {"format": 1, "files": dict(sorted(files.items()))})


def forget_written(checkpoint_dir: str | Path) -> None:
    """A training that starts afresh: what an earlier training recorded here is not this one's."""
    if record_path(checkpoint_dir).exists() or record_path(checkpoint_dir).is_symlink():
        atomic_write_json(record_path(checkpoint_dir), {"format": 1, "files": {}})


def record_resumed(checkpoint_dir: str | Path, own: list[Path]) -> None:
    """A training that resumes: a malformed record is refused now, not after an epoch; a folder without one
    (written before checkpoints were recorded) gets this training's own best/last, which it resumes from."""
    if read_record(checkpoint_dir) is None:
        from godrun.fsio import sha256_file

        for path in own:
            if path.is_file():
                note_written(path, sha256_file(path))


def read_record(checkpoint_dir: str | Path) -> dict[str, list[str]] | None:
    """{file name: recorded sha256s} or None when the folder has no record; a malformed one is refused."""
    path = record_path(checkpoint_dir)
    if not path.exists() and not path.is_symlink():
        return None
    with reading(path, "checkpoint record"):
        obj = json.loads(read_bytes(path, max_bytes=16 << 20))  # confined: a symlinked record is refused
    files = obj.get("files") if isinstance(obj, dict) else None
    ok = isinstance(files, dict) and all(
        isinstance(k, str) and isinstance(v, list) and v and all(isinstance(h, str) and _SHA.fullmatch(h) for h in v)
        for k, v in files.items()
    )
    if not ok:
        raise InputError(f"checkpoint record {path}: not the trainer's record ({{'files': {{name: [sha256, ...]}}}})")
    return files


def written_only(paths: list[Path], hashes: dict[str, str], checkpoint_dir: str | Path, required: bool) -> list[Path]:
    """The `paths` (with their `hashes`) the trainer wrote, per the folder's record; the others are ignored with
    a message on stderr. A recorded file whose bytes have no recorded hash is refused."""
    import sys

    files = read_record(checkpoint_dir)
    if files is None:
        if required:
            raise InputError(
                f"--checkpoint-dir {checkpoint_dir}: no {RECORD_NAME}, so no checkpoint is known to be the trainer's "
                "(--written-only)"
            )
        return paths
    kept = []
    for p in paths:
        recorded = files.get(p.name)
        if recorded is None:
            print(f"note: ignored {p}: not a checkpoint the trainer wrote (not in {RECORD_NAME})", file=sys.stderr)
        elif hashes[str(p)] not in recorded:
            raise InputError(
                f"checkpoint {p}: its sha256 {hashes[str(p)]} is not the one the trainer wrote ({recorded[0]}); "
                "the file was replaced after training"
            )
        else:
            kept.append(p)
    if not kept:
        raise InputError(f"--checkpoint-dir {checkpoint_dir}: no checkpoint the trainer wrote (per {RECORD_NAME})")
    return kept
