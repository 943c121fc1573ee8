"""The exact argument lists the stages run with, built from a GodRunSpec (DESIGN.md §4).

Both executors use them: the Kubernetes Jobs put them in `command`, the local runner runs them as
processes with the run volume as working directory. Torch-free (the controller image has no torch).
"""

from __future__ import annotations

from godrun.gates.flags import gate_argv
from godrun.spec import GodRunSpec
from godrun.trainer.flags import recipe_to_argv

PYTHON = "python"
TRAINER_MODULE = "godrun.trainer"
EVALUATOR_MODULE = "godrun.evaluator"


def trainer_flags(spec: GodRunSpec, *, metrics_port: int | None = None) -> list[str]:
    """The seed's recipe flags (Recipe order), then data verification and the GodRun's gates.

    `metrics_port` overrides the recipe's. The gates make the trainer pick its best checkpoint and stop
    early by the rules the evaluator will judge with.
    """
    recipe = spec.training
    if metrics_port is not None:
        recipe = recipe.model_copy(update={"metrics_port": metrics_port})
    verify = "--verify-data" if spec.data.verify else "--no-verify-data"
    return [*recipe_to_argv(recipe), verify, *gate_argv(spec.gates)]


def trainer_argv(spec: GodRunSpec, *, metrics_port: int | None = None) -> list[str]:
    """`python -m godrun.trainer --model mamba_tiny_uv --train_dir ...` for one process."""
    return [PYTHON, "-m", TRAINER_MODULE, *trainer_flags(spec, metrics_port=metrics_port)]


def archived_paths(spec: GodRunSpec) -> list[str]:
    """What a failed run archives: its checkpoints, its logs and the panel evaluation outputs."""
    return [spec.training.checkpoint_dir, spec.training.log_dir, spec.panel.output_dir]


def evaluator_argv(spec: GodRunSpec, run_name: str) -> list[str]:
    """The seed's panel QA command (`python -m godrun.evaluator --checkpoint-dir ...`) plus gates and fallback."""
    panel = spec.panel
    argv = [
        PYTHON,
        "-m",
        EVALUATOR_MODULE,
        "--checkpoint-dir",
        spec.training.checkpoint_dir,
        "--manifest",
        panel.manifest,
        "--root-dir",
        panel.root_dir,
        "--baseline-dir",
        panel.baseline_dir,
        "--metadata",
        panel.metadata,
        "--wavelength-grid",
        panel.wavelength_grid,
        "--output-dir",
        panel.output_dir,
    ]
    if panel.downstream_script:
        argv += ["--downstream-script", panel.downstream_script]
    if panel.expected_hash:
        argv += ["--expected-hash", panel.expected_hash]
    argv += gate_argv(spec.gates)
    argv += ["--run-name", run_name]
    if spec.fallback.archive:
        argv += ["--archive-on-fail", "--run-dir", *archived_paths(spec), "--archive-dir", spec.fallback.archive_dir]
    argv += ["--analytics-doc", spec.fallback.analytics_doc]
    return argv
