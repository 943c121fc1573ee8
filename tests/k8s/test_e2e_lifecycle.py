"""One real tiny GodRun through its whole life against the real API server, made as hard as a cluster makes it:

- the controller runs as two `godrun controller` processes with leader election, as the ServiceAccount
  bound to manifests/rbac/namespaced.yaml (no admin rights);
- the leader is SIGKILLed (and a fresh replica started) once during Training and once during Evaluating;
- the training pod is disrupted after its first checkpoint (the node stand-in's DisruptionTarget + kill).

The run is shared by the tests of this module (each full run costs CPU time); each test checks one promise:
`kubectl get/describe` output, no duplicate Jobs, one leader, resume from the checkpoint, the SA suffices.
Plus the cheap artefact checks: `kubectl explain` descriptions and the rendered Helm chart dry-run.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from run_support import LENIENT_GATES, godrun_body, python_with_port, stop_process, tiny_training

from godrun.spec import Recipe
from k8s.cluster import Cluster, free_port
from k8s.node import NodeStandIn
from k8s.test_controller_e2e import CRD, G, P, V, jobs_of
from k8s.test_deploy_cluster import _docs, _into

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
# An API refusal as the client logs it ("(403)", "status 403", "Forbidden"); not a timestamp's ",403" millis.
REFUSED = re.compile(r"\(403\)|\b(?:status|code|HTTP)[ =:]*403\b|[Ff]orbidden")
RUN, CLAIM, SA, LEASE = "life", "workspace", "godrun-controller", "godrun-controller"
FINAL = {"Shipped", "Failed-ActB", "Error"}
EPOCHS = 4


# --------------------------------------------------------------------------- controller replicas


class Replica:
    """`godrun controller` as its own process with leader election (short Lease so takeovers are quick)."""

    def __init__(self, identity: str, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.identity, self.metrics_port, self.health_port, self.log = identity, free_port(), free_port(), log
        argv = [
            *(sys.executable, "-m", "godrun", "controller", f"--kubeconfig={kubeconfig}", f"--namespace={namespace}"),
            *(f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}", f"--identity={identity}"),
            *("--leader-elect", "--lease-duration=4", "--renew-deadline=3", "--retry-period=1"),
            *("--workers=2", "--resync-seconds=3", "--progress-source=off"),
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.pop("KUBECONFIG", None)
        with log.open("wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def leader_gauge(self) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        found = re.search(r"^godrun_controller_leader(?:\{\})? (\S+)$", text, re.M)
        return float(found.group(1)) if found else None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        stop_process(self.popen)

    def tail(self, n: int = 30) -> str:
        return f"--- {self.identity}\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def lease_holder(cluster: Cluster, ns: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(cluster.api_client()).read_namespaced_lease(LEASE, ns)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return lease.spec.holder_identity or None


# --------------------------------------------------------------------------- the shared run


@dataclass
class Life:
    cluster: Cluster
    ns: str
    workspace: Path
    sa_kubeconfig: Path
    node: NodeStandIn
    status: dict[str, Any] = field(default_factory=dict)
    first_leader: str | None = None
    first_gauges: dict[str, float | None] = field(default_factory=dict)
    kills: list[tuple[str, str]] = field(default_factory=list)  # (phase at the kill, identity killed)
    disrupted_pod: str = ""
    replicas: list[Replica] = field(default_factory=list)

    def training(self) -> dict[str, Any]:
        return tiny_training(EPOCHS)

    def body(self) -> dict[str, Any]:
        return godrun_body(RUN, data={"claimName": CLAIM}, training=self.training(), gates=LENIENT_GATES)

    def recipe(self) -> Recipe:
        return Recipe.model_validate(self.training())

    def last_checkpoint(self) -> Path:
        r = self.recipe()
        return self.workspace / r.checkpoint_dir / f"{r.model}_last.pt"

    def logs(self) -> str:
        return "\n".join(r.tail() for r in self.replicas)


def _apply_rbac(cluster: Cluster, ns: str) -> Path:
    docs = _docs(MANIFESTS / "rbac/namespaced.yaml") + _docs(MANIFESTS / "controller/serviceaccount.yaml")
    cluster.kubectl("apply", "-f", "-", input=_into(docs, ns, ""))
    return cluster.service_account_kubeconfig(ns, SA, create=False)


def _wait_one_leader(life: Life, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lease_holder(life.cluster, life.ns)
        gauges = {r.identity: r.leader_gauge() for r in life.replicas}
        if holder and gauges.get(holder) == 1.0 and all(v is not None for v in gauges.values()):
            life.first_leader, life.first_gauges = holder, gauges
            return
        time.sleep(0.3)
    raise TimeoutError(f"no leader: lease {lease_holder(life.cluster, life.ns)}\n{life.logs()}")


def _kill_leader(life: Life, phase: str) -> None:
    """SIGKILL the replica holding the Lease and start a fresh one in its place (a Deployment would)."""
    holder = lease_holder(life.cluster, life.ns)
    (victim,) = [r for r in life.replicas if r.identity == holder and r.popen.poll() is None]
    victim.kill()
    life.kills.append((phase, holder))
    fresh = f"ctrl-{len(life.replicas)}"
    life.replicas.append(Replica(fresh, life.sa_kubeconfig, life.ns, life.workspace.parent / f"{fresh}.log"))


def _drive(life: Life, timeout: float = 300.0) -> None:
    custom = client.CustomObjectsApi(life.cluster.api_client())
    custom.create_namespaced_custom_object(G, V, life.ns, P, life.body())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = custom.get_namespaced_custom_object(G, V, life.ns, P, RUN).get("status") or {}
        phase, killed = st.get("phase"), {k for k, _ in life.kills}
        if phase in FINAL:
            life.status = st
            return
        if phase in ("Training", "Evaluating") and phase not in killed:
            _kill_leader(life, phase)
        if not life.disrupted_pod and life.last_checkpoint().is_file():
            pods = [p for p in life.node.pod_runs(f"{RUN}-train-g1") if not p.done]
            if pods:
                life.node.disrupt(life.ns, pods[0].name)
                life.disrupted_pod = pods[0].name
        assert not life.node.errors, life.node.errors
        time.sleep(0.1)
    raise TimeoutError(f"{RUN} not final: {custom.get_namespaced_custom_object(G, V, life.ns, P, RUN).get('status')}")


@pytest.fixture(scope="module")
def life(k8s_cluster: Cluster, small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Life]:
    tmp = tmp_path_factory.mktemp("life")
    ns = k8s_cluster.create_namespace("e2e-life")
    k8s_cluster.apply_crd(MANIFESTS / "crd/godruns.godrun.io.yaml")
    sa = _apply_rbac(k8s_cluster, ns)
    work = tmp / "workspace"
    shutil.copytree(small_corpus / "data", work / "data")
    python = python_with_port(tmp, free_port())
    node = NodeStandIn(k8s_cluster.api_client(), ns, tmp / "node", python=str(python), volume_dirs={CLAIM: work})
    state = Life(k8s_cluster, ns, work, sa, node)
    with node:
        try:
            state.replicas = [Replica(i, sa, ns, tmp / f"{i}.log") for i in ("ctrl-a", "ctrl-b")]
            _wait_one_leader(state)
            t0 = time.monotonic()
            _drive(state)
            print(
                f"\n{RUN}: {state.status['phase']} in {time.monotonic() - t0:.1f}s; kills {state.kills}; "
                f"disrupted {state.disrupted_pod}; first leader {state.first_leader} {state.first_gauges}"
            )
            yield state
        except BaseException:
            print(state.logs())
            raise
        finally:
            for r in state.replicas:
                r.stop()


# --------------------------------------------------------------------------- tests on the shared run


def test_run_ships_and_kubectl_shows_columns_and_events(life: Life) -> None:
    assert life.status["phase"] == "Shipped", life.status
    out = life.cluster.kubectl("get", "gr", "-n", life.ns).stdout
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "PHASE", "VERDICT", "PSNR", "SAM", "EPOCH", "AGE"], out
    (row,) = [r.split() for r in rows if r.split()[0] == RUN]
    panel = life.status["panel"]
    assert row[1:3] == ["Shipped", panel["verdict"]], out
    assert float(row[3]) == pytest.approx(panel["psnrMean"], rel=1e-3) and float(row[4]) == pytest.approx(
        panel["samMean"], rel=1e-3
    ), out
    epoch = (life.status.get("progress") or {}).get("epoch")
    assert row[5] == (str(epoch) if epoch is not None else "<none>"), out
    wide = life.cluster.kubectl("get", "gr", RUN, "-n", life.ns, "-o", "wide").stdout
    assert "REASON" in wide.splitlines()[0] and life.status["reason"] in wide, wide

    described = life.cluster.kubectl("describe", "gr", RUN, "-n", life.ns).stdout
    events = described[described.index("Events:") :]
    for reason in ("TrainingStarted", "PodDisrupted", "EvaluationStarted", "Shipped"):
        assert reason in events, described
    assert "Phase:" in described and "Shipped" in described


def test_controller_kills_during_training_and_evaluating_leave_no_duplicate_jobs(life: Life) -> None:
    assert [phase for phase, _ in life.kills] == ["Training", "Evaluating"], life.kills
    names = sorted(j.metadata.name for j in jobs_of(life.cluster, life.ns, RUN))
    assert names == [f"{RUN}-evaluate-g1", f"{RUN}-train-g1"]
    assert len(life.node.pod_runs(f"{RUN}-evaluate-g1")) == 1, "evaluation ran twice"
    runs = client.CustomObjectsApi(life.cluster.api_client()).list_namespaced_custom_object(G, V, life.ns, P)
    assert [r["metadata"]["name"] for r in runs["items"]] == [RUN], "no Act B or other child for a shipped run"
    assert life.status["phase"] == "Shipped" and life.status["observedGeneration"] == 1
    shipped = [
        e
        for e in client.CoreV1Api(life.cluster.api_client()).list_namespaced_event(life.ns).items
        if e.involved_object.name == RUN and e.reason == "Shipped"
    ]
    assert sum(e.count or 1 for e in shipped) == 1, "the run shipped more than once"


def test_two_replicas_elect_exactly_one_leader_and_a_fresh_one_takes_over(life: Life) -> None:
    assert set(life.first_gauges) == {"ctrl-a", "ctrl-b"}
    assert sorted(life.first_gauges.values()) == [0.0, 1.0], life.first_gauges
    assert life.first_gauges[life.first_leader] == 1.0
    # after two leader kills, the Lease belongs to a live replica and only that one reports itself leader
    holder = lease_holder(life.cluster, life.ns)
    live = {r.identity: r.leader_gauge() for r in life.replicas if r.popen.poll() is None}
    assert holder in live and live[holder] == 1.0, (holder, live)
    assert sum(1 for v in live.values() if v == 1.0) == 1, live
    assert holder not in {who for _, who in life.kills}


def test_disruption_does_not_fail_the_job_and_training_resumes_from_checkpoint(life: Life) -> None:
    assert life.disrupted_pod, "the run finished before its first checkpoint could be disrupted"
    pods = life.node.pod_runs(f"{RUN}-train-g1")
    assert [p.name for p in pods[:1]] == [life.disrupted_pod] and len(pods) == 2, [p.name for p in pods]
    assert pods[0].killed_for == "disruption" and pods[0].disruption is not None
    job = client.BatchV1Api(life.cluster.api_client()).read_namespaced_job_status(f"{RUN}-train-g1", life.ns)
    conds = {c.type: c.status for c in job.status.conditions}
    assert conds.get("Complete") == "True" and "Failed" not in conds, conds
    assert not job.status.failed, "a disrupted pod must not count against backoffLimit"
    r = life.recipe()
    log = (life.workspace / r.log_dir / "train.log").read_text()
    assert "resumed from" in log, log[-2000:]
    with (life.workspace / r.log_dir / "metrics.csv").open() as fh:
        epochs = [int(float(row["epoch"])) for row in csv.DictReader(fh)]
    assert epochs == list(range(1, EPOCHS + 1)), epochs


def test_controller_as_its_service_account_with_the_namespaced_role(life: Life) -> None:
    kubectl, ns, sa = life.cluster.kubectl, life.ns, life.sa_kubeconfig
    who = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=sa).stdout
    assert who == f"system:serviceaccount:{ns}:{SA}"
    assert life.status["phase"] in FINAL
    # nothing it tried was refused (a forbidden Event or Lease write would otherwise pass unnoticed)
    refused = [ln for r in life.replicas for ln in r.log.read_text().splitlines() if REFUSED.search(ln)]
    assert not refused, refused[:5]
    # the identity the replicas ran with really is that narrow (test_deploy_cluster holds the full matrix)
    assert kubectl("auth", "can-i", "get", "secrets", "-n", ns, kubeconfig=sa, check=False).stdout.strip() == "no"
    assert kubectl("auth", "can-i", "create", "jobs.batch", "-n", ns, kubeconfig=sa).stdout.strip() == "yes"
    other = kubectl("auth", "can-i", "list", "godruns.godrun.io", "-n", "default", kubeconfig=sa, check=False)
    assert other.stdout.strip() == "no"


# --------------------------------------------------------------------------- artefacts, no run


def _words(text: str) -> str:
    return " ".join(text.split())


def test_kubectl_explain_shows_spec_descriptions(k8s_cluster: Cluster) -> None:
    k8s_cluster.apply_crd(MANIFESTS / "crd/godruns.godrun.io.yaml")
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props = schema["properties"]["spec"]["properties"]
    out = _words(k8s_cluster.kubectl("explain", "godrun.spec").stdout)
    for name in ("training", "gates"):
        assert _words(props[name]["description"]) in out, (name, out)
    deeper = _words(k8s_cluster.kubectl("explain", "godrun.spec.gates.psnrMeanMin").stdout)
    assert _words(props["gates"]["properties"]["psnrMeanMin"]["description"]) in deeper, deeper


def test_helm_template_passes_server_side_dry_run(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    k8s_cluster.apply_crd(MANIFESTS / "crd/godruns.godrun.io.yaml")
    rendered = k8s_cluster.helm("template", "godrun", str(ROOT / "helm/godrun"), "-n", k8s_namespace).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"Deployment", "Role", "RoleBinding", "ServiceAccount", "CustomResourceDefinition"} <= kinds, kinds
    res = k8s_cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-n", k8s_namespace, "-f", "-",
        input=rendered, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("(server dry run)") == len([d for d in yaml.safe_load_all(rendered) if d]), res.stdout
