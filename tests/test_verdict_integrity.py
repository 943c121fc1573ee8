"""An honest verdict: inputs that try to forge, poison or drift it are refused (exit 2) or cannot matter.

Built as classes of attacks, each class a family of cases: poisoned or tampered data, leaky training
manifests, trainer and evaluator judging by one set of rules, predictions that are not numbers, paths
that leave the run volume, text that tries to break out of its line, numbers that mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from run_support import LENIENT_GATES, write_godrun

from godrun.data import layout
from godrun.fsio import sha256_file
from godrun.gates import metrics
from godrun.spec import RUN_PATH_FIELDS, GodRunSpec, Recipe
from godrun.trainer.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"GODRUN_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
PANEL = layout.PANEL_MANIFEST
SPECTRA = layout.SPECTRA_DIR


def _copy(small_corpus: Path, tmp_path: Path) -> Path:
    """A run volume holding a private copy of the small corpus (tests tamper with it)."""
    work = tmp_path / "vol"
    shutil.copytree(small_corpus / "data", work / "data")
    return work


def _godrun(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "godrun", *argv],
        cwd=cwd,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _evaluate(work: Path, *extra: str, expected_hash: str | None = None) -> subprocess.CompletedProcess:
    """`godrun evaluate --denoiser identity` on the panel of `work` (the raw spectra as the prediction)."""
    argv = ["evaluate", "--denoiser", "identity", "--output-dir", "out", "--termination-log", "verdict.json"]
    if expected_hash:
        argv += ["--expected-hash", expected_hash]
    return _godrun(*argv, *extra, cwd=work)


def _verdict(work: Path) -> dict[str, Any]:
    return json.loads((work / "verdict.json").read_text())


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file below `folder` (except below `skip`): proves nothing there was touched."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if skip is not None and p.is_relative_to(skip):
            continue
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = sha256_file(p)
    return out


def _old_cache_key(manifest: Path, root: Path, meta: pd.DataFrame, length: int, grid_sha: str) -> str:
    """The key the earlier loader trusted its cache under: computable from bytes, paths, sizes, mtimes."""
    h = hashlib.sha256()
    h.update(f"v1|{root.resolve()}|{length}|{grid_sha}|".encode())
    h.update(manifest.read_bytes())
    for rel in (*meta["path"], *meta["reference_path"]):
        st = os.stat(root / rel)
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- poisoned and tampered data


class TestDataCannotChangeTheVerdict:
    def test_planted_cache_is_never_read(self, small_corpus: Path, tmp_path: Path) -> None:
        work = _copy(small_corpus, tmp_path)
        honest = _evaluate(work)
        assert honest.returncode == 0, honest.stderr
        first = _verdict(work)
        assert first["verdict"] == "fail"  # raw spectra fail gate 1 by construction
        # the attack: "raw" spectra that are the clean references, under the key the loader computes
        root, manifest = work / SPECTRA, work / PANEL
        meta = pd.read_csv(manifest)
        refs = np.stack([np.load(root / p) for p in meta["reference_path"]]).astype(np.float32)
        wl = np.load(work / layout.WAVELENGTH_GRID).astype(np.float64)
        key = _old_cache_key(manifest, root, meta, 601, hashlib.sha256(wl.tobytes()).hexdigest())
        (root / ".cache").mkdir(exist_ok=True)
        np.savez(root / ".cache" / f"corpus_{key[:32]}.npz", spectra=refs, references=refs)
        again = _evaluate(work)
        assert again.returncode == 0, again.stderr
        second = _verdict(work)
        assert second["verdict"] == "fail" and second["gates"] == first["gates"]
        assert second["psnrMean"] == first["psnrMean"]

    @pytest.mark.parametrize("column", ["path", "reference_path"])
    def test_tampered_file_with_restored_size_and_mtime_is_refused(
        self, small_corpus: Path, tmp_path: Path, column: str
    ) -> None:
        work = _copy(small_corpus, tmp_path)
        assert _evaluate(work).returncode == 0  # a first load (which used to fill a cache)
        meta = pd.read_csv(work / PANEL)
        target = work / SPECTRA / meta[column].iloc[3]
        first_use = int(np.flatnonzero(meta[column].to_numpy() == meta[column].iloc[3])[0]) + 1
        st = target.stat()
        np.save(target, np.full(601, np.nan, np.float32))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
        out = _evaluate(work)
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"row {first_use} " in out.stderr and target.name in out.stderr and "sha256" in out.stderr

    def test_rewritten_references_fail_the_pinned_panel(self, small_corpus: Path, tmp_path: Path) -> None:
        """References rewritten to look like the raw spectra (the identity denoiser would pass) are refused."""
        work = _copy(small_corpus, tmp_path)
        pinned = sha256_file(work / PANEL)
        meta = pd.read_csv(work / PANEL)
        for raw, ref in zip(meta["path"], meta["reference_path"], strict=True):
            np.save(work / SPECTRA / ref, np.load(work / SPECTRA / raw))
        out = _evaluate(work, expected_hash=pinned)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "reference" in out.stderr or "sha256" in out.stderr
        assert not (work / "verdict.json").exists()

    def test_panel_without_reference_hashes_is_refused(self, small_corpus: Path, tmp_path: Path) -> None:
        work = _copy(small_corpus, tmp_path)
        meta = pd.read_csv(work / PANEL).drop(columns=["reference_sha256"])
        meta.to_csv(work / PANEL, index=False)
        out = _evaluate(work)
        assert out.returncode == 2 and "reference_sha256" in out.stderr

    @pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink-out", "folder-symlink-out", "fifo", "huge"])
    def test_manifest_rows_stay_under_their_root(self, small_corpus: Path, tmp_path: Path, case: str) -> None:
        work = _copy(small_corpus, tmp_path)
        outside = tmp_path / "outside"
        outside.mkdir()
        secret = outside / "secret.npy"
        np.save(secret, np.ones(601, np.float32))
        meta = pd.read_csv(work / PANEL, dtype=str)
        row = 2
        rel = meta.loc[row, "path"]
        target = work / SPECTRA / rel
        if case == "absolute":
            meta.loc[row, "path"] = str(secret)
        elif case == "dotdot":
            meta.loc[row, "path"] = os.path.relpath(secret, work / SPECTRA)
        elif case == "symlink-out":
            target.unlink()
            target.symlink_to(secret)
        elif case == "folder-symlink-out":
            folder = target.parent
            shutil.copytree(folder, outside / "group")
            shutil.rmtree(folder)
            folder.symlink_to(outside / "group")
        elif case == "fifo":
            target.unlink()
            os.mkfifo(target)
        elif case == "huge":
            with open(target, "wb") as fh:
                fh.truncate(64 << 20)
        meta.loc[row, "content_sha256"] = sha256_file(secret)  # the manifest agrees with the file it points at
        meta.to_csv(work / PANEL, index=False)
        before = snapshot(outside)
        out = _evaluate(work)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "row" in out.stderr and "spectrum_id" in out.stderr
        assert snapshot(outside) == before


# --------------------------------------------------------------------------- leakage


def _leaky(work: Path, how: str) -> None:
    """Append panel spectra to the training manifest under new ids, the way a careless merge would."""
    train_path = work / layout.MANIFEST_TRAIN
    train, panel = pd.read_csv(train_path, dtype=str), pd.read_csv(work / PANEL, dtype=str)
    extra = panel.head(6).copy()
    extra["spectrum_id"] = [f"renamed_{i}" for i in range(len(extra))]
    extra["pair_id"] = [f"renamed_pair_{i // 2}" for i in range(len(extra))]
    donor = train.iloc[0]
    if how in ("content", "reference"):  # hide the group: only the content gives it away
        extra["group_id"] = donor["group_id"]
        for col in ("treatment", "sample", "angle"):
            extra[col] = donor[col]
    if how == "reference":  # new noisy spectra, the panel's clean references
        new_paths = []
        for i, rel in enumerate(extra["path"]):
            dest = f"spectra/leak/{i}.npy"
            (work / SPECTRA / dest).parent.mkdir(parents=True, exist_ok=True)
            np.save(work / SPECTRA / dest, np.load(work / SPECTRA / rel) * np.float32(1.001))
            new_paths.append(dest)
        extra["path"] = new_paths
        extra["content_sha256"] = [sha256_file(work / SPECTRA / p) for p in new_paths]
    pd.concat([train, extra]).to_csv(train_path, index=False)


def _tiny_recipe(**kw: Any) -> Recipe:
    base = Recipe().model_dump() | PRESETS["tiny"] | {"init_checkpoint": None, "epochs": 1, "steps_per_epoch": 1}
    return Recipe.model_validate(base | kw)


def _trainer_argv(recipe: Recipe, *extra: str) -> list[str]:
    from godrun.contract.flags import recipe_to_argv

    return [sys.executable, "-m", "godrun.trainer", *recipe_to_argv(recipe), *extra]


class TestLeakyTrainingIsRefused:
    @pytest.mark.parametrize("how", ["group", "content", "reference"])
    def test_trainer_alone_exits_2_and_writes_nothing(self, small_corpus: Path, tmp_path: Path, how: str) -> None:
        work = _copy(small_corpus, tmp_path)
        _leaky(work, how)
        before = snapshot(work)
        out = subprocess.run(_trainer_argv(_tiny_recipe()), cwd=work, env=ENV, capture_output=True, text=True)
        assert out.returncode == 2, out.stderr
        assert "leaks" in out.stderr and "panel" in out.stderr
        assert snapshot(work) == before and not (work / "logs").exists() and not (work / "checkpoints").exists()

    def test_godrun_run_ends_in_error_bad_input(self, small_corpus: Path, tmp_path: Path) -> None:
        work = _copy(small_corpus, tmp_path)
        _leaky(work, "content")
        path = _godrun_yaml(work, "leaky")
        out = _godrun("run", str(path), "--workdir", str(work), "--poll", "0.2", "--quiet", cwd=work)
        assert out.returncode == 2, out.stdout + out.stderr
        status = json.loads((work / "status.json").read_text())
        assert status["phase"] == "Error" and status["reason"] == "BadInput"
        assert "leaks" in status["message"]
        verified = next(c for c in status["conditions"] if c["type"] == "DataVerified")
        assert verified["status"] == "False"
        assert not (work / "checkpoints").exists()


def _godrun_yaml(work: Path, name: str, **spec: Any) -> Path:
    training = _tiny_recipe(epochs=1).model_dump(mode="json") | spec.pop("training", {})
    return write_godrun(work, name, **({"image": "local", "training": training, "gates": LENIENT_GATES} | spec))


# --------------------------------------------------------------------------- one set of rules


class TestTrainerAndEvaluatorApplyOneSetOfRules:
    """(That the trainer never loads the evaluator is tests/test_layering.py's.)"""

    def test_executors_pass_the_godrun_gates_to_the_trainer(self) -> None:
        from godrun.contract.flags import parse_trainer_args
        from godrun.core.commands import trainer_argv

        spec = GodRunSpec.model_validate({"image": "x", "gates": LENIENT_GATES, "data": {"verify": False}})
        args = parse_trainer_args(trainer_argv(spec)[3:])
        assert args.gates == spec.gates and args.recipe == spec.training and args.verify_data is False

    @pytest.mark.parametrize(("gates", "passed"), [(LENIENT_GATES, 4), ({"psnrMeanMin": 99.0}, None)])
    def test_best_checkpoint_and_metrics_follow_the_given_gates(
        self, small_corpus: Path, tmp_path: Path, gates: dict[str, Any], passed: int | None
    ) -> None:
        from godrun.core.commands import trainer_argv
        from godrun.model import checkpoint as ck

        work = _copy(small_corpus, tmp_path)
        spec = GodRunSpec.model_validate({"image": "x", "gates": gates, "training": _tiny_recipe(epochs=2)})
        out = subprocess.run(
            [sys.executable, *trainer_argv(spec)[1:]],
            cwd=work,
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        rows = list(pd.read_csv(work / "logs/god_run/metrics.csv").itertuples())
        best = ck.load_checkpoint(ck.best_path(work / "checkpoints/god_run"))
        if passed is not None:
            assert all(r.panel_gates_passed == passed for r in rows)
        else:  # nothing clears 99 dB: the aggregate gate fails every epoch
            assert all(r.panel_gates_passed <= 3 for r in rows)
        assert best.meta.panel["panel_gates_passed"] == max(r.panel_gates_passed for r in rows)
        assert rows[-1].best_epoch == best.meta.epoch

    def test_ranking_is_one_function(self) -> None:
        from godrun.evaluator.panel import Evaluation
        from godrun.gates.ranking import rank_key
        from godrun.spec import Verdict

        v = Verdict(verdict="fail", psnr_mean=20.0, sam_mean=3.0, tail_ratio=1.0, roi_ratio=1.0, spurious_peaks=0)
        ev = Evaluation("a", None, pd.DataFrame(), v, 0.0, 0.0)
        assert ev.rank_key() == rank_key(v, "a")


# --------------------------------------------------------------------------- predictions that are not numbers


@pytest.fixture(scope="module")
def panel_arrays(small_corpus: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from godrun.data.loader import load_corpus

    c = load_corpus(small_corpus / PANEL, small_corpus / SPECTRA, wavelength_grid=small_corpus / layout.WAVELENGTH_GRID)
    return c.reference.astype(np.float64), c.raw.astype(np.float64), c.wavelengths


class TestNonFinitePredictionsFail:
    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_every_gate_fails_on_a_non_finite_prediction(self, panel_arrays, bad: float) -> None:
        from godrun.spec import Gates

        ref, raw, wl = panel_arrays
        gates = Gates()
        pred = np.full_like(ref, bad)
        verdict = metrics.evaluate_gates(metrics.panel_metrics(pred, ref, raw, wl, gates), gates)
        assert verdict.failed_gates == ["aggregate", "tail", "roi", "downstream"]

    def test_one_nan_spectrum_fails_its_roi_check(self, panel_arrays) -> None:
        from godrun.spec import Gates

        ref, raw, wl = panel_arrays
        gates = Gates()
        pred = ref.copy()  # perfect, but for a few NaNs outside the ROI of one spectrum
        pred[0, 20:30] = np.nan
        per = metrics.panel_metrics(pred, ref, raw, wl, gates)
        assert not per["roi_pass"].iloc[0] and not per["tail_ok"].iloc[0]
        assert math.isinf(per["downstream_err"].iloc[0])
        assert per["roi_pass"].iloc[1:].all()
        verdict = metrics.evaluate_gates(per, gates)
        assert verdict.roi_ratio < 1.0 and "roi" in verdict.failed_gates


DS_OUT = ("--output-csv", "ds.csv")


class TestDownstreamMargin:
    @pytest.mark.parametrize(("margin", "passes"), [(0.0, False), (0.2, False), (1.0, True)])
    def test_standalone_script_honours_the_margin(self, small_corpus: Path, tmp_path: Path, margin, passes) -> None:
        work = _copy(small_corpus, tmp_path)
        from godrun.data.loader import load_corpus

        c = load_corpus(work / PANEL, work / SPECTRA, wavelength_grid=work / layout.WAVELENGTH_GRID)
        ref, raw = c.reference.astype(np.float64), c.raw.astype(np.float64)
        np.save(work / "pred.npy", (ref + 1.4 * (raw - ref)).astype(np.float32))  # ~1.6x raw's error
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts/downstream_proxy_eval.py"),
                "--predictions",
                "pred.npy",
                *DS_OUT,
                "--downstream-margin",
                str(margin),
            ],
            cwd=work,
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads((work / "ds.json").read_text())
        ratio = summary["downstream_err_mean"] / summary["downstream_err_raw_mean"]
        assert 1.25 < ratio < 1.95
        assert summary["passed"] is passes
        assert summary["threshold"] == pytest.approx(summary["downstream_err_raw_mean"] * (1 + margin), rel=1e-6)


# --------------------------------------------------------------------------- paths that leave the run volume


ESCAPES = ["../outside", "../../etc", "/tmp/abs", "a/../../b", "ok/..", "x\ny", "tab\tname"]
PATH_FIELDS = [(model, name) for model, names in RUN_PATH_FIELDS.items() for name in names]
SECTION = {"Recipe": "training", "PanelSpec": "panel", "Fallback": "fallback"}


def _spec_with(section: str, name: str, value: Any) -> dict[str, Any]:
    key = name if section == "training" else "".join(w if i == 0 else w.title() for i, w in enumerate(name.split("_")))
    return {"image": "x", section: {key: value}}


class TestPathsStayInsideTheRunVolume:
    @pytest.mark.parametrize("value", ESCAPES)
    @pytest.mark.parametrize(("model", "name"), PATH_FIELDS, ids=lambda x: x)
    def test_pydantic_refuses_every_escaping_path(self, model: str, name: str, value: str) -> None:
        section = SECTION[model]
        with pytest.raises(ValidationError) as info:
            GodRunSpec.model_validate(_spec_with(section, name, value))
        assert f"{section}.{name}" in str(info.value)

    @pytest.mark.parametrize(
        ("where", "value"),
        [
            ("training.checkpoint_dir", ""),
            ("training.checkpoint_dir", "."),
            ("panel.output_dir", "./"),
            ("fallback.archive_dir", "."),
            ("fallback.analytics_doc", "data/validation_panel.csv"),
            ("training.audit_log", "site.pth"),
        ],
    )
    def test_pydantic_refuses_the_volume_root_and_foreign_files(self, where: str, value: str) -> None:
        section, name = where.split(".")
        with pytest.raises(ValidationError) as info:
            GodRunSpec.model_validate(_spec_with(section, name, value))
        assert name in str(info.value) or where in str(info.value)

    def test_crd_carries_the_rule_on_every_path_field(self) -> None:
        from godrun.controller.crd import RUN_PATH_CEL, openapi_schema

        spec = openapi_schema(GodRunSpec)
        for model, names in RUN_PATH_FIELDS.items():
            props = spec["properties"][SECTION[model]]["properties"]
            for name in names:
                node = props[name if model == "Recipe" else _camel(name)]
                assert RUN_PATH_CEL in node["x-kubernetes-validations"], name
                assert "run volume" in node["description"] and node["pattern"] and node["maxLength"]

    @pytest.mark.parametrize(
        ("value", "ok"),
        [("a/b", True), ("a..b/c", True), ("..", False), ("a/../b", False), ("/x", False), ("a/..", False)],
    )
    def test_cel_regex_agrees_with_pydantic(self, value: str, ok: bool) -> None:
        import re

        from godrun.spec import run_path_problem

        cel = not value.startswith("/") and re.search(r"(^|/)[.][.](/|$)", value) is None
        assert cel is ok and (run_path_problem(value) is None) is ok

    @pytest.mark.parametrize("where", ["training.checkpoint_dir", "fallback.archive_dir", "training.log_dir"])
    def test_godrun_run_exits_2_naming_the_field_and_touches_nothing(self, tmp_path: Path, where: str) -> None:
        work = tmp_path / "vol"
        work.mkdir()
        (tmp_path / "neighbour.txt").write_text("keep")
        section, name = where.split(".")
        body = _spec_with(section, name, "../escaped")
        path = tmp_path / "run.yaml"
        path.write_text(
            yaml.safe_dump(
                {"apiVersion": "godrun.io/v1alpha1", "kind": "GodRun", "metadata": {"name": "esc"}, "spec": body}
            )
        )
        before = snapshot(tmp_path)
        out = _godrun("run", str(path), "--workdir", str(work), cwd=tmp_path)
        assert out.returncode == 2 and where in out.stderr, out.stderr
        assert snapshot(tmp_path) == before and not (tmp_path / "escaped").exists()

    @pytest.mark.parametrize("field", ["checkpoint_dir", "log_dir"])
    def test_symlink_leading_out_is_refused_at_use(self, small_corpus: Path, tmp_path: Path, field: str) -> None:
        work = _copy(small_corpus, tmp_path)
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "precious.pth").write_text("import os\n")
        (work / "escape").symlink_to(outside)
        path = _godrun_yaml(work, "link", training={field: "escape/god_run"})
        before = snapshot(outside)
        out = _godrun("run", str(path), "--workdir", str(work), "--poll", "0.2", "--quiet", cwd=work)
        assert out.returncode == 2, out.stdout + out.stderr
        status = json.loads((work / "status.json").read_text())
        assert status["phase"] == "Error" and f"--{field}" in status["message"] and "outside" in status["message"]
        assert snapshot(outside) == before

    def test_evaluator_refuses_a_doc_that_is_not_its_own(self, small_corpus: Path, tmp_path: Path) -> None:
        work = _copy(small_corpus, tmp_path)
        before = snapshot(work)
        out = _evaluate(work, "--archive-on-fail", "--analytics-doc", str(PANEL), "--run-dir", "out")
        assert out.returncode == 2 and "--analytics-doc" in out.stderr
        assert snapshot(work) == before


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


# --------------------------------------------------------------------------- text that breaks out of its line


class TestSpecTextIsEscaped:
    def test_failure_doc_escapes_newlines(self, small_corpus: Path, tmp_path: Path) -> None:
        work = _copy(small_corpus, tmp_path)
        evil = "god-run\n## Shipped after all\nimport os"
        out = _evaluate(work, "--archive-on-fail", "--run-dir", "out", "--run-name", evil, "--analytics-doc", "doc.md")
        assert out.returncode == 0, out.stderr
        lines = (work / "doc.md").read_text().splitlines()
        assert not any(line.startswith(("## Shipped", "import os")) for line in lines)
        assert any("god-run\\n## Shipped after all\\nimport os" in line for line in lines)

    def test_audit_log_keeps_one_line_per_entry(self, tmp_path: Path) -> None:
        from godrun.trainer.telemetry import write_audit

        log = tmp_path / "audit.log"
        write_audit(log, {"sha256 init_checkpoint": "ck\nsha256 config: forged", "world\rsize": 1}, "train\x1bstart")
        lines = log.read_text().splitlines()
        assert len(lines) == 3 and not any(line.startswith("sha256 config") for line in lines)
        assert "\x1b" not in log.read_text() and "\r" not in log.read_text()


# --------------------------------------------------------------------------- numbers that mean nothing


def _float_fields() -> list[tuple[str, str]]:
    from godrun.spec import ActB, Gates

    out = [("training", n) for n, f in Recipe.model_fields.items() if f.annotation in (float, "float")]
    out += [("gates", f.alias or n) for n, f in Gates.model_fields.items() if f.annotation in (float, "float")]
    out += [("fallback.actB", f.alias or n) for n, f in ActB.model_fields.items() if f.annotation in (float, "float")]
    return out


class TestNumbersMustMeanSomething:
    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    @pytest.mark.parametrize(("section", "name"), _float_fields())
    def test_every_float_field_refuses_nan_and_inf(self, section: str, name: str, value: float) -> None:
        body: dict[str, Any] = {"image": "x"}
        node = body
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[name] = value
        with pytest.raises(ValidationError) as info:
            GodRunSpec.model_validate(body)
        assert name in str(info.value)

    def test_there_are_float_fields_to_check(self) -> None:
        assert len(_float_fields()) >= 30

    @pytest.mark.parametrize("port", [-1, 65536, 10**6])
    def test_ports_are_ports(self, port: int) -> None:
        with pytest.raises(ValidationError, match="metrics_port"):
            Recipe(metrics_port=port)

    @pytest.mark.parametrize(("field", "value"), [("dip_window_half_nm", 1e9), ("cutout_nm", 1e6), ("jitter_nm", 1e5)])
    def test_windows_are_bounded(self, field: str, value: float) -> None:
        with pytest.raises(ValidationError, match=field):
            Recipe(**{field: value})

    @pytest.mark.parametrize(("flag", "value"), [("--roi-max-nm", "900"), ("--roi-min-nm", "100")])
    def test_evaluator_refuses_roi_outside_the_grid(self, small_corpus: Path, tmp_path: Path, flag, value) -> None:
        work = _copy(small_corpus, tmp_path)
        out = _evaluate(work, flag, value)
        assert out.returncode == 2 and flag in out.stderr and "wavelength grid" in out.stderr, out.stderr

    def test_trainer_refuses_roi_outside_the_grid(self, small_corpus: Path, tmp_path: Path) -> None:
        work = _copy(small_corpus, tmp_path)
        argv = _trainer_argv(_tiny_recipe(deriv_roi_max=950.0), "--roi-max-nm", "950")  # the gates agree
        out = subprocess.run(argv, cwd=work, env=ENV, capture_output=True, text=True)
        assert out.returncode == 2 and "--deriv_roi_max" in out.stderr and "wavelength grid" in out.stderr
        assert not (work / "logs").exists()
