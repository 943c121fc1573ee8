"""The one dependency direction: core <- (controller | local); trainer and gates never load evaluator;
the local runner never loads the Kubernetes executor; the controller and core never load torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def loaded_after(imports: list[str], then: str = "") -> set[str]:
    """Module names in sys.modules after importing `imports` (and running `then`) in a fresh interpreter."""
    code = "import importlib, json, sys\n"
    code += "".join(f"importlib.import_module({m!r})\n" for m in imports)
    code += then + "\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def offending(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_local_runner_never_loads_the_kubernetes_executor():
    serve_metrics = "sys.modules['godrun.local.cli']._serve_metrics(0)"  # `godrun run --metrics-port`
    loaded = loaded_after(["godrun.local.cli", "godrun.local.executor"], serve_metrics)
    assert offending(loaded, ("godrun.controller", "kubernetes")) == []


def test_core_loads_neither_torch_nor_kubernetes_nor_an_executor():
    modules = ["godrun.core.machine", "godrun.core.commands", "godrun.core.observe", "godrun.core.prometheus"]
    loaded = loaded_after(modules)
    assert offending(loaded, ("torch", "kubernetes", "godrun.controller", "godrun.local")) == []


@pytest.mark.parametrize("module", ["godrun.trainer.loop", "godrun.trainer.cli", "godrun.gates.metrics"])
def test_trainer_and_gates_never_load_the_evaluator(module):
    loaded = loaded_after([module])
    assert offending(loaded, ("godrun.evaluator", "godrun.controller", "godrun.local")) == []
