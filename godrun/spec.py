"""The GodRun resource: spec and status models (pydantic v2), the single source of truth.

The CRD schema (`godrun crd`), the trainer's and evaluator's CLI flags and the reference docs
are generated from these models. Training recipe fields are named exactly like the seed's
flags (`lr_min`, `dip_w_area`, ...) so that `spec.training.<flag>` maps 1:1 onto
`python -m godrun.trainer --<flag>`; every other field uses Kubernetes-style camelCase.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

# The run's words live in godrun.contract.words; re-exported here for the models' readers.
from godrun.contract import files
from godrun.contract.words import CONDITION_TYPES as CONDITION_TYPES
from godrun.contract.words import STEP_CONDITIONS as STEP_CONDITIONS
from godrun.contract.words import TERMINAL_CONDITIONS as TERMINAL_CONDITIONS
from godrun.contract.words import TERMINAL_PHASES as TERMINAL_PHASES
from godrun.contract.words import ConditionStatus, Phase

API_GROUP = "godrun.io"
API_VERSION = "v1alpha1"
KIND = "GodRun"
PLURAL = "godruns"
SINGULAR = "godrun"
SHORT_NAME = "gr"

FilmFeature = Literal[
    "cos_theta",
    "UVA_total",
    "UVB_total",
    "UVA_over_UVB",
    "P_UVA_mW_cm2",
    "P_UVB_mW_cm2",
    "UVA_norm",
    "UVB_norm",
]
FILM_FEATURES: tuple[FilmFeature, ...] = get_args(FilmFeature)

PHASES: tuple[Phase, ...] = tuple(Phase)
GATE_NAMES: tuple[str, ...] = ("aggregate", "tail", "roi", "downstream")

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: let the system pick a free port
# Lengths in nm that the loss and the gates turn into windows: a grid spans 600 nm, so 100 nm is already absurd.
WindowNm = Annotated[float, Field(ge=0.0, le=100.0)]
# A wavelength bound (nm): checked against the data's grid when the data is verified.
WavelengthNm = Annotated[float, Field(ge=0.0, le=100_000.0)]

RUN_PATH_RULE = (
    "Relative to the run volume (spec.data.mountPath); absolute paths, `..` components and control "
    "characters are refused in a GodRun, and a symlink pointing out of the volume is refused when used."
)
RUN_PATH_MAX_LENGTH = 1024
MAX_GPUS_PER_NODE = 64  # more than any node carries: a larger number is a typo that would start that many processes
MAX_SEED = 2**32 - 1  # numpy's legacy seeding takes no more; the epoch order seeds torch with seed * 1_000_003 + epoch
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A Kubernetes resource quantity ("8", "500m", "64Gi", "1e3"): the apimachinery resource.Quantity pattern.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# metav1.Condition's reason: CamelCase, letters first.
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _quantity(value: Any) -> Any:
    """Kubernetes takes `cpu: 8` (an integer) and `cpu: "500m"`; both become the string form here."""
    if isinstance(value, bool | float):
        raise ValueError(f'{value!r} is not a quantity: write an integer or a string such as "500m" or "1.5"')
    return str(value) if isinstance(value, int) else value


# int-or-string with the quantity pattern, as the CRD schema says (x-kubernetes-int-or-string).
Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    Field(pattern=QUANTITY_PATTERN, max_length=64),
    WithJsonSchema({"type": "string", "x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]


class _Camel(BaseModel):
    """Kubernetes-style models: camelCase in YAML/JSON, snake_case in Python; unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)


def run_path(default: str | None, description: str, *, optional: bool = False) -> Any:
    """A path field: its description states the confinement rule the GodRun validator and the CRD enforce."""
    return Field(
        default,
        description=f"{description} {RUN_PATH_RULE}",
        max_length=RUN_PATH_MAX_LENGTH,
        min_length=None if optional else 1,
    )


def run_path_problem(value: str) -> str | None:
    """Why `value` may not name a file or folder inside the run volume (None when it may)."""
    if value == "":
        return "must not be empty"
    if _CONTROL.search(value):
        return "must not contain control characters (newline, tab, ...)"
    if value.startswith("/"):
        return "must be relative to the run volume, not absolute"
    if ".." in PurePosixPath(value).parts:
        return "must not contain `..` (it may not leave the run volume)"
    return None


# --------------------------------------------------------------------------- gate 3's dip detector


class DipDetector(BaseModel):
    """Gate 3's dip detector (godrun.gates.metrics): the ROI it looks in and how it finds and measures dips.

    One model for the three users: the gates judge with `Gates.detector`, the dip loss trains with
    `Recipe.detector`, and `DETECTOR_LINKS` says which recipe and gates fields name each setting, so the GodRun
    validator, the trainer's command line and the CRD's CEL rules refuse the same disagreements. The defaults
    are the seed's; Recipe and Gates take theirs from here."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    roi_min_nm: WavelengthNm = 320.0
    roi_max_nm: WavelengthNm = 500.0
    guard_nm: WindowNm = 10.0
    smooth_nm: WindowNm = 1.0
    min_area: float = Field(5e-4, ge=0)


SEED_DETECTOR = DipDetector()
SUBSPACE_MESSAGE = "subspace_rank must be 0 or < subspace_window, and subspace_window <= sequence_length"


@dataclass(frozen=True)
class DetectorLink:
    """One detector setting as the recipe and the gates name it, and when training uses the recipe's."""

    setting: str  # DipDetector field
    recipe: str  # Recipe field (a seed flag)
    gates: str  # Gates field
    with_dip_loss: bool = False  # only the dip loss uses it
    with_local_baseline: bool = False  # ... and only with the local baseline

    def trained(self, recipe: Recipe) -> bool:
        """Whether training with `recipe` uses this setting (then it must equal the gates')."""
        if self.with_dip_loss and not recipe.dip_loss:
            return False
        return not self.with_local_baseline or recipe.baseline == "local"


DETECTOR_LINKS: tuple[DetectorLink, ...] = (
    DetectorLink("roi_min_nm", "deriv_roi_min", "roi_min_nm"),
    DetectorLink("roi_max_nm", "deriv_roi_max", "roi_max_nm"),
    DetectorLink("min_area", "dip_min_area", "dip_min_area", with_dip_loss=True),
    DetectorLink("smooth_nm", "dip_detect_sigma_nm", "dip_smooth_nm", with_dip_loss=True),
    DetectorLink("guard_nm", "baseline_guard_nm", "dip_guard_nm", with_dip_loss=True, with_local_baseline=True),
)


