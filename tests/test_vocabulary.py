"""One vocabulary: no phase, reason, condition type, stage, event word, label key or file name of the run is typed
as a string literal outside its one home (godrun/contract/words.py, godrun/contract/files.py).

Every module under godrun/, bench/ and scripts/ is parsed with `ast`. A string literal (not a docstring) equal
to one of the words, or an f-string whose shape is one of the file-name templates (`f"status-{name}.json"`), is
a finding. The few literals that only look like a word (the same spelling, another meaning) are listed in
ALLOWED with the reason.
"""

from __future__ import annotations

import ast
import re
from enum import StrEnum
from pathlib import Path

from godrun.contract import files, words

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("godrun", "bench", "scripts")  # the package and the programs that use it
HOMES = {"godrun/contract/words.py", "godrun/contract/files.py"}
# Spelled once in their home but not searched for, being too common to tell apart from other uses of the same
# word: folder names of files.py (a Kubernetes resource `jobs`, object `metadata`, the run volume `data`) and the
# project's own name (the `app.kubernetes.io/name` value, also the CRD's singular and a Prometheus label name).
GENERIC = {files.DATA_DIR, files.METADATA_DIR_NAME, files.JOBS_DIR, files.SEED_LOG_ROOT, words.APP_NAME}

# (module, literal) -> why it is not the vocabulary's word.
ALLOWED: dict[tuple[str, str], str] = {
    ("godrun/cli.py", "train"): "the `godrun train` subcommand (the seed's command line), not the stage",
    ("godrun/cli.py", "evaluate"): "the `godrun evaluate` subcommand (the seed's command line), not the stage",
    ("godrun/trainer/folds.py", "train"): "the training split of a fold (train/val/test), not the stage",
    ("godrun/trainer/telemetry.py", "train"): "the progress bar's label",
    ("godrun/testcluster.py", "True"): "a CRD's own Established condition (apiextensions), not a GodRun's; "
    "testcluster imports nothing from godrun",
    (
        "godrun/evaluator/outputs.py",
        "train",
    ): "a substring of a checkpoint's data_hashes keys (train_manifest)",
}


def vocabulary() -> dict[str, str]:
    """Every guarded literal -> the name it has in its home."""
    out: dict[str, str] = {}
    for enum in vars(words).values():
        if isinstance(enum, type) and issubclass(enum, StrEnum) and enum is not StrEnum:
            for member in enum:
                out.setdefault(member.value, f"words.{enum.__name__}.{member.name}")
    for module, prefix in ((words, "words"), (files, "files")):
        for name, value in vars(module).items():
            if name.startswith("_"):
                continue
            if name.isupper() and isinstance(value, str) and value not in GENERIC and len(value) > 1:
                out.setdefault(value, f"{prefix}.{name}")
            elif name.isupper() and isinstance(value, Path):  # the data layout's paths (spec defaults, flags)
                out.setdefault(value.as_posix(), f"files.{name}")
    return out


def _shape(template: str) -> str:
    return re.sub(r"\{[^{}]*\}", "{}", template)


def templates() -> dict[str, str]:
    """The file-name templates (`status-{name}.json`) by their shape (`status-{}.json`)."""
    return {
        _shape(value): f"files.{name}"
        for name, value in vars(files).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str) and "{" in value
    }


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are statements of their own (docstrings, bare prose)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _fstring_shape(node: ast.JoinedStr) -> str:
    return "".join(
        str(part.value) if isinstance(part, ast.Constant) else "{}"
        for part in node.values
        if isinstance(part, ast.Constant | ast.FormattedValue)
    )


def findings(source: str, module: str, vocab: dict[str, str], shapes: dict[str, str]) -> list[str]:
    tree = ast.parse(source)
    skip = _docstrings(tree)
    in_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and (home := shapes.get(_fstring_shape(node))):
            out.append(
                (node.lineno, f"{module}:{node.lineno}: f-string {_fstring_shape(node)!r} builds {home} by hand")
            )
            continue
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if id(node) in skip or id(node) in in_fstring or (module, node.value) in ALLOWED:
            continue
        if (home := vocab.get(node.value)) is not None:
            out.append((node.lineno, f"{module}:{node.lineno}: {node.value!r} is {home}"))
    return [text for _, text in sorted(out)]


def test_no_word_or_file_name_outside_its_home() -> None:
    vocab, shapes = vocabulary(), templates()
    found: list[str] = []
    for path in sorted(p for folder in SCANNED for p in (REPO / folder).rglob("*.py")):
        module = path.relative_to(REPO).as_posix()
        if module not in HOMES:
            found += findings(path.read_text(encoding="utf-8"), module, vocab, shapes)
    assert not found, "literals that have a home in godrun.contract:\n" + "\n".join(found)


def test_allowlist_is_still_needed() -> None:
    """An allowlist entry whose literal is gone is removed (the list stays short and true)."""
    for module, literal in ALLOWED:
        tree = ast.parse((REPO / module).read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.Constant) and n.value == literal for n in ast.walk(tree)), (module, literal)


def test_the_check_finds_what_it_guards() -> None:
    """The scanner itself: a reason, a condition type, a label key, a file name and a hand-built file name."""
    source = '''
"""A docstring may say Trained and metrics.csv."""
def f(st, workdir, name):
    st.reason = "BadInput"
    cond = "Trained"
    key = "godrun.io/run"
    path = workdir / "metrics.csv"
    panel = "data/validation_panel.csv"
    status = f"status-{name}.json"
    prose = f"training Job {name} failed"
'''
    found = findings(source, "godrun/example.py", vocabulary(), templates())
    assert [f.split(": ", 1)[1].split(" ")[0] for f in found] == [
        "'BadInput'",
        "'Trained'",
        "'godrun.io/run'",
        "'metrics.csv'",
        "'data/validation_panel.csv'",
        "f-string",
    ], found


def test_words_compare_equal_to_what_a_status_holds() -> None:
    """The enums are the strings: a status read back from the API (plain str) compares equal, and a phase
    written through pydantic's JSON mode is the plain word."""
    from godrun.spec import GodRunStatus

    status = GodRunStatus(phase=words.Phase.FAILED_ACT_B, reason=words.Reason.GATES_FAILED)
    body = status.model_dump(mode="json")
    assert body["phase"] == "Failed-ActB" and type(body["phase"]) is str
    assert type(body["reason"]) is str
    assert GodRunStatus.model_validate({"phase": "Shipped"}).phase == words.Phase.SHIPPED
    assert words.labels(parent="p") == {
        words.LABEL_NAME: "godrun",
        words.LABEL_MANAGED_BY: "godrun-controller",
        words.LABEL_PARENT: "p",
        words.LABEL_ACT: "B",
    }
    assert all(type(k) is str and type(v) is str for k, v in words.labels(run="r", stage=words.Stage.TRAIN).items())
