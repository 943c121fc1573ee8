"""The exact argument lists the stages run with, built from a GodRunSpec, and the launcher around them.

`decide()` puts `trainer_argv` / `evaluator_argv` in its CreateJob actions; both executors wrap that argv
with `launch_command` (one process, torchrun on one node, or torchrun across the pods of an Indexed Job):
the Kubernetes Jobs put the result in `command`, the local runner runs it as a process with the run volume
as working directory. Torch-free (the controller image has no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from godrun.contract import files
from godrun.contract.flags import gate_argv, recipe_to_argv
from godrun.spec import GodRunSpec

PYTHON = "python"
TRAINER_MODULE = "godrun.trainer"
# torch's launcher run by a module of ours, so that a worker's exit 2 (bad input) stays 2 (torchrun exits 1).
LAUNCHER_MODULE = "godrun.trainer.launch"
EVALUATOR_MODULE = "godrun.evaluator"
# Kubernetes expands $(VAR) in a container command: each pod of an Indexed Job gets its own rank.
NODE_RANK_FROM_INDEX = "$(JOB_COMPLETION_INDEX)"


@dataclass(frozen=True)
class Rendezvous:
    """Where the processes of a multi-node run meet: rank 0's stable DNS name and port."""

    host: str
    port: int


def launch_command(
    argv: Sequence[str], *, gpus: int, nodes: int = 1, rendezvous: Rendezvous | None = None
) -> list[str]:
    """`argv` (`python -m MODULE FLAGS...`) as run on one node with `gpus` GPUs, `nodes` nodes in all.

    One process when there is at most one GPU on one node; otherwise torch's launcher (through
    godrun.trainer.launch, which keeps a worker's exit code) with one process per GPU, standalone on one node
    or, across nodes, with the node rank taken from the Indexed Job's completion index.
    """
    if nodes == 1 and gpus <= 1:
        return list(argv)
    if len(argv) < 3 or argv[0] != PYTHON or argv[1] != "-m":
        raise ValueError(f"torchrun launches a module: expected `python -m MODULE ...`, got {list(argv)[:3]}")
    launcher = [PYTHON, "-m", LAUNCHER_MODULE, f"--nproc_per_node={max(gpus, 1)}"]
    if nodes > 1:
        if rendezvous is None:
            raise ValueError(f"{nodes} nodes need a rendezvous address")
        launcher += [
            f"--nnodes={nodes}",
            f"--node_rank={NODE_RANK_FROM_INDEX}",
            f"--master_addr={rendezvous.host}",
            f"--master_port={rendezvous.port}",
        ]
    else:
        launcher += ["--standalone", "--nnodes=1"]
    return [*launcher, *argv[1:]]


def with_option(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """`argv` with `flag value` set: replaced where present, appended otherwise."""
    out = list(argv)
    if flag in out and out.index(flag) + 1 < len(out):
        out[out.index(flag) + 1] = value
        return out
    return [*out, flag, value]


def trainer_argv(spec: GodRunSpec) -> list[str]:
    """`python -m godrun.trainer --model mamba_tiny_uv --train_dir ...`: the seed's flags (Recipe order), then
    data verification and the GodRun's gates, so the trainer picks its best checkpoint and stops early by the
    rules the evaluator will judge with."""
    verify = "--verify-data" if spec.data.verify else "--no-verify-data"
    return [PYTHON, "-m", TRAINER_MODULE, *recipe_to_argv(spec.training), verify, *gate_argv(spec.gates)]


def archived_paths(spec: GodRunSpec) -> list[str]:
    """What a failed run archives (files.archived_paths): its checkpoints, its logs and the evaluation outputs."""
    return files.archived_paths(spec.training.checkpoint_dir, spec.training.log_dir, spec.panel.output_dir)


def evaluator_argv(spec: GodRunSpec, run_name: str) -> list[str]:
    """The seed's panel QA command (`python -m godrun.evaluator --checkpoint-dir ...`) plus gates and fallback."""
    panel = spec.panel
    argv = [
        PYTHON,
        "-m",
        EVALUATOR_MODULE,
        "--checkpoint-dir",
        spec.training.checkpoint_dir,
        "--written-only",
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