def detector_rule_groups() -> list[tuple[DetectorLink, ...]]:
    """The links in the two rules the validators state: the ROI (always) and the detector (with the dip loss)."""
    return [tuple(k for k in DETECTOR_LINKS if k.with_dip_loss == dip) for dip in (False, True)]


def detector_rule_message(
    group: tuple[DetectorLink, ...],
    recipe: Recipe | None = None,
    gates: Gates | None = None,
    flags: Callable[[str, str], str] | None = None,
) -> str:
    """`training.a/b must equal gates.aNm/bNm`, with the values when given (the CEL message has none); with
    `flags` ((model, field) -> flag) in command-line flags instead of spec paths."""
    if flags is None:
        lhs = "training." + "/".join(k.recipe for k in group)
        rhs = "gates." + "/".join(to_camel(k.gates) for k in group)
        switch = "training.dip_loss"
    else:
        lhs = "/".join(flags("Recipe", k.recipe) for k in group)
        rhs = "/".join(flags("Gates", k.gates) for k in group)
        switch = flags("Recipe", "dip_loss")
    if recipe is not None and gates is not None:
        lhs += " (" + "/".join(f"{getattr(recipe, k.recipe):g}" for k in group) + ")"
        rhs += " (" + "/".join(f"{getattr(gates, k.gates):g}" for k in group) + ")"
    prefix = f"with {switch}, " if group[0].with_dip_loss else ""
    return f"{prefix}{lhs} must equal {rhs}"


def detector_disagreement(recipe: Recipe, gates: Gates, flags: Callable[[str, str], str] | None = None) -> str | None:
    """Why training with `recipe` would not train what gate 3 with `gates` judges (None when it would): the
    message names the recipe and gates fields (or `flags`, see detector_rule_message) of the rule broken."""
    for group in detector_rule_groups():
        if any(k.trained(recipe) and getattr(recipe, k.recipe) != getattr(gates, k.gates) for k in group):
            return detector_rule_message(group, recipe, gates, flags)
    return None


# --------------------------------------------------------------------------- training recipe


