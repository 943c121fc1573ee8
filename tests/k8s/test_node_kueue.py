"""GodRuns queued by a real Kueue on the real node (after the README's block): Kueue v0.17.0 built from its Go
module (tests/cluster/build_kueue.sh) and installed from its own kustomization (tests/k8s/kueue.py).

One ClusterQueue whose CPU quota fits one run's pod at a time (one workload per stage: each Job is its own
Kueue Workload), preemption of lower priority within it, two WorkloadPriorityClasses read from the Jobs' own
labels (spec.jobs.labels). Three runs:
- `kq-low` (priority low, 6 epochs) is admitted and trains;
- `kq-wait` (low) waits: Pending/AwaitingAdmission, Suspended condition, held (no stuck alert), and starts
  only when quota frees;
- `kq-high` (high), applied once `kq-low` has 2 epochs, preempts it: Kueue suspends `kq-low`'s Job (its pod
  stops), the run shows AwaitingAdmission, and once re-admitted it resumes from its last checkpoint with every
  epoch exactly once.
Figures printed: Kueue install time, admission latency (GodRun applied -> training pod Running) with and
without Kueue, preemption -> resume."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tools import unavailable

from k8s import kueue
from k8s.readme_cluster import (
    FINAL,
    NS,
    SMALL,
    ReadmeCluster,
    apply,
    cpu_godrun,
    epochs_done,
    epochs_trained_twice,
    get,
    items,
    kubectl,
    phase_in,
    resumed_at,
    wait_for,
)

pytestmark = pytest.mark.node
QUEUE = "godrun"
KQ = "kueue.x-k8s.io/v1beta2"


def _queue_objects() -> list[dict[str, Any]]:
    quota = [{"name": "cpu", "nominalQuota": "300m"}, {"name": "memory", "nominalQuota": "3Gi"}]
    return [
        {"apiVersion": KQ, "kind": "ResourceFlavor", "metadata": {"name": "default"}},
        {
            "apiVersion": KQ,
            "kind": "ClusterQueue",
            "metadata": {"name": QUEUE},
            "spec": {
                "namespaceSelector": {},
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [
                    {"coveredResources": ["cpu", "memory"], "flavors": [{"name": "default", "resources": quota}]}
                ],
            },
        },
        {"apiVersion": KQ, "kind": "LocalQueue", "metadata": {"name": QUEUE, "namespace": NS}, "spec": {}}
        | {"spec": {"clusterQueue": QUEUE}},
        {"apiVersion": KQ, "kind": "WorkloadPriorityClass", "metadata": {"name": "low"}, "value": 100},
        {"apiVersion": KQ, "kind": "WorkloadPriorityClass", "metadata": {"name": "high"}, "value": 1000},
    ]


def _queued(name: str, priority: str, epochs: int) -> dict[str, Any]:
    return cpu_godrun(
        name,
        {"epochs": epochs},
        resources={**SMALL, "queueName": QUEUE},
        jobs={"labels": {"kueue.x-k8s.io/priority-class": priority}},
    )


def _running_since(name: str) -> float | None:
    pods = items("pods", f"godrun.io/run={name},godrun.io/stage=train")
    return time.monotonic() if any(p["status"].get("phase") == "Running" for p in pods) else None


class Timeline:
    """Every run's (phase, reason, Suspended condition) and training-pod state, sampled each second."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.rows = names, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            self.sample()

    def sample(self) -> None:
        listed = json.loads(kubectl("get", "godruns", "-n", NS, "-o", "json").stdout)["items"]
        runs = {r["metadata"]["name"]: r.get("status") or {} for r in listed}
        pods = items("pods", "godrun.io/stage=train")
        running = {  # a pod stopping after a preemption is Running until it has gone: not counted
            p["metadata"]["labels"]["godrun.io/run"]
            for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        }
        for name in self.names:
            st = runs.get(name) or {}
            conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
            self.rows.append((time.monotonic(), name, st.get("phase"), st.get("reason"), conds, name in running))

    def of(self, name: str) -> list[tuple]:
        return [r for r in self.rows if r[1] == name]


