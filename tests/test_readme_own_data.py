"""README "Your own data": its commands, run literally on the shipped scikit-spectra example, reach a verdict.

The example's training rows have no clean reference (Noise2Noise on replicate pairs only); the panel's
references are the leave-one-out replicate means the import made.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from godrun.data import layout

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- your-own-data:begin -->\s*```bash\n(.*?)```\s*<!-- your-own-data:end -->", text, re.S)
    assert block, "README lost its 'Your own data' command block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_own_data_commands_import_run_and_give_a_verdict(tmp_path: Path) -> None:
    """The block runs as typed, through bash, from a copy of the repository root with its .venv."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / ".venv").symlink_to((ROOT / ".venv").resolve())
    commands = readme_commands()
    godrun = ".venv/bin/godrun"
    assert [c.split()[:3] for c in commands[:2]] == [
        [godrun, "data", "import"],
        [godrun, "run", "examples/skspec-aunps/godrun.yaml"],
    ]
    outs = []
    for line in commands:
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode in (0, 3), (line, done.stdout[-2000:], done.stderr[-2000:])  # 3: Failed-ActB
        outs.append(done.stdout)
    out, verdict = "".join(outs[:2]), outs[2]
    assert "imported 36 spectra (28 training, 8 panel; unit counts)" in out
    assert re.search(r'"verdict": "(pass|fail)"', verdict)
    work = tmp_path / "aunps"
    status = json.loads((work / "status.json").read_text())
    assert status["phase"] in ("Shipped", "Failed-ActB") and status["panel"]["verdict"] in ("pass", "fail")
    train = pd.read_csv(work / layout.MANIFEST_TRAIN, keep_default_na=False)
    assert (train["reference_path"] == "").all()  # no clean training references
    assert set(train["source_file"].str.rsplit(".", n=1).str[-1]) == {"csv", "jdx"}
    panel = pd.read_csv(work / layout.PANEL_MANIFEST, keep_default_na=False)
    assert set(panel["group_id"]) == {"aunp_stage3"} and (panel["reference_sha256"].str.len() == 64).all()
