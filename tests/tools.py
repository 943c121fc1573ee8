"""External tools the tests run (helm, kubectl, promtool, prometheus, hadolint, godrun), found in one way.

A missing tool skips its tests with one line saying how to get it; under `make test` (GODRUN_REQUIRE_TOOLS=1),
which installs or builds every tool first, a missing tool fails instead, so nothing is silently left out.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from godrun.testcluster import cluster_bin

REQUIRE_ENV = "GODRUN_REQUIRE_TOOLS"


def find_tool(name: str) -> str | None:
    """`name` from the cluster-bin cache, else beside this Python (the venv's scripts), else from PATH."""
    for folder in (cluster_bin(), Path(sys.executable).parent):
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def unavailable(reason: str) -> None:
    """Skip the current test for `reason`, or fail it when every tool is required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (required: {REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, how: str) -> str:
    """The path of `name`; `how` says how to install it when it is missing."""
    path = find_tool(name)
    if path is None:
        unavailable(f"{name} not found ({how})")
        raise AssertionError("unreachable")  # pytest.skip/fail raise
    return path
