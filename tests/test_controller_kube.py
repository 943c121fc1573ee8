"""Kubernetes executor pieces without a cluster: Job/Pod -> observation, metrics and verdict parsing,
the work queue, controller metrics, status writes with conflict retry, idempotent creates, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from godrun.controller.kube import (
    ConflictError,
    Controller,
    KubeExecutor,
    LoopConfig,
    job_stage_obs,
    parse_progress,
    parse_verdict,
    succeeded_pod_message,
    view_from_object,
)
from godrun.controller.machine import CreateActB, CreateJob, EmitEvent, GodRunView
from godrun.controller.metrics import ControllerMetrics
from godrun.controller.names import job_name
from godrun.controller.workqueue import WorkQueue
from godrun.spec import GodRunSpec, GodRunStatus, Verdict


def job(conditions=(), suspend=False) -> dict:
    conds = [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions]
    return {"metadata": {"name": "j"}, "spec": {"suspend": suspend}, "status": {"conditions": conds}}


def pod(exit_code=None, message="", finished="2025-01-01T00:00:00Z", disrupted=False, phase="Running", ip="10.0.0.7"):
    status: dict = {"phase": phase, "podIP": ip, "conditions": []}
    if exit_code is not None:
        term = {"exitCode": exit_code, "message": message, "finishedAt": finished}
        status["containerStatuses"] = [{"name": "c", "state": {"terminated": term}}]
    if disrupted:
        status["conditions"].append({"type": "DisruptionTarget", "status": "True"})
    return {"metadata": {"name": f"p{exit_code}{finished}", "namespace": "lab"}, "status": status}


def test_job_states():
    assert job_stage_obs(None).state == "absent"
    assert job_stage_obs(job()).state == "active"
    assert job_stage_obs(job(), [pod(disrupted=True)]).disrupted
    assert job_stage_obs(job(suspend=True)).suspended
    assert job_stage_obs(job([("Complete", "", "")])).state == "succeeded"
    assert job_stage_obs(job([("SuccessCriteriaMet", "", "")])).state == "succeeded"
    msg = "Container trainer for pod lab/x failed with exit code 2 matching FailJob rule at index 0"
    failed = job_stage_obs(job([("FailureTarget", "PodFailurePolicy", msg)]))
    assert (failed.state, failed.reason, failed.exit_code) == ("failed", "PodFailurePolicy", 2)
    deadline = job_stage_obs(job([("Failed", "DeadlineExceeded", "Job was active longer than specified")]))
    assert (deadline.reason, deadline.exit_code) == ("DeadlineExceeded", None)
    pods = [pod(1, "first", "2025-01-01T00:00:00Z"), pod(137, "oom", "2025-01-01T01:00:00Z")]
    exhausted = job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")])
    backoff = job_stage_obs(exhausted, pods)
    assert (backoff.exit_code, backoff.message) == (137, "oom")


def test_progress_parsed_from_a_real_exposition():
    reg = CollectorRegistry()
    values = {
        "godrun_train_epoch": 12,
        "godrun_train_epochs": 400,
        "godrun_train_best_epoch": 9,
        "godrun_train_panel_psnr_mean_decibels": 19.25,
        "godrun_train_panel_sam_mean_degrees": 7.5,
        "godrun_train_loss": 0.1,
    }
    for name, v in values.items():
        Gauge(name, name, registry=reg).set(v)
    p = parse_progress(generate_latest(reg).decode())
    assert (p.epoch, p.epochs, p.best_epoch, p.psnr_mean, p.sam_mean) == (12, 400, 9, 19.25, 7.5)
    assert parse_progress("# nothing here\n") is None


def test_verdict_from_termination_message():
    v = Verdict(verdict="pass", psnr_mean=22.0, failed_gates=[])
    text = v.model_dump_json(by_alias=True)
    got, err = parse_verdict(text)
    assert err is None and got == v
    assert parse_verdict("") == (None, None)
    assert parse_verdict("Traceback: boom")[1]
    assert parse_verdict(json.dumps({"verdict": "maybe"}))[1]
    pods = [pod(0, text, "2025-01-01T02:00:00Z"), pod(1, "crash", "2025-01-01T03:00:00Z")]
    assert succeeded_pod_message(pods) == text


def test_view_from_api_object_tolerates_a_foreign_status():
    obj = {
        "metadata": {"name": "r", "namespace": "lab", "generation": 4, "uid": "u", "resourceVersion": "77"},
        "spec": {"image": "i"},
        "status": {"phase": "Training", "somethingElse": 1},
    }
    v = view_from_object(obj)
    assert (v.generation, v.uid, v.resource_version) == (4, "u", "77") and v.status == GodRunStatus()


# --------------------------------------------------------------------------- work queue


def test_workqueue_dedupes_delays_and_backs_off():
    now = [0.0]
    q = WorkQueue(base_delay=1.0, max_delay=8.0, clock=lambda: now[0])
    q.add("a")
    q.add("a")
    q.add_after("b", 5)
    assert len(q) == 2
    assert q.get(timeout=0) == "a" and q.get(timeout=0) is None
    q.add("a")  # while processing: handed out again only after done()
    assert q.get(timeout=0) is None
    q.done("a")
    assert q.get(timeout=0) == "a"
    q.done("a")
    assert [q.add_rate_limited("a") for _ in range(5)] == [1, 2, 4, 8, 8]
    q.forget("a")
    assert q.failures("a") == 0
    now[0] = 5.0
    assert q.get(timeout=0) in ("a", "b")


def test_workqueue_wakes_a_blocked_worker():
    q = WorkQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    time.sleep(0.05)
    q.add(("ns", "r"))
    t.join(2)
    assert got == [("ns", "r")]
    q.shutdown()
    assert q.get() is None


# --------------------------------------------------------------------------- metrics


def _samples(m: ControllerMetrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in m.registry.collect() for s in f.samples}


def test_metrics_follow_status_and_are_forgotten():
    m = ControllerMetrics()
    gates = [{"name": g, "passed": g != "roi"} for g in ("aggregate", "tail", "roi", "downstream")]
    st = GodRunStatus.model_validate(
        {"phase": "Failed-ActB", "panel": {"verdict": "fail", "psnrMean": 20.5, "spuriousPeaks": 3, "gates": gates}}
    )
    m.observe("lab", "r1", st)
    m.observe("lab", "r2", GodRunStatus(phase="Training"))
    s = _samples(m)
    assert s[("godrun_panel_psnr_mean_decibels", (("godrun", "r1"), ("namespace", "lab")))] == 20.5
    assert s[("godrun_panel_spurious_peaks", (("godrun", "r1"), ("namespace", "lab")))] == 3
    assert s[("godrun_gate_passed", (("gate", "roi"), ("godrun", "r1"), ("namespace", "lab")))] == 0
    assert s[("godrun_gate_passed", (("gate", "tail"), ("godrun", "r1"), ("namespace", "lab")))] == 1
    phases = {k[1][2][1]: v for k, v in s.items() if k[0] == "godrun_run_phase" and ("godrun", "r1") in k[1]}
    assert phases["Failed-ActB"] == 1 and sum(phases.values()) == 1 and len(phases) == 6
    assert not any(k[0] == "godrun_panel_psnr_mean_decibels" and ("godrun", "r2") in k[1] for k in s)
    m.forget("lab", "r1")
    text = generate_latest(m.registry).decode()
    assert 'godrun="r1"' not in text and 'godrun="r2"' in text
    assert "godrun_reconcile_duration_seconds_bucket" in text and "godrun_reconcile_errors_total" in text


# --------------------------------------------------------------------------- executor with a fake API


class FakeApi:
    """Just enough of CoreV1/BatchV1/CustomObjects for KubeExecutor, recording calls."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.pods: list[dict] = []
        self.events: list[dict] = []
        self.children: dict[str, dict] = {}
        self.status_puts: list[dict] = []
        self.conflicts = 0
        self.generation = 1
        self.core, self.batch, self.custom = self, self, self

    def raw(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def list_namespaced_job(self, ns, label_selector=""):
        return {"items": list(self.jobs.values())}

    def list_namespaced_pod(self, ns, label_selector=""):
        name = label_selector.split("=", 1)[1]
        return {"items": [p for p in self.pods if p["metadata"].get("job") == name]}

    def create_namespaced_job(self, ns, body):
        name = body["metadata"]["name"]
        if name in self.jobs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.jobs[name] = body
        return body

    def create_namespaced_event(self, ns, body):
        self.events.append(body)

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        if body["metadata"]["name"] in self.children:
            raise ApiException(status=409, reason="AlreadyExists")
        self.children[body["metadata"]["name"]] = body

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        if name.endswith("-actb"):
            if name not in self.children:
                raise ApiException(status=404, reason="NotFound")
            return self.children[name]
        return {"metadata": {"name": name, "resourceVersion": "fresh", "generation": self.generation}}

    def replace_namespaced_custom_object_status(self, group, version, ns, plural, name, body):
        if self.conflicts:
            self.conflicts -= 1
            raise ApiException(status=409, reason="Conflict")
        self.status_puts.append(body)


def run_view(**over) -> GodRunView:
    spec = GodRunSpec.model_validate({"image": "i", **over})
    return GodRunView("r", "lab", 1, spec, uid="uid-r", resource_version="1")


def test_executor_observes_owned_jobs_progress_and_verdict():
    api = FakeApi()
    ex = KubeExecutor(api, metrics_fetcher=lambda p, port: "godrun_train_epoch 5\n")
    view = run_view()
    train = job_name("r", "train", 1)
    api.jobs[train] = {"metadata": {"name": train, "ownerReferences": [{"kind": "GodRun", "uid": "uid-r"}]}, "spec": {}}
    api.jobs["stale"] = {"metadata": {"name": "stale", "ownerReferences": [{"kind": "GodRun", "uid": "uid-r"}]}}
    api.jobs["other"] = {"metadata": {"name": "other", "ownerReferences": [{"kind": "GodRun", "uid": "someone"}]}}
    api.pods.append(pod() | {"metadata": {"name": "p", "job": train, "namespace": "lab"}})
    obs = ex.observe(view)
    assert obs.train.state == "active" and obs.progress.epoch == 5 and obs.stale_jobs == ("stale",)
    assert obs.evaluate.state == "absent"
    ev = job_name("r", "evaluate", 1)
    api.jobs[train]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    api.jobs[ev] = {"metadata": {"name": ev}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    verdict = Verdict(verdict="fail", failed_gates=["tail"]).model_dump_json(by_alias=True)
    api.pods.append(pod(0, verdict) | {"metadata": {"name": "q", "job": ev, "namespace": "lab"}})
    obs = ex.observe(view)
    assert obs.evaluate.state == "succeeded" and obs.verdict.failed_gates == ["tail"]


def test_executor_apply_is_idempotent_and_emits_events():
    api = FakeApi()
    ex = KubeExecutor(api)
    view = run_view(resources={"gpus": 2})
    create = CreateJob("train", job_name("r", "train", 1), 1, ("python",))
    ex.apply(view, [create, create])  # second one: 409 -> found, not an error
    assert len(api.jobs) == 1
    body = api.jobs[create.name]
    assert body["spec"]["template"]["spec"]["containers"][0]["command"][0] == "torchrun"
    ex.apply(view, [CreateActB("r-actb", {"metadata": {"name": "r-actb"}})] * 2)
    assert list(api.children) == ["r-actb"]
    ex.apply(view, [EmitEvent("Warning", "GatesFailed", "roi")])
    (event,) = api.events
    assert event["involvedObject"]["uid"] == "uid-r" and event["reason"] == "GatesFailed" and event["type"] == "Warning"


def test_status_write_retries_conflicts_then_gives_up():
    api = FakeApi()
    ex = KubeExecutor(api)
    api.conflicts = 2
    ex.write_status(run_view(), GodRunStatus(phase="Training", observed_generation=1))
    (put,) = api.status_puts
    assert put["metadata"]["resourceVersion"] == "fresh" and put["status"]["phase"] == "Training"
    api.conflicts = 10
    with pytest.raises(ConflictError):
        ex.write_status(run_view(), GodRunStatus())
    api.conflicts, api.generation = 1, 2  # spec changed meanwhile: do not write a stale generation's status
    with pytest.raises(ConflictError):
        ex.write_status(run_view(), GodRunStatus())


def test_controller_reconcile_key_end_to_end_on_fake_api():
    api = FakeApi()
    obj = {"metadata": {"name": "r", "namespace": "lab", "generation": 1, "uid": "uid-r", "resourceVersion": "1"}}
    obj["spec"] = {"image": "i"}
    api.get_namespaced_custom_object = lambda *a: obj
    m = ControllerMetrics()
    c = Controller(api, KubeExecutor(api, progress="off"), m, LoopConfig(namespace="lab", progress_seconds=7))
    assert c.reconcile_key(("lab", "r")) == 7
    assert list(api.jobs) == [job_name("r", "train", 1)] and api.status_puts[0]["status"]["phase"] == "Training"
    assert api.events[0]["reason"] == "TrainingStarted"
    for _ in range(2):  # the first pass notes the Job is running; then nothing changes any more
        obj["status"] = api.status_puts[-1]["status"]
        c.reconcile_key(("lab", "r"))
    assert len(api.jobs) == 1, "no twin Job"
    assert len(api.status_puts) == 2, "a status read back from JSON equals the one written: no redundant write"
    c._on_godrun("DELETED", obj)
    assert 'godrun="r"' not in generate_latest(m.registry).decode()


def test_health_endpoints():
    from godrun.controller.main import Health

    ready = [False]
    server = Health(lambda: ready[0]).serve(0)
    port = server.server_address[1]
    try:
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz")
        assert err.value.code == 503
        ready[0] = True
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200
    finally:
        server.shutdown()


def test_controller_modules_never_import_torch():
    code = (
        "import sys\n"
        "import godrun.controller.main, godrun.controller.kube, godrun.controller.crd, godrun.controller.jobs\n"
        "import godrun.controller.machine, godrun.controller.commands, godrun.cli\n"
        "godrun.controller.crd.crd()\n"
        "bad = [m for m in ('torch', 'mamba_ssm', 'numpy') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if 'torch' in bad or 'mamba_ssm' in bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_flags():
    from godrun.controller.main import build_parser

    a = build_parser().parse_args(["--namespace", "lab", "--no-leader-elect", "--metrics-port", "9000"])
    assert (a.namespace, a.leader_elect, a.metrics_port, a.health_port, a.lease_name) == (
        "lab",
        False,
        9000,
        8081,
        "godrun-controller",
    )


def test_a_job_the_api_refuses_puts_the_run_in_error():
    api = FakeApi()
    obj = {"metadata": {"name": "r", "namespace": "lab", "generation": 1, "uid": "u", "resourceVersion": "1"}}
    obj["spec"] = {"image": "i"}
    api.get_namespaced_custom_object = lambda *a: obj

    def refuse(ns, body):
        raise ApiException(status=422, reason="Invalid")

    api.create_namespaced_job = refuse
    c = Controller(api, KubeExecutor(api, progress="off"), ControllerMetrics(), LoopConfig(namespace="lab"))
    assert c.reconcile_key(("lab", "r")) is None
    st = api.status_puts[-1]["status"]
    assert (st["phase"], st["reason"]) == ("Error", "JobRejected") and api.events[-1]["reason"] == "JobRejected"
