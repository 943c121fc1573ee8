"""Names and paths of the data layout (the seed's; docs/design.md, section 5): one place for every part to import."""

from __future__ import annotations

from pathlib import Path

from godrun.spec import FILM_FEATURES

SPECTRA_DIR = Path("data/spectra_for_fold")
METADATA_DIR = Path("data/metadata")
MANIFEST_ALL = SPECTRA_DIR / "manifest_all.csv"
MANIFEST_TRAIN = SPECTRA_DIR / "manifest_train.csv"
PANEL_MANIFEST = Path("data/validation_panel.csv")
WAVELENGTH_GRID = SPECTRA_DIR / "wavelength_grid.npy"
LAMBDA_STATS = SPECTRA_DIR / "lambda_stats.npz"
DOSE_FEATURES = METADATA_DIR / "dose_features.csv"
DOSE_SAMPLING_WEIGHTS = METADATA_DIR / "dose_sampling_weights.csv"
DOSE_STATS = METADATA_DIR / "dose_stats.json"
TRAIN_SUMMARY_MD = Path("data/train_manifest_summary.md")
GROUP_COUNTS_MD = Path("data/training_group_counts.md")
PANEL_SUMMARY_MD = Path("data/validation_panel_summary.md")
MANIFEST_HASHES = Path("data/manifest_hashes.json")

TREATMENTS = (1, 2, 3, 4, 5, 6)
PRODUCTION_SAMPLES = ("F", "G", "H", "J", "K")  # treatments 1-5
CONTROL_SAMPLES = ("I", "L")  # treatment 6, zero dose
CONTROL_TREATMENT = 6
ANGLES = ("6Oclock", "12Oclock")
POLARITIES = ("pos", "neg")

# The fixed validation panel: group_id -> (spectra at scale 1, role)
PANEL_GROUPS: dict[str, tuple[int, str]] = {
    "treatment_5/sample_H/6Oclock": (300, "hard"),
    "treatment_3/sample_J/12Oclock": (300, "easy"),
    "treatment_6/sample_I/6Oclock": (150, "control"),
}
PRODUCTION_GROUP_SIZE = 200
CONTROL_GROUP_SIZE = 250

MANIFEST_COLUMNS = (
    "spectrum_id",
    "group_id",
    "treatment",
    "sample",
    "angle",
    "polarity",
    "replicate",
    "pair_id",
    "path",
    "reference_path",
    "content_sha256",
    "reference_sha256",
)
DOSE_FEATURE_COLUMNS: tuple[str, ...] = FILM_FEATURES

GRID_MIN_NM, GRID_MAX_NM, GRID_POINTS = 200.0, 800.0, 601


def group_id(treatment: int, sample: str, angle: str) -> str:
    return f"treatment_{treatment}/sample_{sample}/{angle}"
