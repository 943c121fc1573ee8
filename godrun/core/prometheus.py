"""The controller's Prometheus metrics (also served by `godrun run --metrics-port`), on their own registry.

Per-run series are labelled `namespace`, `godrun`; `forget()` removes every series of a deleted GodRun so
the exposition does not grow with history.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from godrun.contract.words import ConditionStatus, ConditionType, Reason
from godrun.spec import GATE_NAMES, PHASES, TERMINAL_PHASES, GodRunStatus

RUN_LABELS = ("namespace", "godrun")
PANEL_FIELDS = {  # metric name -> Verdict attribute
    "godrun_panel_psnr_mean_decibels": "psnr_mean",
    "godrun_panel_psnr_std_decibels": "psnr_std",
    "godrun_panel_sam_mean_degrees": "sam_mean",
    "godrun_panel_tail_pass_ratio": "tail_ratio",
    "godrun_panel_roi_pass_ratio": "roi_ratio",
    "godrun_panel_spurious_peaks": "spurious_peaks",
}
PANEL_HELP = {
    "godrun_panel_psnr_mean_decibels": "Panel mean PSNR of the best checkpoint (dB).",
    "godrun_panel_psnr_std_decibels": "Panel PSNR population standard deviation (dB).",
    "godrun_panel_sam_mean_degrees": "Panel mean spectral angle (degrees).",
    "godrun_panel_tail_pass_ratio": "Fraction of panel spectra inside both tail bounds.",
    "godrun_panel_roi_pass_ratio": "Fraction of panel spectra whose ROI dips all pass.",
    "godrun_panel_spurious_peaks": "Total spurious dips on the panel.",
}
PROGRESS_FIELDS = {
    "godrun_run_progress_epoch": ("epoch", "Last finished training epoch."),
    "godrun_run_progress_epochs": ("epochs", "Training epoch cap."),
    "godrun_run_progress_psnr_mean_decibels": ("psnr_mean", "Latest per-epoch panel mean PSNR while training (dB)."),
    "godrun_run_progress_sam_mean_degrees": ("sam_mean", "Latest per-epoch panel mean SAM while training (degrees)."),
}


# Reasons a run waits on purpose: Kueue has not admitted its Job yet, or spec.suspend is set.
HELD_REASONS = frozenset({Reason.AWAITING_ADMISSION, Reason.SUSPENDED})
FINISHED_PHASES = tuple(p for p in PHASES if p in TERMINAL_PHASES)


class FinishCounter(Collector):
    """`godrun_runs_finished_total`, whose every series is first exposed at 0.

    The alerts use increase(), which needs a sample before the step. A run already final when the controller
    first sees it (Error/InvalidSpec, JobRejected, a run that ended while the controller was down) is counted
    in the same reconcile that creates its series: a plain counter would be born at 1 and increase() would
    never see the step. Here a series reads 0 on its first collection (scrape) and its count from then on.
    """

    NAME = "godrun_runs_finished"
    HELP = "Runs that reached a final phase (alert on increase(): once per run, not for as long as it stays failed)."

    def __init__(self, registry: CollectorRegistry) -> None:
        self._series: dict[tuple[str, ...], list[float | bool]] = {}  # labels -> [count, collected before]
        self._lock = threading.Lock()
        registry.register(self)

    def touch(self, *labels: str) -> None:
        with self._lock:
            self._series.setdefault(labels, [0.0, False])

    def inc(self, *labels: str) -> None:
        with self._lock:
            self._series.setdefault(labels, [0.0, False])[0] += 1

    def remove(self, *labels: str) -> None:
        with self._lock:
            self._series.pop(labels, None)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.NAME, self.HELP, labels=(*RUN_LABELS, "phase"))

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=(*RUN_LABELS, "phase"))
        with self._lock:
            for labels, entry in sorted(self._series.items()):
                family.add_metric(list(labels), float(entry[0]) if entry[1] else 0.0)
                entry[1] = True
        yield family


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.panel = {name: Gauge(name, PANEL_HELP[name], RUN_LABELS, registry=r) for name in PANEL_FIELDS}
        self.progress = {
            name: Gauge(name, help_, RUN_LABELS, registry=r) for name, (_, help_) in PROGRESS_FIELDS.items()
        }
        self.gate_passed = Gauge(
            "godrun_gate_passed",
            "1 when the readiness gate passed, 0 when it failed.",
            (*RUN_LABELS, "gate"),
            registry=r,
        )
        self.run_phase = Gauge(
            "godrun_run_phase", "1 for the run's current phase, 0 for the others.", (*RUN_LABELS, "phase"), registry=r
        )
        self.reconcile_duration = Histogram(
            "godrun_reconcile_duration_seconds",
            "Time to reconcile one GodRun.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.reconcile_errors = Counter("godrun_reconcile_errors_total", "Reconciles that raised.", registry=r)
        self.leader = Gauge("godrun_controller_leader", "1 while this replica holds the leader lease.", registry=r)
        self.finished = FinishCounter(r)
        self.held = Gauge(
            "godrun_run_held",
            "1 while the run waits on purpose (Kueue admission or spec.suspend), 0 otherwise.",
            RUN_LABELS,
            registry=r,
        )
        self.stalled = Gauge(
            "godrun_run_stalled",
            "1 while a stage's pods cannot start (the Stalled condition: ImagePullBackOff, Unschedulable, ...).",
            RUN_LABELS,
            registry=r,
        )
        self.progress_time = Gauge(
            "godrun_run_progress_last_update_timestamp_seconds",
            "When the run last showed training progress (status.progress.lastUpdateTime, else its start), Unix s.",
            RUN_LABELS,
            registry=r,
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=r)

    def observe(self, namespace: str, name: str, status: GodRunStatus, before: GodRunStatus | None = None) -> None:
        """Set every per-run series from the status just written (`before`: the status it replaced)."""
        self._count_finish(namespace, name, status, before)
        self.held.labels(namespace, name).set(1.0 if status.reason in HELD_REASONS else 0.0)
        stalled = any(c.type == ConditionType.STALLED and c.status == ConditionStatus.TRUE for c in status.conditions)
        self.stalled.labels(namespace, name).set(1.0 if stalled else 0.0)
        moved = status.progress.last_update_time or status.start_time
        self._set_or_remove(self.progress_time, (namespace, name), moved.timestamp() if moved else None)
        for phase in PHASES:
            self.run_phase.labels(namespace, name, phase).set(1.0 if status.phase == phase else 0.0)
        for metric, (attr, _) in PROGRESS_FIELDS.items():
            value = getattr(status.progress, attr)
            self._set_or_remove(self.progress[metric], (namespace, name), value)
        verdict = status.panel
        for metric, attr in PANEL_FIELDS.items():
            self._set_or_remove(self.panel[metric], (namespace, name), getattr(verdict, attr) if verdict else None)
        results: dict[str, bool] = {g.name: g.passed for g in verdict.gates} if verdict else {}
        for gate in GATE_NAMES:
            self._set_or_remove(self.gate_passed, (namespace, name, gate), results.get(gate))

    def _count_finish(self, namespace: str, name: str, status: GodRunStatus, before: GodRunStatus | None) -> None:
        """Count a transition into a final phase; each series is exposed at 0 first (FinishCounter), so that
        increase() sees the step from 0 to 1 even for a run counted on its first sight."""
        for phase in FINISHED_PHASES:
            self.finished.touch(namespace, name, phase)
        if status.phase not in TERMINAL_PHASES or before is None:
            return
        # A final run stays final (an edit only moves observedGeneration); an invalid spec corrected into
        # another invalid one is a new finish.
        new_invalid = before.reason == Reason.INVALID_SPEC and before.observed_generation != status.observed_generation
        if before.phase not in TERMINAL_PHASES or new_invalid:
            self.finished.inc(namespace, name, status.phase)

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted GodRun."""
        for gauge in (self.held, self.stalled, self.progress_time):
            self._remove(gauge, (namespace, name))
        for phase in FINISHED_PHASES:
            self.finished.remove(namespace, name, phase)
        for phase in PHASES:
            self._remove(self.run_phase, (namespace, name, phase))
        for gauge in (*self.panel.values(), *self.progress.values()):
            self._remove(gauge, (namespace, name))
        for gate in GATE_NAMES:
            self._remove(self.gate_passed, (namespace, name, gate))

    @staticmethod
    def _set_or_remove(gauge: Gauge, labels: tuple[str, ...], value: float | bool | None) -> None:
        if value is None:
            ControllerMetrics._remove(gauge, labels)
        else:
            gauge.labels(*labels).set(float(value))

    @staticmethod
    def _remove(gauge: Gauge | Counter, labels: tuple[str, ...]) -> None:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