class Recipe(BaseModel):
    """The seed's training recipe: one field per `python -m godrun.trainer` flag, the seed's values as defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: Literal["mamba_tiny_uv"] = Field("mamba_tiny_uv", description="Model architecture to train.")
    train_dir: str = run_path(files.SPECTRA_DIR.as_posix(), "Folder the training manifest's paths are relative to.")
    train_manifest: str = run_path(
        files.MANIFEST_TRAIN.as_posix(), "CSV listing every training spectrum (panel excluded)."
    )
    val_manifest: str = run_path(files.PANEL_MANIFEST.as_posix(), "The fixed validation panel evaluated every epoch.")
    sequence_length: PosInt = Field(601, description="Points per spectrum; must match the wavelength grid.")
    epochs: PosInt = Field(400, description="Maximum number of epochs.")
    early_stop_patience: NonNegInt = Field(
        30, description="Stop after this many epochs without a better panel score (0 disables early stopping)."
    )
    bs: PosInt = Field(600, description="Batch size (spectra per optimiser step, per process).")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate of the cosine schedule (AdamW).")
    lr_min: float = Field(3e-5, ge=0, description="Final learning rate of the cosine schedule; must not exceed lr.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW decoupled weight decay.")
    noise2noise: bool = Field(True, description="Train on noisy targets (Noise2Noise) instead of clean references.")
    noise2noise_pairwise: bool = Field(
        True, description="Pair two noisy replicates of one clean spectrum as input and target."
    )
    val_noise2noise: bool = Field(
        False, description="Use noisy replicates as panel targets (off: panel uses clean references)."
    )
    tta_reverse: bool = Field(False, description="Reverse-time test-time augmentation on the panel (off in the seed).")
    geometry_film: bool = Field(True, description="Condition every block on dose/geometry features through FiLM.")
    film_hidden_dim: PosInt = Field(64, description="Hidden width of the FiLM conditioning MLP.")
    film_features: list[FilmFeature] = Field(
        default_factory=lambda: list(FILM_FEATURES),
        min_length=1,
        description="Dose features (columns of dose_features_csv) fed to FiLM.",
    )
    dose_features_csv: str = run_path(files.DOSE_FEATURES.as_posix(), "Per-group dose features.")
    dose_sampling_weights_csv: str = run_path(
        files.DOSE_SAMPLING_WEIGHTS.as_posix(), "Per-group sampling weights for the training sampler."
    )
    dose_stats_json: str = run_path(files.DOSE_STATS.as_posix(), "Feature means/stds used to standardise FiLM inputs.")
    lambda_weights: str = run_path(
        files.LAMBDA_STATS.as_posix(), "Per-wavelength statistics; its `weights` array weights the loss."
    )
    noise_weight_power: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="Outside the ROI, multiply the loss weights by (noise variance / its median)^power per "
        "wavelength (their total there kept; the ROI keeps its weights), the noise variance estimated from the "
        "training replicate pairs; 0.5 weights by noise std (+2.7 dB and a narrower Noise2Noise gap on the CPU "
        "bench), -1 is inverse-variance, 0 (default) disables.",
    )
    dip_loss: bool = Field(True, description="Add the ROI dip loss (area, equivalent width, centroid, depth).")
    dip_weight: float = Field(1.0, ge=0, description="Weight of the dip loss in the total loss.")
    dip_m: PosInt = Field(6, description="Maximum number of dips per spectrum the dip loss tracks.")
    dip_window_half_nm: float = Field(
        7.0,
        gt=0,
        le=100,
        description="Centroid scale (nm) of the dip loss: a centroid off by this much costs dip_w_centroid (the "
        "term's cap). Dips are measured in gate 3's own windows (its detector run on the reference).",
    )
    dip_min_area: float = Field(
        SEED_DETECTOR.min_area,
        ge=0,
        description="Minimum dip area (baseline-relative, nm units) for a dip to count; with dip_loss it must "
        "equal gates.dipMinArea (the loss trains the dips gate 3 detects).",
    )
    dip_w_area: float = Field(
        2.5,
        ge=0,
        description="Dip loss weight of the area. Gate 3 fails a dip on its area or its depth, so the area, "
        "equivalent-width and depth weights together charge the worse of the two relative errors.",
    )
    dip_w_equivalent_width: float = Field(
        1.5, ge=0, description="Dip loss weight of the equivalent width (added to dip_w_area and dip_w_depth)."
    )
    dip_w_centroid: float = Field(2.0, ge=0, description="Dip loss weight of the centroid term.")
    dip_w_depth: float = Field(
        0.3, ge=0, description="Dip loss weight of the depth (added to dip_w_area and dip_w_equivalent_width)."
    )
    dip_spurious: bool = Field(
        False,
        description="Also charge dips the prediction grows in the ROI where the reference has none (gate 3's "
        "spurious count fails a panel on one): gate 3's detector runs on up to 16 predictions per step at half "
        "dip_min_area, and each dip matching no reference dip costs the area, equivalent-width and depth weights "
        "times e²/(1+e²), e its area in units of dip_min_area. Off by default: on the CPU bench it removed a late "
        "spurious dip but widened the Noise2Noise-vs-clean gap (0.4 -> 0.6-0.9 dB).",
    )
    dip_underfill_factor: float = Field(
        2.0, ge=1.0, description="Extra penalty factor when a predicted dip is shallower/smaller than the target's."
    )
    dip_balance: bool = Field(
        True,
        description="Before the first step, scale the dip loss down (never up) so that on the subspace prior's own "
        "output for the raw training inputs it is no larger than the pixel terms (MSE, derivatives, curvature). "
        "There the dip loss is mostly its floor, the Noise2Noise target's dip-feature noise; in quiet, correlated "
        "noise that floor was ~40x the pixel terms, the steps followed it and the panel PSNR drifted down after "
        "mid-run. With Noise2Noise targets and the prior (subspace_rank > 0) only; the scale is logged.",
    )
    dip_detect_sigma_nm: float = Field(
        SEED_DETECTOR.smooth_nm,
        gt=0,
        le=100,
        description="Gaussian smoothing (nm) before dip detection; with dip_loss it must equal gates.dipSmoothNm.",
    )
    baseline: Literal["local", "none"] = Field("local", description="Baseline model for dip measurement.")
    baseline_guard_nm: WindowNm = Field(
        SEED_DETECTOR.guard_nm,
        description="Guard band (nm) around a dip excluded from the local baseline fit; with dip_loss and the "
        "local baseline it must equal gates.dipGuardNm.",
    )
    derivative_weight: float = Field(0.3, ge=0, description="Weight of the first-derivative loss over the whole grid.")
    deriv_weight_roi: float = Field(0.6, ge=0, description="Extra first-derivative loss weight inside the ROI.")
    deriv_roi_min: WavelengthNm = Field(
        SEED_DETECTOR.roi_min_nm,
        description="ROI lower bound (nm) of the ROI losses; must equal gates.roiMinNm (gate 3's band) and lie "
        "inside the wavelength grid (checked with the data).",
    )
    deriv_roi_max: WavelengthNm = Field(
        SEED_DETECTOR.roi_max_nm,
        description="ROI upper bound (nm); must exceed deriv_roi_min, equal gates.roiMaxNm and lie in the grid.",
    )
    curvature_weight_roi: float = Field(
        0.3, ge=0, description="Weight of the second-derivative (curvature) loss inside the ROI."
    )
    d_model: PosInt = Field(384, description="Mamba model width.")
    n_layers: PosInt = Field(8, description="Number of Mamba blocks.")
    d_state: PosInt = Field(16, description="SSM state size per channel.")
    amp: bool = Field(True, description="Mixed precision autocast (CUDA and CPU).")
    amp_dtype: Literal["bf16", "fp16"] = Field("bf16", description="Autocast dtype when amp is on.")
    ema: bool = Field(
        True, description="Keep an exponential moving average of the weights (used for panel and export)."
    )
    ema_decay: float = Field(0.999, gt=0, lt=1, description="EMA decay per optimiser step.")
    ema_warmup: bool = Field(
        True,
        description="Ramp the EMA decay as min(ema_decay, (1 + n) / (3 + n)) after n steps (the average spans about "
        "the last half of the steps so far): without it the average starts as the initial weights, and early in "
        "training a blend of those and the trained weights scored worse than either (a quiet-noise corpus failed "
        "gate 4 at epoch 2 with the average, passed without).",
    )
    cudnn_benchmark: bool = Field(True, description="Let cuDNN pick the fastest kernels (CUDA only).")
    init_checkpoint: str | None = run_path(
        files.WARM_START,
        "Warm-start checkpoint (shape-checked). Empty/null trains from scratch.",
        optional=True,
    )
    log_dir: str = run_path("logs/god_run", "Where train.log and metrics.csv go.")
    checkpoint_dir: str = run_path("checkpoints/god_run", "Where best/last checkpoints go.")
    audit_log: str = run_path(
        "logs/god_run/auditing_manifest.log", "Audit log (.log) of manifest, config and code hashes."
    )
    # Options beyond the seed's command line. Their defaults keep the seed's behaviour, except two measured
    # departures (docs/noise.md, "The subspace prior"): the subspace prior is on, the wavelength jitter off.
    subspace_rank: NonNegInt = Field(
        8,
        description="Subspace prior after the network (the model is prior(network), in training and in every "
        "prediction): per window of subspace_window points, the network's shape is projected on the training "
        "spectra's first subspace_rank principal components there, and its level and quadratic baseline are "
        "refitted to the measured spectrum (robust, inverse-noise weights; learnt from the raw training rows "
        "before the first step, no references). Removes the low-frequency noise a network keeps "
        "(docs/noise.md); 0 disables.",
    )
    subspace_window: PosInt = Field(
        151, description="Points per window of the subspace prior (windows overlap by 5/6, tapered)."
    )
    dip_evidence_se: float = Field(
        8.0,
        ge=0,
        le=1000,
        description="Every prediction (the panel's, the evaluator's): a dip gate 3's detector finds in it that "
        "the measured spectrum backs by no more than this many standard errors (its deficit below its own "
        "guard-band line, fitted on the prediction's; white-noise error from the point-to-point steps) is filled "
        "up to the prediction's guard-band line. Noise alone backed spurious dips by at most 4.6, real dips were "
        "backed by 9.4 or more (28 corpora, docs/noise.md); 0 disables.",
    )
    jitter_nm: WindowNm = Field(
        0.0,
        description="Train-only random wavelength shift (nm, uniform ±); 0 (default) disables. The seed's plan "
        "has it on; off since the subspace prior: trained through it (each row moved back to the grid's frame "
        "for the prior), a 1 nm jitter cost the quiet skspec-fit profile its downstream gate (docs/noise.md).",
    )
    cutout_prob: float = Field(0.25, ge=0, le=1, description="Train-only probability of zeroing one short window.")
    cutout_nm: WindowNm = Field(8.0, description="Width (nm) of the train-only cutout window.")
    seed: NonNegInt = Field(
        0, le=MAX_SEED, description="Random seed for sampling, augmentation and initialisation (below 2**32)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device to train on.")
    num_workers: NonNegInt = Field(0, description="Data-loader worker processes.")
    metrics_port: Port | None = Field(
        None, description="Serve Prometheus metrics on this port while training (0: any free port)."
    )
    steps_per_epoch: NonNegInt = Field(
        0, description="Optimiser steps per epoch; 0 = one pass over the training manifest."
    )
    calibrator_head: bool = Field(
        False, description="Act B: add a per-wavelength calibrator head on top of the backbone."
    )
    freeze_backbone: bool = Field(False, description="Act B: train only the calibrator head and FiLM.")

    @model_validator(mode="after")
    def _cross_field(self) -> Recipe:
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min ({self.lr_min:g}) must be <= lr ({self.lr:g})")
        if self.deriv_roi_max <= self.deriv_roi_min:
            raise ValueError(f"deriv_roi_max ({self.deriv_roi_max:g}) must be > deriv_roi_min ({self.deriv_roi_min:g})")
        if self.noise2noise_pairwise and not self.noise2noise:
            raise ValueError("noise2noise_pairwise requires noise2noise")
        if len(set(self.film_features)) != len(self.film_features):
            raise ValueError("film_features lists a feature twice")
        if self.freeze_backbone and not self.calibrator_head:
            raise ValueError("freeze_backbone requires calibrator_head")
        if self.subspace_rank and not self.subspace_rank < self.subspace_window <= self.sequence_length:
            raise ValueError(SUBSPACE_MESSAGE)
        return self

    @property
    def detector(self) -> DipDetector:
        """Gate 3's detector as this recipe names it: the one the dip loss locates and measures dips with."""
        return DipDetector(**{k.setting: getattr(self, k.recipe) for k in DETECTOR_LINKS})


