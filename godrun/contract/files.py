"""The layout of every path and file name a run uses, each spelled once.

- The data layout (the seed's; docs/design.md, section 5): the corpus under data/, its manifests, grid and
  dose metadata. godrun/data/layout.py re-exports these paths next to the corpus' other constants.
- What the trainer writes: checkpoints `<checkpoint_dir>/<model>_best.pt` and `_last.pt`, its per-epoch
  `metrics.csv` and `train.log` under its log folder.
- What the evaluator writes under its output folder (report, gates, hashes, per-spectrum and per-group tables),
  the marker of a failure archive, and what a failed run archives (`archived_paths`: one rule for the GodRun's
  evaluation command and the evaluator's own default).
- The termination message: the file Kubernetes reads back, or the one the local runner names in
  $GODRUN_TERMINATION_LOG.
- The local runner's state under `<workdir>/.godrun/<run>/` (`RunFiles`) and the status files it writes.

Only the standard library: every package (the torch-free controller included) may import it.
tests/test_vocabulary.py fails when one of these names is typed as a literal anywhere else under godrun/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

# --------------------------------------------------------------------------- the data layout

DATA_DIR: Final = "data"
SPECTRA_DIR_NAME: Final = "spectra_for_fold"
METADATA_DIR_NAME: Final = "metadata"
MANIFEST_ALL_NAME: Final = "manifest_all.csv"
MANIFEST_TRAIN_NAME: Final = "manifest_train.csv"
PANEL_MANIFEST_NAME: Final = "validation_panel.csv"
WAVELENGTH_GRID_NAME: Final = "wavelength_grid.npy"
LAMBDA_STATS_NAME: Final = "lambda_stats.npz"
DOSE_FEATURES_NAME: Final = "dose_features.csv"
DOSE_SAMPLING_WEIGHTS_NAME: Final = "dose_sampling_weights.csv"
DOSE_STATS_NAME: Final = "dose_stats.json"
TRAIN_SUMMARY_NAME: Final = "train_manifest_summary.md"
GROUP_COUNTS_NAME: Final = "training_group_counts.md"
PANEL_SUMMARY_NAME: Final = "validation_panel_summary.md"
MANIFEST_HASHES_NAME: Final = "manifest_hashes.json"

SPECTRA_DIR: Final = Path(DATA_DIR) / SPECTRA_DIR_NAME
METADATA_DIR: Final = Path(DATA_DIR) / METADATA_DIR_NAME
MANIFEST_ALL: Final = SPECTRA_DIR / MANIFEST_ALL_NAME
MANIFEST_TRAIN: Final = SPECTRA_DIR / MANIFEST_TRAIN_NAME
PANEL_MANIFEST: Final = Path(DATA_DIR) / PANEL_MANIFEST_NAME
WAVELENGTH_GRID: Final = SPECTRA_DIR / WAVELENGTH_GRID_NAME
LAMBDA_STATS: Final = SPECTRA_DIR / LAMBDA_STATS_NAME
DOSE_FEATURES: Final = METADATA_DIR / DOSE_FEATURES_NAME
DOSE_SAMPLING_WEIGHTS: Final = METADATA_DIR / DOSE_SAMPLING_WEIGHTS_NAME
DOSE_STATS: Final = METADATA_DIR / DOSE_STATS_NAME
TRAIN_SUMMARY_MD: Final = Path(DATA_DIR) / TRAIN_SUMMARY_NAME
GROUP_COUNTS_MD: Final = Path(DATA_DIR) / GROUP_COUNTS_NAME
PANEL_SUMMARY_MD: Final = Path(DATA_DIR) / PANEL_SUMMARY_NAME
MANIFEST_HASHES: Final = Path(DATA_DIR) / MANIFEST_HASHES_NAME
IMPORT_LINEAGE: Final = Path(DATA_DIR) / "import_lineage.json"  # `godrun data import`
IMPORT_AUDIT: Final = Path(DATA_DIR) / "import_audit.md"
ADOPT_AUDIT: Final = Path(DATA_DIR) / "adopt_audit.md"  # `godrun data adopt`


def wavelength_grid(train_dir: str | Path) -> Path:
    """The grid beside a training manifest's spectra (`--train_dir`)."""
    return Path(train_dir) / WAVELENGTH_GRID_NAME


def training_manifest(root_dir: str | Path) -> Path:
    return Path(root_dir) / MANIFEST_TRAIN_NAME


# --------------------------------------------------------------------------- what the trainer writes

CHECKPOINT_SUFFIX: Final = ".pt"
BEST_NAME: Final = "{model}_best" + CHECKPOINT_SUFFIX
LAST_NAME: Final = "{model}_last" + CHECKPOINT_SUFFIX
CHECKPOINTS_WRITTEN: Final = "checkpoints_written.json"  # the trainer's record of its checkpoints' sha256
METRICS_CSV: Final = "metrics.csv"
TRAIN_LOG: Final = "train.log"
AUDIT_LOG_NAME: Final = "auditing_manifest.log"
# The seed's log folder of a checkpoint folder: logs/<its name> (the evaluator's default and its report's curves).
SEED_LOG_ROOT: Final = "logs"


