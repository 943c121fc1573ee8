"""What the trainer tells the world: train.log, metrics.csv, the audit log, progress and Prometheus metrics."""

from __future__ import annotations

import csv
import errno
import io
import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from godrun.contract import files
from godrun.contract.flags import flag_name
from godrun.contract.gauges import GAUGES, SCAN_BACKEND_INFO, SPECTRA, TrainGauges, gauge_name
from godrun.contract.termination import gauges_message
from godrun.errors import InputError, TransientError
from godrun.fsio import append_text, atomic_write_text, open_append
from godrun.paths import escape_text

METRICS_COLUMNS = (
    "epoch",
    "loss",
    "loss_mse",
    "loss_deriv",
    "loss_deriv_roi",
    "loss_curv_roi",
    "loss_dip",
    "panel_psnr_mean",
    "panel_psnr_std",
    "panel_sam_mean",
    "panel_tail_ratio",
    "panel_roi_ratio",
    "panel_spurious",
    "panel_downstream_err",
    "panel_downstream_err_raw",
    "panel_gates_passed",
    "panel_score",
    "best_epoch",
    "lr",
    "seconds",
    "spectra_per_s",
)


def setup_logger(log_dir: str | Path, enabled: bool = True) -> logging.Logger:
    """Logger writing to <log_dir>/train.log (appending across resumes) and to stderr."""
    logger = logging.getLogger(f"godrun.trainer.{Path(log_dir).resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    if not enabled:
        logger.addHandler(logging.NullHandler())
        return logger
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    fh = _AppendHandler(files.train_log(log_dir))
    fh.setFormatter(fmt)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    logger.addHandler(fh)
    logger.addHandler(sh)
    return logger


class _AppendHandler(logging.StreamHandler):
    """train.log opened confined (godrun.fsio.open_append: no symlink followed, a regular file only)."""

    def __init__(self, path: Path) -> None:
        super().__init__(io.TextIOWrapper(open_append(path), encoding="utf-8", line_buffering=True))

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            super().close()


def close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def write_metrics_csv(path: str | Path, history: Iterable[Mapping[str, Any]]) -> None:
    """Rewrite metrics.csv from the full history (atomic): after a resume it holds exactly the checkpointed epochs."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in METRICS_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_audit(path: str | Path, entries: Mapping[str, Any], event: str) -> None:
    """Append one block of `key: value` lines (hashes of manifests, init checkpoint, config, code)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # one line per entry whatever a spec string holds: a newline in a path cannot forge or split entries
    lines = [f"# {stamp} {escape_text(event)}"] + [f"{escape_text(k)}: {escape_text(v)}" for k, v in entries.items()]
    append_text(path, "\n".join(lines) + "\n")


class Progress:
    """A rich progress bar on a terminal; plain log lines every ~10 % of an epoch otherwise."""

    def __init__(self, logger: logging.Logger, enabled: bool = True) -> None:
        self.logger = logger
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.epochs, self.steps, self.t0 = epoch, epochs, steps, time.perf_counter()
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"epoch {epoch}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4g}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=steps, loss=float("nan"))

    def step(self, i: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=i, loss=loss)
        elif self.enabled and self.steps >= 20 and i % max(self.steps // 10, 1) == 0:
            self.logger.info("epoch %d step %d/%d loss %.4g", self.epoch, i, self.steps, loss)

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class PromMetrics:
    """The trainer's Prometheus metrics (the gauge set of godrun.contract.gauges, read back by
    godrun/core/observe.py) on their own registry."""

    def __init__(self, port: int | None, scan_backend: str = "torch") -> None:
        self.server = None
        self.port: int | None = None
        self.values = TrainGauges()
        if port is None:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        reg = CollectorRegistry()
        self.gauges = {name: Gauge(name, doc, registry=reg) for name, doc in GAUGES.items()}
        for gauge in self.gauges.values():
            gauge.set(math.nan)  # "no value yet", not 0: no fake 0 dB on dashboards or in the status
        backend = Gauge(SCAN_BACKEND_INFO, "Selective-scan backend (label backend).", ["backend"], registry=reg)
        backend.labels(scan_backend).set(1)
        self.spectra = Counter(SPECTRA, "Training spectra processed.", registry=reg)
        self.registry = reg
        try:
            self.server, _thread = start_http_server(port, addr="0.0.0.0", registry=reg)
        except OSError as exc:
            msg = f"{flag_name('metrics_port')} {port}: cannot serve metrics there ({exc.strerror or exc})"
            if exc.errno == errno.EADDRINUSE:  # another process holds it now: a retry may find it free
                raise TransientError(msg + "; retrying may succeed once it is free") from None
            raise InputError(msg) from None  # not ours to bind: the flag is wrong for this machine
        self.port = self.server.server_port

    def update(self, **values: float | None) -> None:
        """Set gauges by TrainGauges field; a name outside the set is refused (a ValidationError: a bug), a
        None or non-finite value leaves the gauge as it was."""
        given = TrainGauges.model_validate(values).model_dump(exclude_unset=True)
        finite = {k: v for k, v in given.items() if v is not None and math.isfinite(v)}
        self.values = self.values.model_copy(update=finite)
        if self.server is None:
            return
        for k, v in finite.items():
            self.gauges[gauge_name(k)].set(v)

    def add_spectra(self, n: int) -> None:
        if self.server is not None:
            self.spectra.inc(n)

    def final_text(self) -> str:
        """The gauges' last values as the trainer's termination message (godrun.contract.termination): how the
        controller learns the final progress of a run too short to be polled ("" when not serving)."""
        return "" if self.server is None else gauges_message(self.values)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