# --------------------------------------------------------------------------- cluster side


class Toleration(_Camel):
    """A Kubernetes toleration copied onto the Job pods."""

    key: str | None = Field(None, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect.")
    toleration_seconds: int | None = Field(None, description="For NoExecute: how long the pod stays bound.")


class Resources(_Camel):
    """Compute for the training Job (the evaluation Job uses one GPU when gpus > 0)."""

    gpus: NonNegInt = Field(
        1,
        le=MAX_GPUS_PER_NODE,
        description="GPUs per node (nvidia.com/gpu); >1 runs torchrun with one process per GPU.",
    )
    nodes: PosInt = Field(1, description="Nodes for training; >1 runs an Indexed Job with a headless Service.")
    cpu: Quantity = Field("8", description='CPU request per pod (a Kubernetes quantity: 8, "8", "500m").')
    memory: Quantity = Field("64Gi", description="Memory request and limit per pod (a Kubernetes quantity).")
    shm_size: Quantity = Field("16Gi", description="Size of the memory-backed /dev/shm volume (a Kubernetes quantity).")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector for the Job pods.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations for the Job pods.")
    queue_name: str | None = Field(None, description="Kueue LocalQueue; sets the kueue.x-k8s.io/queue-name label.")
    gpu_resource: str = Field(
        "nvidia.com/gpu",
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)[-A-Za-z0-9_.]{1,63}$",
        description="Extended resource the gpus count is requested as: nvidia.com/gpu, a MIG profile "
        "(nvidia.com/mig-1g.10gb) or amd.com/gpu.",
    )


class DataSpec(_Camel):
    """Where the run's files live: one volume holding data/, checkpoints/, logs/ and outputs."""

    claim_name: str | None = Field(
        None, description="PersistentVolumeClaim mounted at mountPath (none: emptyDir, for tests)."
    )
    mount_path: str = Field(
        "/workspace",
        pattern=r"^/[^\x00-\x1f\x7f]*$",
        max_length=RUN_PATH_MAX_LENGTH,
        description="Mount point (an absolute path, no control characters); the stages run with it as working "
        "directory, and every other path of the spec is relative to it.",
    )
    verify: bool = Field(
        True,
        description="Before training, re-hash every spectrum and clean reference of the training and panel "
        "manifests against their content_sha256/reference_sha256 columns (the trainer refuses overlap with the "
        "panel by group_id, spectrum_id or the manifests' content hashes, and wavelength bounds outside the grid, "
        "either way; the evaluator always re-hashes the panel).",
    )


class PanelSpec(_Camel):
    """The fixed validation panel and the evaluator's inputs (the seed's QA command)."""

    manifest: str = run_path(files.PANEL_MANIFEST.as_posix(), "Panel manifest (750 spectra in the seed).")
    expected_hash: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the panel manifest; evaluation refuses a changed panel."
    )
    root_dir: str = run_path(files.SPECTRA_DIR.as_posix(), "Folder the panel's spectrum paths are relative to.")
    baseline_dir: str = run_path(
        files.SPECTRA_DIR.as_posix(), "Folder of the reference spectra for the downstream proxy."
    )
    metadata: str = run_path(files.DOSE_FEATURES.as_posix(), "Dose features per group.")
    wavelength_grid: str = run_path(files.WAVELENGTH_GRID.as_posix(), "The 601-point grid (nm).")
    output_dir: str = run_path("final_analytics/panel_eval", "Where the evaluator writes its outputs.")
    downstream_script: str | None = run_path(
        "scripts/downstream_proxy_eval.py", "Downstream proxy entry point (gate 4).", optional=True
    )


