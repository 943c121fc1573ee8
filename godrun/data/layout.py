"""The corpus' layout (the seed's; docs/design.md, section 5): treatments, samples, the panel's groups, manifest
columns and the grid. Its paths and file names are godrun.contract.files' (re-exported here for the data code)."""

from __future__ import annotations

from godrun.contract.files import (  # noqa: F401  (re-exported: the data code imports its paths from here)
    DOSE_FEATURES,
    DOSE_SAMPLING_WEIGHTS,
    DOSE_STATS,
    GROUP_COUNTS_MD,
    LAMBDA_STATS,
    MANIFEST_ALL,
    MANIFEST_HASHES,
    MANIFEST_TRAIN,
    METADATA_DIR,
    PANEL_MANIFEST,
    PANEL_SUMMARY_MD,
    SPECTRA_DIR,
    TRAIN_SUMMARY_MD,
    WAVELENGTH_GRID,
)
from godrun.spec import FILM_FEATURES

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
