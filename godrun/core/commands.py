"""The exact argument lists the stages run with, built from a GodRunSpec (DESIGN.md §4).

Both executors use them: the Kubernetes Jobs put them in `command`, the local runner runs them as
processes with the run volume as working directory. Torch-free (the controller image has no torch).
"""

from __future__ import annotations

from godrun.spec import GodRunSpec, Recipe
from godrun.trainer.flags import recipe_to_argv

PYTHON = "python"
TRAINER_MODULE = "godrun.trainer"
# torch's launcher run by a module of ours, so that a worker's exit 2 (bad input) stays 2 (torchrun exits 1).
LAUNCHER_MODULE = "godrun.trainer.launch"
EVALUATOR_MODULE = "godrun.evaluator"


def trainer_flags(recipe: Recipe, *, metrics_port: int | None = None) -> list[str]:
    """The trainer's flags (the seed's, in Recipe order); `metrics_port` overrides the recipe's."""
    if metrics_port is not None:
        recipe = recipe.model_copy(update={"metrics_port": metrics_port})
    return recipe_to_argv(recipe)


def trainer_argv(spec: GodRunSpec, *, metrics_port: int | None = None) -> list[str]:
    """`python -m godrun.trainer --model mamba_tiny_uv --train_dir ...` for one process."""
    return [PYTHON, "-m", TRAINER_MODULE, *trainer_flags(spec.training, metrics_port=metrics_port)]


def launcher_argv(
    recipe: Recipe,
    *,
    gpus: int,
    nodes: int = 1,
    rendezvous: tuple[str, int] | None = None,
    node_rank: str = "0",
    metrics_port: int | None = None,
) -> list[str]:
    """The trainer for `gpus` processes per node on `nodes` nodes: one plain process when that is 1x1, else
    `python -m godrun.trainer.launch <torchrun options> -m godrun.trainer <flags>`."""
    flags = trainer_flags(recipe, metrics_port=metrics_port)
    if nodes == 1 and gpus <= 1:
        return [PYTHON, "-m", TRAINER_MODULE, *flags]
    run = [PYTHON, "-m", LAUNCHER_MODULE, f"--nproc_per_node={max(gpus, 1)}"]
    if nodes > 1:
        if rendezvous is None:
            raise ValueError("nodes > 1 needs the rendezvous address (rank 0's host, port)")
        host, port = rendezvous
        run += [f"--nnodes={nodes}", f"--node_rank={node_rank}", f"--master_addr={host}", f"--master_port={port}"]
    else:
        run += ["--standalone", "--nnodes=1"]
    return [*run, "-m", TRAINER_MODULE, *flags]


def _num(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def gate_flags(spec: GodRunSpec) -> list[str]:
    """`--psnr-mean-min 18.0 ...`: one flag per Gates field, kebab-case of the field name."""
    argv: list[str] = []
    for name in type(spec.gates).model_fields:
        argv += [f"--{name.replace('_', '-')}", _num(getattr(spec.gates, name))]
    return argv


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
    argv += gate_flags(spec)
    argv += ["--run-name", run_name]
    if spec.fallback.archive:
        argv += ["--archive-on-fail", "--run-dir", *archived_paths(spec), "--archive-dir", spec.fallback.archive_dir]
    argv += ["--analytics-doc", spec.fallback.analytics_doc]
    return argv