class Gates(_Camel):
    """Readiness gate thresholds (the four gates: docs/design.md, section 6); the defaults are the seed's."""

    psnr_mean_min: float = Field(18.0, ge=0, le=100, description="Gate 1: minimum mean PSNR (dB).")
    psnr_std_max: float = Field(4.0, ge=0, le=100, description="Gate 1: maximum population std of PSNR (dB).")
    sam_mean_max: float = Field(9.0, ge=0, le=180, description="Gate 1: maximum mean SAM (degrees).")
    tail_psnr_min: float = Field(14.0, ge=0, le=100, description="Gate 2: per-spectrum PSNR floor (dB).")
    tail_sam_max: float = Field(12.0, ge=0, le=180, description="Gate 2: per-spectrum SAM ceiling (degrees).")
    tail_fraction_min: Ratio = Field(0.95, description="Gate 2: minimum fraction of spectra inside both tail bounds.")
    roi_tolerance: Ratio = Field(0.10, description="Gate 3: allowed relative error of dip area and depth.")
    roi_pass_fraction_min: Ratio = Field(0.90, description="Gate 3: minimum fraction of spectra whose dips all pass.")
    spurious_peaks_max: NonNegInt = Field(0, description="Gate 3: maximum total spurious dips over the panel.")
    downstream_margin: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Gate 4: allowed relative excess of the prediction's downstream error over raw+baseline's "
        "(0 = no worse than raw, the seed's rule).",
    )
    roi_min_nm: WavelengthNm = Field(
        SEED_DETECTOR.roi_min_nm,
        description="ROI lower bound (nm) gate 3 judges; must equal training.deriv_roi_min and lie inside the "
        "wavelength grid (checked with the data).",
    )
    roi_max_nm: WavelengthNm = Field(
        SEED_DETECTOR.roi_max_nm,
        description="ROI upper bound (nm); must exceed roiMinNm, equal training.deriv_roi_max and lie in the grid.",
    )
    dip_min_area: float = Field(
        SEED_DETECTOR.min_area,
        ge=0,
        description="Minimum area for the dip detector to report a dip; with training.dip_loss it must equal "
        "training.dip_min_area.",
    )
    dip_guard_nm: WindowNm = Field(
        SEED_DETECTOR.guard_nm,
        description="Guard band (nm) of the dip detector's local baseline; with training.dip_loss and the local "
        "baseline it must equal training.baseline_guard_nm.",
    )
    dip_smooth_nm: WindowNm = Field(
        SEED_DETECTOR.smooth_nm,
        description="Gaussian smoothing (nm) before dip detection; with training.dip_loss it must equal "
        "training.dip_detect_sigma_nm.",
    )

    @model_validator(mode="after")
    def _roi_order(self) -> Gates:
        if self.roi_max_nm <= self.roi_min_nm:
            raise ValueError(f"roiMaxNm ({self.roi_max_nm:g}) must be > roiMinNm ({self.roi_min_nm:g})")
        return self

    @property
    def detector(self) -> DipDetector:
        """Gate 3's detector as these gates name it: the one the panel is judged with."""
        return DipDetector(**{k.setting: getattr(self, k.gates) for k in DETECTOR_LINKS})


class ActB(_Camel):
    """Act B recipe changes (calibrator head + loss rebalance) applied to the child run."""

    calibrator_head: bool = Field(True, description="Add the calibrator head.")
    freeze_backbone: bool = Field(False, description="Train only the calibrator head and FiLM.")
    dip_weight: float = Field(2.0, ge=0, description="Rebalanced dip loss weight.")
    derivative_weight: float = Field(0.15, ge=0, description="Rebalanced global derivative weight.")
    curvature_weight_roi: float = Field(0.6, ge=0, description="Rebalanced ROI curvature weight.")
    epochs: PosInt | None = Field(None, description="Epoch cap for Act B (default: the parent's).")


class Fallback(_Camel):
    """What a failed verdict does (the seed's fallback plan)."""

    archive: bool = Field(True, description="Copy the run's artefacts to <archiveDir>/god_run_failed_YYYYMMDD.")
    archive_dir: str = run_path("artifacts", "Parent folder of failure archives.")
    analytics_doc: str = run_path(
        "final_analytics/reviewing_the_5fold_run.md", "Markdown file (.md) a dated failure section is appended to."
    )
    launch_act_b: bool = Field(
        False, description="Create the child GodRun <name>-actb warm-started from this run's best checkpoint."
    )
    act_b: ActB = Field(default_factory=ActB, description="Act B recipe changes.")


# Labels the controller sets itself (selectors, metrics and Kueue read them): pods cannot override them.
RESERVED_LABEL_PREFIXES = ("godrun.io/", "app.kubernetes.io/", "batch.kubernetes.io/", "kueue.x-k8s.io/")
KEY_SYNTAX_MESSAGE = "keys must be Kubernetes label keys: [prefix/]name, a DNS subdomain prefix, a name of 1-63"
# Job labels a user may set under the reserved prefixes: Kueue's WorkloadPriorityClass.
JOB_LABELS_ALLOWED = ("kueue.x-k8s.io/priority-class",)
RESERVED_LABELS_MESSAGE = (
    "labels keys under godrun.io/, app.kubernetes.io/, batch.kubernetes.io/ and kueue.x-k8s.io/ are set by the "
    "controller and cannot be overridden"
)

DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
# A Kubernetes object left to the API server to validate in full when it checks the Job.
_K8sObject = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})]


class Affinity(_Camel):
    """core/v1 Affinity of the Job pods; each part is checked by the API server when the Job is created."""

    node_affinity: _K8sObject | None = Field(None, description="core/v1 NodeAffinity.")
    pod_affinity: _K8sObject | None = Field(None, description="core/v1 PodAffinity.")
    pod_anti_affinity: _K8sObject | None = Field(None, description="core/v1 PodAntiAffinity.")


