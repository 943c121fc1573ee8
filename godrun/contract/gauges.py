"""The trainer's Prometheus gauges: one definition of the set, its names and what the executors read from it.

Each field of `TrainGauges` is the gauge `godrun_train_<field>` (its description is the gauge's help). The
trainer serves them (godrun/trainer/telemetry.py) and writes their last values as its termination message
(godrun.contract.termination); godrun/core/observe.py reads the fields in `PROGRESS_FIELDS` back into the
run's status.progress, from the live endpoint or from that message.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PREFIX = "godrun_train_"


class TrainGauges(BaseModel):
    """The gauges' values (None: no value yet, exposed as NaN rather than a fake 0)."""

    model_config = ConfigDict(extra="forbid")

    epoch: float | None = Field(None, description="Last finished epoch.")
    epochs: float | None = Field(None, description="Epoch cap.")
    loss: float | None = Field(None, description="Mean training loss of the last epoch.")
    panel_psnr_mean_decibels: float | None = Field(None, description="Panel mean PSNR of the last epoch (dB).")
    panel_sam_mean_degrees: float | None = Field(None, description="Panel mean SAM of the last epoch (degrees).")
    best_epoch: float | None = Field(None, description="Epoch of the best panel score so far.")
    epoch_seconds: float | None = Field(None, description="Wall seconds of the last epoch.")
    lr: float | None = Field(None, description="Current learning rate.")


def gauge_name(field: str) -> str:
    return PREFIX + field


# gauge name -> help, for every field of TrainGauges
GAUGES: dict[str, str] = {gauge_name(k): f.description or k for k, f in TrainGauges.model_fields.items()}
SCAN_BACKEND_INFO = gauge_name("scan_backend_info")  # 1, labelled with the selective-scan backend
SPECTRA = gauge_name("spectra")  # counter (exposed as ..._total): training spectra processed

# TrainGauges field -> the godrun.spec.Progress field it feeds
PROGRESS_FIELDS: dict[str, str] = {
    "epoch": "epoch",
    "epochs": "epochs",
    "best_epoch": "best_epoch",
    "panel_psnr_mean_decibels": "psnr_mean",
    "panel_sam_mean_degrees": "sam_mean",
    "epoch_seconds": "epoch_seconds",
}
# gauge name -> Progress field: what the executors read from the trainer's exposition
PROGRESS_GAUGES: dict[str, str] = {gauge_name(k): v for k, v in PROGRESS_FIELDS.items()}