# `godrun folds`: the Track_H group folds' manifests and checkpoints; fold 02's best is the seed's warm start.
FOLD_DIR: Final = Path(DATA_DIR) / "folds"
PROD_DIR: Final = Path("checkpoints") / "prod"
_SEED_MODEL = "mamba_tiny_uv"  # Recipe.model (godrun.spec, which imports this module)


def fold_name(k: int) -> str:
    return f"Track_H_fold_{k:02d}"


def fold_checkpoint_dir(k: int) -> Path:
    return PROD_DIR / fold_name(k)


def best_checkpoint(checkpoint_dir: str, model: str) -> str:
    """`<checkpoint_dir>/<model>_best.pt`, as a run-volume path (the Act B warm start, the default lineage)."""
    return f"{checkpoint_dir}/{BEST_NAME.format(model=model)}"


WARM_START: Final = best_checkpoint(fold_checkpoint_dir(2).as_posix(), _SEED_MODEL)


def metrics_csv(log_dir: str | Path) -> Path:
    return Path(log_dir) / METRICS_CSV


def train_log(log_dir: str | Path) -> Path:
    return Path(log_dir) / TRAIN_LOG


def audit_log(log_dir: str) -> str:
    return f"{log_dir}/{AUDIT_LOG_NAME}"


def seed_log_dir(checkpoint_dir: str | Path) -> Path:
    """The seed's log folder for a checkpoint folder: logs/<checkpoint folder name>."""
    return Path(SEED_LOG_ROOT) / Path(checkpoint_dir).name


# --------------------------------------------------------------------------- what the evaluator writes

REPORT_HTML: Final = "report.html"
GATES_JSON: Final = "gates.json"
HASHES_JSON: Final = "hashes.json"
PER_SPECTRUM_CSV: Final = "per_spectrum_metrics.csv"
PER_GROUP_CSV: Final = "per_group_summary.csv"
DOWNSTREAM_CSV: Final = "downstream_proxy.csv"
ARCHIVE_MARKER: Final = ".godrun-archive.json"


def archived_paths(checkpoint_dir: str | None, log_dir: str | None, output_dir: str) -> list[str]:
    """What a failed run archives, in this order: its checkpoints, its training logs and the evaluation outputs
    (None: that part is not archived, e.g. no checkpoints for an external denoiser)."""
    return [p for p in (checkpoint_dir, log_dir, output_dir) if p is not None]


# --------------------------------------------------------------------------- the termination message

# A Job container's termination message: the file Kubernetes reads back into the pod status (at most 4096 bytes).
K8S_TERMINATION_LOG: Final = "/dev/termination-log"
# The local runner's stand-in for it: the file it names in this variable.
TERMINATION_LOG_ENV: Final = "GODRUN_TERMINATION_LOG"


# --------------------------------------------------------------------------- the local runner's state

STATE_ROOT: Final = ".godrun"
RUNNER_LOCK: Final = "runner.lock"
STATE_JSON: Final = "state.json"
STATUS_JSON: Final = "status.json"
EVENTS_LOG: Final = "events.log"
ACT_B_RECORD: Final = "act_b.json"
JOBS_DIR: Final = "jobs"
JOB_RECORD: Final = "job.json"
OUTPUT_LOG: Final = "output.log"
TERMINATION_LOG: Final = "termination-log"
STATUS_FILE: Final = "status-{name}.json"
MANIFEST_SUFFIX: Final = ".yaml"


def status_file(name: str) -> str:
    """The status file the local runner writes beside a manifest it ran for `name` (an Act B child, a demo)."""
    return STATUS_FILE.format(name=name)


def manifest_file(name: str) -> str:
    """The GodRun manifest the local runner writes for a run it creates (the Act B child)."""
    return f"{name}{MANIFEST_SUFFIX}"


def runner_lock(workdir: Path) -> Path:
    return workdir / STATE_ROOT / RUNNER_LOCK


def state_root(workdir: Path) -> Path:
    return workdir / STATE_ROOT


@dataclass(frozen=True)
class RunFiles:
    """The local runner's files of one run: `<workdir>/.godrun/<run>/`."""

    dir: Path

    @classmethod
    def of(cls, workdir: Path, run: str) -> RunFiles:
        return cls(workdir / STATE_ROOT / run)

    @property
    def state(self) -> Path:
        """Generation, spec hashes and output folders of the run (the local stand-in for metadata.generation)."""
        return self.dir / STATE_JSON

    @property
    def status(self) -> Path:
        """The run's own copy of its status (the one a re-run resumes from)."""
        return self.dir / STATUS_JSON

    @property
    def events(self) -> Path:
        return self.dir / EVENTS_LOG

    @property
    def act_b_record(self) -> Path:
        """The Act B child manifest's sha256, as the parent wrote it."""
        return self.dir / ACT_B_RECORD

    def job(self, job: str) -> JobFiles:
        return JobFiles(self.dir / JOBS_DIR / job)


@dataclass(frozen=True)
class JobFiles:
    """One stage's process record: the local runner's stand-in for a Job and its pod."""

    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / JOB_RECORD

    @property
    def output(self) -> Path:
        return self.dir / OUTPUT_LOG

    @property
    def termination_log(self) -> Path:
        return self.dir / TERMINATION_LOG