@pytest.fixture(scope="module")
def queued(readme_cluster: ReadmeCluster) -> Iterator[dict[str, Any]]:
    missing = kueue.missing_kueue()
    if missing:
        unavailable(f"kueue: missing {', '.join(missing)}")
    node = readme_cluster.node
    plain = cpu_godrun("kq-plain", {"epochs": 1}, resources=SMALL)  # no queue: Kueue leaves it alone
    installed = kueue.install(node)
    try:
        for obj in _queue_objects():
            kubectl("apply", "-f", "-", input=json.dumps(obj))
        t0 = time.monotonic()
        apply(plain)
        plain_latency = wait_for("kq-plain running", lambda: _running_since("kq-plain"), 300, 0.5) - t0
        wait_for("kq-plain ends", phase_in("kq-plain", FINAL), 600)
        timeline = Timeline(["kq-low", "kq-wait", "kq-high"])
        timeline.thread.start()
        t0 = time.monotonic()
        apply(_queued("kq-low", "low", 6))
        low_latency = wait_for("kq-low running", lambda: _running_since("kq-low"), 300, 0.5) - t0
        apply(_queued("kq-wait", "low", 1))
        wait_for("kq-low epoch 2", lambda: len(epochs_done(readme_cluster.volume, "kq-low")) >= 2, 600, 0.5)
        apply(_queued("kq-high", "high", 1))
        for name in ("kq-high", "kq-low", "kq-wait"):
            wait_for(f"{name} ends", phase_in(name, FINAL), 1200)
        timeline.stop.set()
        timeline.thread.join()
        timeline.sample()  # the ends just waited for (the loop's last sample may predate them)
        yield {"timeline": timeline, "volume": readme_cluster.volume}
        low, high = timeline.of("kq-low"), timeline.of("kq-high")
        ran = next(r[0] for r in low if r[5])
        stopped = next(r[0] for r in low if r[0] > ran and r[3] == "AwaitingAdmission")  # preempted
        gone = next(r[0] for r in low if r[0] >= stopped and not r[5])
        resumed = next(r[0] for r in low if r[0] > gone and r[5])
        high_done = max(r[0] for r in high if r[2] != "Shipped")
        print(
            f"\nKueue figures: install {installed:.0f} s; GodRun applied -> training pod Running: "
            f"{plain_latency:.1f} s without Kueue, {low_latency:.1f} s through Kueue (empty queue); "
            f"kq-low preempted -> running again {resumed - stopped:.0f} s, of which kq-high's run "
            f"{high_done - stopped:.0f} s (+- 1 s sampling)",
            flush=True,
        )
    finally:
        for name in ("kq-plain", "kq-low", "kq-wait", "kq-high"):
            kubectl("delete", "gr", name, "-n", NS, "--ignore-not-found", "--wait=false", check=False)
        for obj in reversed(_queue_objects()):
            ns = ["-n", obj["metadata"]["namespace"]] if obj["metadata"].get("namespace") else []
            kubectl(
                "delete",
                obj["kind"].lower() + "s." + "kueue.x-k8s.io",
                obj["metadata"]["name"],
                *ns,
                "--ignore-not-found",
                "--wait=false",
                check=False,
            )
        kueue.uninstall(node)


def test_every_queued_run_ships_through_kueue(queued: dict[str, Any]) -> None:
    for name in ("kq-low", "kq-wait", "kq-high"):
        assert get(name)["status"]["phase"] == "Shipped", get(name)["status"]
        wl = json.loads(kubectl("get", "workloads.kueue.x-k8s.io", "-n", NS, "-o", "json").stdout)["items"]
        assert any(w["metadata"]["ownerReferences"][0]["name"].startswith(f"{name}-train") for w in wl), name


def test_the_second_run_waits_visibly_and_held_then_starts(queued: dict[str, Any]) -> None:
    rows = queued["timeline"].of("kq-wait")
    waiting = [r for r in rows if (r[2], r[3]) == ("Pending", "AwaitingAdmission")]
    assert waiting, rows[:5]
    assert all(r[4].get("Suspended") == "True" for r in waiting) and not any(r[5] for r in waiting)
    assert rows[-1][2] == "Shipped"


def test_a_high_priority_run_preempts_and_the_low_one_resumes_with_no_lost_epoch(queued: dict[str, Any]) -> None:
    low = queued["timeline"].of("kq-low")
    trained_then_waited = [r for i, r in enumerate(low) if r[3] == "AwaitingAdmission" and any(p[5] for p in low[:i])]
    assert trained_then_waited, "kq-low's Job was suspended by Kueue after it had trained"
    high = queued["timeline"].of("kq-high")
    high_running = [r[0] for r in high if r[5]]
    assert high_running and min(high_running) < max(r[0] for r in trained_then_waited) + 5
    volume = queued["volume"]
    assert epochs_done(volume, "kq-low") == list(range(1, 7)), epochs_done(volume, "kq-low")
    assert not epochs_trained_twice(volume, "kq-low")
    assert resumed_at(volume, "kq-low") and resumed_at(volume, "kq-low")[0] >= 2