class EnvVar(_Camel):
    """An extra environment variable (core/v1 EnvVar); GODRUN_* names are the controller's."""

    name: str = Field(..., min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Name.")
    value: str | None = Field(None, description="Literal value.")
    value_from: _K8sObject | None = Field(None, description="core/v1 EnvVarSource (secretKeyRef, fieldRef, ...).")


RESERVED_VOLUMES = ("data", "dshm", "tmp")
RESERVED_VOLUMES_MESSAGE = "volumes names data, dshm and tmp are the controller's"
RESERVED_ENV_MESSAGE = "env names under GODRUN_ are set by the controller"


def check_labels(labels: dict[str, str], annotations: dict[str, str], allowed: tuple[str, ...] = ()) -> None:
    """Extra labels/annotations as the API server takes them (key syntax, label values), the controller's own
    label keys refused except `allowed`."""
    for kind, mapping in (("labels", labels), ("annotations", annotations)):
        for key in mapping:
            if len(key) > 316 or not re.match(LABEL_KEY_PATTERN, key):
                raise ValueError(f"{kind} {KEY_SYNTAX_MESSAGE} ({key!r})")
    for key, value in labels.items():
        if key.startswith(RESERVED_LABEL_PREFIXES) and key not in allowed:
            raise ValueError(f"{RESERVED_LABELS_MESSAGE} ({key!r})")
        if len(value) > 63 or not re.match(LABEL_VALUE_PATTERN, value):
            raise ValueError(f"labels value {value!r} of {key!r} is not a valid label value")


class PodOverrides(_Camel):
    """Settings copied onto both stages' pods, in the spirit of TrainJob's pod template overrides."""

    image_pull_secrets: list[DnsSubdomain] = Field(
        default_factory=list, max_length=16, description="Names of Secrets to pull the image with."
    )
    service_account_name: DnsSubdomain | None = Field(None, description="ServiceAccount the pods run as.")
    automount_service_account_token: bool = Field(
        False, description="Mount the ServiceAccount token (off: the stages never call the API)."
    )
    priority_class_name: DnsSubdomain | None = Field(None, description="PriorityClass of the pods.")
    runtime_class_name: DnsSubdomain | None = Field(
        None, description="RuntimeClass of the pods, e.g. nvidia when the GPU runtime is not the default."
    )
    affinity: Affinity | None = Field(None, description="Node and pod (anti-)affinity of the pods.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra pod labels (keys under godrun.io/, app.kubernetes.io/, batch.kubernetes.io/ and "
        "kueue.x-k8s.io/ are the controller's).",
    )
    annotations: dict[str, str] = Field(default_factory=dict, max_length=32, description="Extra pod annotations.")
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment variables of both stages' containers."
    )
    volumes: list[_K8sObject] = Field(
        default_factory=list,
        max_length=16,
        description="Extra core/v1 Volumes of the pods (the names data, dshm and tmp are the controller's).",
    )
    volume_mounts: list[_K8sObject] = Field(
        default_factory=list, max_length=16, description="Extra core/v1 VolumeMounts of the stage containers."
    )
    scheduler_name: DnsSubdomain | None = Field(None, description="schedulerName of the pods (e.g. a gang scheduler).")
    topology_spread_constraints: list[_K8sObject] = Field(
        default_factory=list, max_length=8, description="core/v1 TopologySpreadConstraints of the pods."
    )

    @model_validator(mode="after")
    def _keys(self) -> PodOverrides:
        check_labels(self.labels, self.annotations)
        for env in self.env:
            if env.name.startswith("GODRUN_"):
                raise ValueError(f"{RESERVED_ENV_MESSAGE} ({env.name!r})")
        for vol in [*self.volumes, *self.volume_mounts]:
            if not isinstance(vol.get("name"), str) or not vol["name"]:
                raise ValueError("volumes and volumeMounts entries need a name")
        for vol in self.volumes:
            if vol["name"] in RESERVED_VOLUMES:
                raise ValueError(f"{RESERVED_VOLUMES_MESSAGE} ({vol['name']!r})")
        return self


class JobPolicy(_Camel):
    """Retry and lifetime settings of the training and evaluation Jobs."""

    backoff_limit: NonNegInt = Field(3, description="Retries for unexpected failures (exit 2 never retries).")
    train_deadline_seconds: PosInt = Field(7 * 24 * 3600, description="activeDeadlineSeconds of the training Job.")
    evaluate_deadline_seconds: PosInt = Field(4 * 3600, description="activeDeadlineSeconds of the evaluation Job.")
    ttl_seconds_after_finished: NonNegInt | None = Field(
        7 * 24 * 3600, description="ttlSecondsAfterFinished of both Jobs (null keeps them)."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra labels of the Job objects themselves (Kueue reads kueue.x-k8s.io/priority-class, a "
        "WorkloadPriorityClass, there); other keys under the controller's prefixes are refused.",
    )
    annotations: dict[str, str] = Field(default_factory=dict, max_length=32, description="Extra Job annotations.")
    start_timeout_seconds: PosInt = Field(
        1800,
        description="How long a stage's pods may stay unable to start (ImagePullBackOff, ErrImagePull, "
        "Unschedulable, CreateContainerConfigError, no pod created: FailedCreate) before the run gives up: the Job "
        "is deleted and the run ends Error/StartTimeout. Until then the Stalled condition names the pod's reason.",
    )
    run_as_user: PosInt | None = Field(
        1000,
        description="Numeric non-root UID (and GID, fsGroup) the containers run as; null leaves them to the "
        "platform (OpenShift's restricted-v2 assigns one from the namespace's range; elsewhere the image's "
        "numeric USER is used, runAsNonRoot still holds).",
    )

    @model_validator(mode="after")
    def _job_labels(self) -> JobPolicy:
        check_labels(self.labels, self.annotations, allowed=JOB_LABELS_ALLOWED)
        return self


class GodRunSpec(_Camel):
    """A training run that ships only if the fixed panel passes every readiness gate."""

    image: str = Field(..., min_length=1, description="Container image with godrun, torch and (optionally) mamba-ssm.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Image pull policy."
    )
    resources: Resources = Field(default_factory=Resources, description="GPUs, memory, placement and queue.")
    data: DataSpec = Field(default_factory=DataSpec, description="The run volume.")
    training: Recipe = Field(default_factory=Recipe, description="The training recipe (the seed's flags).")
    panel: PanelSpec = Field(default_factory=PanelSpec, description="The validation panel and evaluator inputs.")
    gates: Gates = Field(default_factory=Gates, description="Readiness gate thresholds.")
    fallback: Fallback = Field(default_factory=Fallback, description="What happens when a gate fails.")
    jobs: JobPolicy = Field(default_factory=JobPolicy, description="Job retries, deadlines and security.")
    suspend: bool = Field(
        False,
        description="Stop the running stage (its Job is deleted; the run volume keeps the checkpoints) until set "
        "back to false, when the stage starts again and training resumes from its last checkpoint.",
    )
    pod_overrides: PodOverrides = Field(
        default_factory=PodOverrides, description="Pull secrets, affinity, priority, runtime class, labels."
    )

    @model_validator(mode="after")
    def _shared_volume(self) -> GodRunSpec:
        if self.resources.nodes > 1 and not self.data.claim_name:
            raise ValueError("nodes > 1 requires data.claimName (a ReadWriteMany claim every node mounts)")
        return self

    @model_validator(mode="after")
    def _recipe_matches_gates(self) -> GodRunSpec:
        """The losses must train what gate 3 judges: the detector settings training uses equal the gates'."""
        problem = detector_disagreement(self.training, self.gates)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _paths_inside_run_volume(self) -> GodRunSpec:
        problems = [
            f"{where}: {value!r} {why}"
            for where, value in run_paths(self)
            if value is not None
            and (why := run_path_problem(value)) is not None
            and not (where == "training.init_checkpoint" and value == "")
        ]
        for where, suffix in APPENDED_FILES.items():
            owner, name = where.split(".")
            value = getattr(getattr(self, owner), name)
            if value and not value.endswith(suffix):
                problems.append(f"{where}: {value!r} must be a {suffix} file (the run appends to it)")
        for where in OWN_FOLDERS:
            owner, name = where.split(".")
            value = getattr(getattr(self, owner), name)
            if value and PurePosixPath(value) == PurePosixPath("."):
                problems.append(f"{where}: {value!r} must name a folder inside the run volume, not the volume itself")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# The recipe's input files and folders, and what it writes (presets re-root them for local runs).
RECIPE_DATA_FIELDS: tuple[str, ...] = (
    "train_dir",
    "train_manifest",
    "val_manifest",
    "dose_features_csv",
    "dose_sampling_weights_csv",
    "dose_stats_json",
    "lambda_weights",
)
RECIPE_OUTPUT_FIELDS: tuple[str, ...] = ("log_dir", "checkpoint_dir", "audit_log")
# Every spec field naming a file or folder on the run volume, by model (the CRD adds its CEL rule to each).
RUN_PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "Recipe": (*RECIPE_DATA_FIELDS, "init_checkpoint", *RECIPE_OUTPUT_FIELDS),
    "PanelSpec": (
        "manifest",
        "root_dir",
        "baseline_dir",
        "metadata",
        "wavelength_grid",
        "output_dir",
        "downstream_script",
    ),
    "Fallback": ("archive_dir", "analytics_doc"),
}
# Files the run appends to: only of their own kind, never a manifest, a spectrum or a `.pth`.
APPENDED_FILES = {"training.audit_log": ".log", "fallback.analytics_doc": ".md"}
# Folders the run writes into (and archives): never the volume's root.
OWN_FOLDERS = ("training.checkpoint_dir", "training.log_dir", "panel.output_dir", "fallback.archive_dir")
_RUN_PATH_OWNERS = {"Recipe": "training", "PanelSpec": "panel", "Fallback": "fallback"}


