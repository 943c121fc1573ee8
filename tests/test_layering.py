"""The one dependency direction docs/design.md (section 1) states: its package table read here and every
godrun import in the code (function-level ones included) checked against it; the contract at the bottom,
torch-free; core never loads a stage, the evaluator never the trainer; the local runner never loads the
Kubernetes executor; the controller and core never load torch."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
ENTRY_POINTS = frozenset({"cli", "__main__", "docs", "__init__"})  # dispatch to any package
CONTRACT_THIRD_PARTY = frozenset({"pydantic", "numpy"})


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


def test_core_loads_neither_torch_nor_kubernetes_nor_an_executor_nor_a_stage():
    modules = ["godrun.core.machine", "godrun.core.commands", "godrun.core.observe", "godrun.core.prometheus"]
    loaded = loaded_after(modules)
    stages = ("godrun.trainer", "godrun.evaluator", "godrun.model", "godrun.gates", "godrun.data")
    assert offending(loaded, ("torch", "kubernetes", "godrun.controller", "godrun.local", *stages)) == []


@pytest.mark.parametrize("module", ["godrun.trainer.loop", "godrun.trainer.cli", "godrun.gates.metrics"])
def test_trainer_and_gates_never_load_the_evaluator(module):
    loaded = loaded_after([module])
    assert offending(loaded, ("godrun.evaluator", "godrun.controller", "godrun.local")) == []


# --------------------------------------------------------------------------- the documented table


def documented_rules() -> dict[str, set[str]]:
    """docs/design.md's layering table: package (or package.module) -> the godrun packages it may import."""
    text = DESIGN.read_text(encoding="utf-8")
    block = text.split("<!-- layering:begin -->", 1)[1].split("<!-- layering:end -->", 1)[0]
    rules: dict[str, set[str]] = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rules[cells[0].strip("`")] = set(re.findall(r"`([\w.]+)`", cells[1]))
    return rules


def unit_of(module: str) -> str:
    """`godrun.trainer.loop` -> `trainer`; `godrun.spec` -> `spec`."""
    return module.split(".")[1] if module.count(".") else module


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level and TYPE_CHECKING imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from godrun.contract import files` imports godrun.contract.files (a name may be a module)
            top = node.module.count(".") <= 1
            names = [f"{node.module}.{a.name}" for a in node.names] if top else [node.module]
            found |= set(names)
    return found


def godrun_modules() -> list[tuple[str, Path]]:
    return [(".".join(p.relative_to(ROOT).with_suffix("").parts), p) for p in sorted((ROOT / "godrun").rglob("*.py"))]


def violations(rules: dict[str, set[str]], modules: list[tuple[str, Path]]) -> list[str]:
    """`module imports target` for every godrun import the table does not allow."""
    bad = []
    for module, path in modules:
        unit = unit_of(module)
        if unit in ENTRY_POINTS:
            continue
        key = ".".join(module.split(".")[1:3])
        allowed = rules.get(key, rules.get(unit))
        assert allowed is not None, f"docs/design.md's layering table has no row for {unit}"
        allowed = allowed | {unit} | ({key.split(".")[0]} if key in rules else set())
        for target in sorted(imports_of(path)):
            leaf = ".".join(target.split(".")[1:3])  # a row may allow one module of a package (contract.words)
            if target.startswith("godrun.") and not {unit_of(target), leaf} & allowed and leaf != "__version__":
                bad.append(f"{module} imports {target}")
    return bad


def test_every_import_follows_the_documented_direction():
    rules = documented_rules()
    assert {"contract", "core", "trainer", "evaluator", "model"} <= set(rules)
    assert violations(rules, godrun_modules()) == []


def test_the_table_has_no_upward_arrow():
    """Documented: the contract imports nothing above it, core no stage, the evaluator no trainer (and back)."""
    rules = documented_rules()
    assert rules["contract"] <= {"spec", "errors"}
    assert not rules["core"] & {"trainer", "evaluator", "model", "gates", "data"}
    assert "trainer" not in rules["evaluator"] and "evaluator" not in rules["trainer"]
    assert not rules["model"] & {"trainer", "evaluator"}


def test_the_contract_imports_only_its_allowed_libraries():
    """Third-party imports of godrun/contract/: pydantic and numpy only (no torch, no kubernetes, no pandas)."""
    stdlib = sys.stdlib_module_names
    for module, path in godrun_modules():
        if unit_of(module) != "contract":
            continue
        roots = {name.split(".")[0] for name in imports_of(path)} - {"godrun", "__future__"}
        assert roots - set(stdlib) <= CONTRACT_THIRD_PARTY, module


def test_the_checker_catches_an_upward_import(tmp_path):
    """The check bites: core building the trainer's flags (the code before the contract) is refused."""
    upward = tmp_path / "commands.py"
    upward.write_text("def argv():\n    from godrun.trainer.flags import recipe_to_argv\n", encoding="utf-8")
    assert violations(documented_rules(), [("godrun.core.commands", upward)]) == [
        "godrun.core.commands imports godrun.trainer.flags"
    ]


def test_the_contract_loads_no_torch_and_nothing_above_it():
    loaded = loaded_after(["godrun.contract", "godrun.contract.flags"])
    above = ("godrun.core", "godrun.trainer", "godrun.evaluator", "godrun.model", "godrun.gates", "godrun.data")
    assert offending(loaded, ("torch", "kubernetes", "pandas", "scipy", *above)) == []


def test_the_evaluator_never_loads_the_trainer():
    """Its checkpoint replay included (godrun.model.inference, imported lazily when a checkpoint is scored)."""
    modules = ["godrun.evaluator.cli", "godrun.evaluator.panel", "godrun.evaluator.outputs", "godrun.model.inference"]
    loaded = loaded_after(modules)
    assert offending(loaded, ("godrun.trainer", "godrun.controller", "godrun.local")) == []


def test_no_one_letter_module_aliases():
    """`import x as y` / `from x import m as y` with a one-letter y hides which module a name comes from."""
    found = []
    for folder in ("godrun", "tests", "bench", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found += [f"{path.relative_to(ROOT)}: {a.name} as {a.asname}" for a in node.names if _short(a)]
    assert found == []


def _short(alias: ast.alias) -> bool:
    return alias.asname is not None and len(alias.asname) == 1 and alias.name[:1].islower()
