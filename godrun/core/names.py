"""Deterministic object names: the same (run, stage, generation) always gives the same name.

A restarted controller recomputes a Job's name instead of remembering it, so it finds the Job it made
before and never creates a twin. Names are DNS-1123 labels; long ones keep a readable prefix and end in
a hash of the full name, so two long runs that share a prefix still get different names.
"""

from __future__ import annotations

import hashlib
import re

from godrun.contract.words import Stage
from godrun.spec import ACT_B_SUFFIX

MAX_LABEL = 63
# Indexed Job pods are named/hostnamed `<job>-<index>`: keep room for the index (6 digits) and the dash.
MAX_JOB_NAME = MAX_LABEL - 7
HASH_LEN = 8
STAGES = tuple(Stage)


def dns_label(text: str, max_len: int = MAX_LABEL, *, letter_first: bool = False) -> str:
    """`text` as a DNS-1123 label of at most `max_len` chars; a hash suffix when it had to change length."""
    if max_len < HASH_LEN + 2:
        raise ValueError(f"max_len {max_len} leaves no room for the hash suffix")
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if letter_first and not clean[0].isalpha():
        clean = "g" + clean
    if len(clean) <= max_len and clean == text:
        return clean
    if len(clean) + 1 + HASH_LEN <= max_len:
        # Sanitised but short: still suffix a hash so that e.g. "a.b" and "a-b" stay distinct.
        return f"{clean}-{_digest(text)}"
    head = clean[: max_len - HASH_LEN - 1].rstrip("-")
    return f"{head}-{_digest(text)}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def job_name(run: str, stage: str, generation: int, restart: int = 0) -> str:
    """Name of the Job (or local process record) running `stage` of `run` at `generation` (`restart`: how many
    times a multi-node training Job was recreated whole)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    suffix = f"-r{restart}" if restart else ""
    return dns_label(f"{run}-{stage}-g{generation}{suffix}", MAX_JOB_NAME)


def service_name(job: str) -> str:
    """Headless Service of a multi-node training Job (a DNS-1035 label: starts with a letter)."""
    return dns_label(job, MAX_LABEL, letter_first=True)


def act_b_name(run: str) -> str:
    """The Act B child GodRun of `run` (GodRun names are DNS subdomains: up to 253 chars)."""
    # GodRun validation keeps a parent short enough for the plain suffix; the hashed form is for names
    # that were never validated (a 253-character object name still gets a valid child name).
    if len(run) + len(ACT_B_SUFFIX) <= 253:
        return f"{run}{ACT_B_SUFFIX}"
    return f"{run[:239].rstrip('-.')}-{_digest(run)}{ACT_B_SUFFIX}"


def run_label(run: str) -> str:
    """Value of the `godrun.io/run` label: the run name, hashed down when longer than a label value may be."""
    return run if len(run) <= MAX_LABEL else dns_label(run, MAX_LABEL)