def run_paths(spec: GodRunSpec) -> list[tuple[str, str | None]]:
    """(`training.checkpoint_dir`, value) for every run-volume path of the spec."""
    out = []
    for model, fields in RUN_PATH_FIELDS.items():
        owner = _RUN_PATH_OWNERS[model]
        section = getattr(spec, owner)
        out += [(f"{owner}.{name}", getattr(section, name)) for name in fields]
    return out


# --------------------------------------------------------------------------- status and verdict


class Condition(_Camel):
    """A condition shaped like metav1.Condition."""

    type: str = Field(
        ...,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="DataVerified, Trained, Evaluated, GatesPassed, or the terminal Succeeded / Failed.",
    )
    status: ConditionStatus = Field(..., description="True, False or Unknown.")
    observed_generation: NonNegInt | None = Field(None, description="metadata.generation the condition describes.")
    last_transition_time: datetime = Field(..., description="When status last changed.")
    reason: str = Field(..., min_length=1, max_length=1024, pattern=REASON_PATTERN, description="CamelCase reason.")
    message: str = Field("", max_length=32768, description="Human-readable detail.")


class Progress(_Camel):
    """Training progress read from the trainer's metrics endpoint."""

    epoch: NonNegInt = Field(0, description="Last finished epoch.")
    epochs: NonNegInt = Field(0, description="Epoch cap.")
    best_epoch: NonNegInt | None = Field(None, description="Epoch of the best panel score so far.")
    psnr_mean: float | None = Field(None, description="Latest panel mean PSNR (dB).")
    sam_mean: float | None = Field(None, description="Latest panel mean SAM (degrees).")
    epoch_seconds: float | None = Field(None, ge=0, description="Wall seconds of the last epoch.")
    last_update_time: datetime | None = Field(None, description="When the progress last changed.")
    eta: datetime | None = Field(
        None,
        description="Estimated end of training if it runs to the epoch cap (epochs left x last epoch's seconds); "
        "early stopping ends it sooner.",
    )


class Check(_Camel):
    """One thresholded number inside a gate."""

    metric: str = Field(..., description="Metric name, e.g. psnr_mean.")
    value: float | None = Field(None, description="Measured value (null when not measurable).")
    op: Literal[">=", "<="] = Field(..., description="Comparison against the threshold.")
    threshold: float = Field(..., description="Threshold.")
    passed: bool = Field(..., description="Whether value op threshold holds.")


class GateResult(_Camel):
    """One of the four readiness gates."""

    name: Literal["aggregate", "tail", "roi", "downstream"] = Field(..., description="Gate name.")
    passed: bool = Field(..., description="All checks passed.")
    checks: list[Check] = Field(default_factory=list, description="The gate's thresholded numbers.")


class Lineage(_Camel):
    """Hashes tying a verdict to its inputs and outputs."""

    panel_sha256: str | None = Field(None, description="sha256 of the panel manifest.")
    wavelength_grid_sha256: str | None = Field(
        None, description="sha256 of the wavelength grid the verdict used (pinned by the panel's grid_sha256)."
    )
    metadata_sha256: str | None = Field(
        None, description="sha256 of the dose features the verdict used (rows pinned by the panel's dose_sha256)."
    )
    manifest_sha256: str | None = Field(None, description="sha256 of the training manifest.")
    init_checkpoint_sha256: str | None = Field(None, description="sha256 of the warm-start checkpoint.")
    code_version: str | None = Field(None, description="sha256 of the godrun sources that evaluated.")
    best_checkpoint: str | None = Field(None, description="Path of the top-ranked checkpoint.")
    best_checkpoint_sha256: str | None = Field(None, description="sha256 of the top-ranked checkpoint.")
    scan_backend: str | None = Field(
        None, description="Selective-scan backend that trained the best checkpoint: mamba_ssm (fused CUDA) or torch."
    )


