"""Controller metrics for alerting on transitions: a finished-runs counter, the held gauge, process metrics."""

from __future__ import annotations

from prometheus_client import generate_latest

from godrun.core.prometheus import ControllerMetrics
from godrun.spec import GodRunStatus


def _value(m: ControllerMetrics, name: str, **labels: str) -> float | None:
    for family in m.registry.collect():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def _st(phase: str, reason: str = "", generation: int = 1) -> GodRunStatus:
    return GodRunStatus(phase=phase, reason=reason, observed_generation=generation)


def test_finished_counter_counts_each_transition_once():
    m = ControllerMetrics()
    m.observe("lab", "r", _st("Training"), before=_st("Pending"))
    assert _value(m, "godrun_runs_finished_total", namespace="lab", godrun="r", phase="Error") == 0  # born at 0
    m.observe("lab", "r", _st("Error", "BadInput"), before=_st("Training"))
    for _ in range(3):  # later reconciles of the failed run, and a restarted controller's first look
        m.observe("lab", "r", _st("Error", "BadInput"), before=_st("Error", "BadInput"))
    assert _value(m, "godrun_runs_finished_total", namespace="lab", godrun="r", phase="Error") == 1
    m.observe("lab", "r", _st("Training", generation=2), before=_st("Error", generation=1))
    m.observe("lab", "r", _st("Shipped", "GatesPassed", 2), before=_st("Evaluating", generation=2))
    assert _value(m, "godrun_runs_finished_total", namespace="lab", godrun="r", phase="Shipped") == 1
    m.forget("lab", "r")
    assert 'godrun="r"' not in generate_latest(m.registry).decode()


def test_held_gauge_marks_kueue_queueing_and_suspend():
    m = ControllerMetrics()
    m.observe("lab", "q", _st("Pending", "AwaitingAdmission"))
    m.observe("lab", "s", _st("Pending", "Suspended"))
    m.observe("lab", "t", _st("Training", "TrainJobRunning"))
    assert [_value(m, "godrun_run_held", namespace="lab", godrun=n) for n in "qst"] == [1, 1, 0]


def test_registry_has_process_metrics():
    text = generate_latest(ControllerMetrics().registry).decode()
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
    assert "python_info" in text


def test_a_finished_run_edited_later_is_not_counted_again():
    m = ControllerMetrics()
    m.observe("lab", "r", _st("Shipped", "GatesPassed"), before=_st("Evaluating"))
    m.observe("lab", "r", _st("Shipped", "GatesPassed", 2), before=_st("Shipped", "GatesPassed", 1))
    _value(m, "godrun_runs_finished_total", namespace="lab", godrun="r", phase="Shipped")  # the first scrape
    assert _value(m, "godrun_runs_finished_total", namespace="lab", godrun="r", phase="Shipped") == 1


def test_a_run_final_at_first_sight_is_exposed_at_0_then_1():
    """InvalidSpec on the first reconcile: counted when its series is created, yet scraped 0 first (increase())."""
    m = ControllerMetrics()
    m.observe("lab", "bad", _st("Error", "InvalidSpec"), before=GodRunStatus())
    scrapes = [_value(m, "godrun_runs_finished_total", namespace="lab", godrun="bad", phase="Error") for _ in "abc"]
    assert scrapes == [0, 1, 1]