class Verdict(_Camel):
    """The evaluator's compact verdict (< 4 KB): its termination message and `status.panel`."""

    verdict: Literal["pass", "fail"] = Field(..., description="pass only when all four gates pass.")
    psnr_mean: float | None = Field(None, description="Panel mean PSNR (dB) of the best checkpoint.")
    psnr_std: float | None = Field(None, description="Panel PSNR population std (dB).")
    sam_mean: float | None = Field(None, description="Panel mean SAM (degrees).")
    tail_ratio: float | None = Field(None, description="Fraction of spectra inside the tail bounds.")
    roi_ratio: float | None = Field(None, description="Fraction of spectra whose dips all pass.")
    spurious_peaks: int | None = Field(None, description="Total spurious dips on the panel.")
    gates: list[GateResult] = Field(default_factory=list, description="The four gates.")
    failed_gates: list[str] = Field(default_factory=list, description="Names of the gates that failed.")
    checkpoints_evaluated: NonNegInt = Field(0, description="How many checkpoints were ranked.")
    report: str | None = Field(None, description="Path of report.html on the run volume.")
    archive: str | None = Field(None, description="Failure archive folder written by --archive-on-fail (fail only).")
    lineage: Lineage = Field(default_factory=Lineage, description="Hashes of inputs and the best checkpoint.")


class JobRefs(_Camel):
    """Names of the Jobs (or local processes) of the current generation."""

    train: str | None = Field(None, description="Training Job name.")
    evaluate: str | None = Field(None, description="Evaluation Job name.")


class GodRunStatus(_Camel):
    """Observed state of a GodRun, written by the controller through the status subresource."""

    phase: Phase = Field(Phase.PENDING, description="Pending, Training, Evaluating, Shipped, Failed-ActB or Error.")
    reason: str = Field("", description="Why the run is in this phase (CamelCase).")
    message: str = Field("", description="Human-readable detail.")
    observed_generation: NonNegInt = Field(0, description="metadata.generation the status describes.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="DataVerified, Trained, Evaluated, GatesPassed; Succeeded or Failed once the run has ended.",
    )
    progress: Progress = Field(default_factory=Progress, description="Training progress.")
    panel: Verdict | None = Field(None, description="The panel verdict with the four gates.")
    lineage: Lineage = Field(default_factory=Lineage, description="Hashes of inputs and the best checkpoint.")
    jobs: JobRefs = Field(default_factory=JobRefs, description="Jobs of the current generation.")
    restarts: NonNegInt = Field(
        0,
        description="Times a multi-node training Job was recreated whole after a failure (at most jobs.backoffLimit).",
    )
    act_b: str | None = Field(None, description="Name of the Act B child GodRun, once created.")
    archive: str | None = Field(None, description="Failure archive folder, once written.")
    start_time: datetime | None = Field(None, description="When the current generation started.")
    completion_time: datetime | None = Field(None, description="When the current generation reached a final phase.")


# Names derived from a run's name must fit where they go: Kubernetes objects (253 characters), label values (63;
# godrun.core.names hashes longer ones down, as it does Job names) and file names (255 bytes). The longest file
# name derived from it is the local runner's `status-<name>-actb.json`; the Act B child `<name>-actb` is a
# GodRun itself, so a run that launches one leaves room for the suffix.
MAX_FILE_NAME_BYTES = 255
ACT_B_SUFFIX = "-actb"

# Fixed once a GodRun exists (the CRD's transition rules; the local runner refuses the same edits): a new recipe is
# a new GodRun. Within them only EDITABLE_IN_IMMUTABLE's fields may change (Kueue lets a Job that is not admitted
# yet move to another LocalQueue).
IMMUTABLE_SPEC_FIELDS: tuple[str, ...] = ("training", "data", "panel", "gates", "resources")
EDITABLE_IN_IMMUTABLE: dict[str, tuple[str, ...]] = {"resources": ("queue_name",)}
LONGEST_DERIVED_FILE = files.status_file("{name}" + ACT_B_SUFFIX)
MAX_RUN_NAME = MAX_FILE_NAME_BYTES - len(LONGEST_DERIVED_FILE.format(name=""))
MAX_PARENT_NAME = MAX_RUN_NAME - len(ACT_B_SUFFIX)
NAME_PATTERN = DNS_SUBDOMAIN_PATTERN  # what the API server takes: dot-separated labels, each alphanumeric at both ends


class ObjectMeta(BaseModel):
    """The parts of metadata the controller and local runner use."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        ...,
        min_length=1,
        max_length=MAX_RUN_NAME,
        pattern=NAME_PATTERN,
        description=f"DNS subdomain of at most {MAX_RUN_NAME} characters, so that every name derived from it fits.",
    )
    namespace: str | None = None
    generation: int = 1
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class GodRun(BaseModel):
    """A whole GodRun object as `kubectl apply` takes it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["godrun.io/v1alpha1"] = Field("godrun.io/v1alpha1", alias="apiVersion")
    kind: Literal["GodRun"] = "GodRun"
    metadata: ObjectMeta
    spec: GodRunSpec
    status: GodRunStatus | None = None

    @model_validator(mode="after")
    def _room_for_act_b(self) -> GodRun:
        if self.spec.fallback.launch_act_b and len(self.metadata.name) > MAX_PARENT_NAME:
            raise ValueError(
                f"metadata.name: at most {MAX_PARENT_NAME} characters when spec.fallback.launchActB "
                f"(its Act B child <name>{ACT_B_SUFFIX} is a GodRun of at most {MAX_RUN_NAME}), "
                f"got {len(self.metadata.name)}"
            )
        return self


def format_validation_error(exc: Any, prefix: str = "", name: Callable[[str], str] | None = None) -> str:
    """One line per error, each naming the field path (`spec.training.lr_min: ...`); `name` renames its first
    part (a field as the flag that sets it)."""
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if p not in ("function-after",)]
        if parts and name is not None:
            parts[0] = name(parts[0])
        loc = ".".join(parts)
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}")
    return "\n".join(lines)
