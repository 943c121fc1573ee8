"""Kubernetes executor pieces without a cluster: Job/Pod -> observation, metrics and verdict parsing,
the work queue, controller metrics, status writes with conflict retry, idempotent creates, no torch."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import types
import urllib.request
from typing import ClassVar

import pytest
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from godrun.contract.termination import read_verdict_message as parse_verdict
from godrun.controller.cache import EventSender, Expectations
from godrun.controller.kube import ConflictError, KubeExecutor
from godrun.controller.loop import Controller, LoopConfig
from godrun.controller.observe import job_stage_obs, succeeded_pod_message, view_from_object
from godrun.controller.workqueue import WorkQueue
from godrun.core.machine import CreateActB, CreateJob, EmitEvent, GodRunView, Polling
from godrun.core.names import job_name
from godrun.core.observe import parse_progress
from godrun.core.prometheus import ControllerMetrics
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
    assert (failed.state, failed.reason, failed.exit_code) == ("failed", "JobFailed", 2)  # exit 2: BadInput
    deadline = job_stage_obs(job([("Failed", "DeadlineExceeded", "Job was active longer than specified")]))
    assert (deadline.reason, deadline.exit_code) == ("DeadlineExceeded", None)
    pods = [pod(1, "first", "2025-01-01T00:00:00Z"), pod(137, "oom", "2025-01-01T01:00:00Z")]
    exhausted = job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")])
    backoff = job_stage_obs(exhausted, pods)
    assert (backoff.reason, backoff.exit_code, backoff.message) == ("RetriesExhausted", 137, "oom")
    exhausted["status"]["failed"] = 4  # the Job's count of failed pods: the status message says how many
    assert job_stage_obs(exhausted, pods).failures == 4


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
    v, error = view_from_object(obj)
    assert (v.generation, v.uid, v.resource_version) == (4, "u", "77") and v.status == GodRunStatus()
    assert error is None
    _, error = view_from_object(obj | {"spec": {"image": "i", "training": {"lr": 1e-4, "lr_min": 1e-3}}})
    assert error and error.startswith("spec.training")


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
    """Just enough of CoreV1/BatchV1/CustomObjects for KubeExecutor, recording calls. Its objects reach the
    controller's caches only through `sync()` (or `Controller.handle`), so a test decides how far they lag."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.pods: list[dict] = []
        self.events: list[dict] = []
        self.children: dict[str, dict] = {}
        self.godruns: dict[str, dict] = {}
        self.status_puts: list[dict] = []
        self.conflicts = 0
        self.generation = 1
        self.job_posts = self.pod_lists = 0
        self.core, self.batch, self.custom = self, self, self

    def raw(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def list_namespaced_pod(self, ns, label_selector=""):
        self.pod_lists += 1
        name = label_selector.split("=", 1)[1]
        return {"items": [p for p in self.pods if p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == name]}

    def create_namespaced_job(self, ns, body):
        self.job_posts += 1
        name = body["metadata"]["name"]
        if name in self.jobs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.jobs[name] = copy.deepcopy(body)
        return body

    def create_namespaced_event(self, ns, body):
        self.events.append(body)

    def create_namespaced_custom_object(self, group, version, ns, plural, body):
        if body["metadata"]["name"] in self.children:
            raise ApiException(status=409, reason="AlreadyExists")
        self.children[body["metadata"]["name"]] = body

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        if name in self.godruns:
            return copy.deepcopy(self.godruns[name])
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
        if name not in self.godruns:
            return None
        obj = self.godruns[name]
        obj["status"] = body["status"]
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(obj)


def sync(c: Controller, api: FakeApi) -> None:
    """The Job and Pod watches catch up: the caches become what the fake API holds."""
    c.relist("jobs", copy.deepcopy(list(api.jobs.values())))
    c.relist("pods", copy.deepcopy(api.pods))


def godrun_obj(name: str = "r", rv: str = "1", **meta) -> dict:
    m = {"name": name, "namespace": "lab", "generation": 1, "uid": f"uid-{name}", "resourceVersion": rv} | meta
    return {"metadata": m, "spec": {"image": "i"}}


def owned_job(name: str, uid: str = "uid-r", run: str = "r", **fields) -> dict:
    meta = {"name": name, "namespace": "lab", "labels": {"godrun.io/run": run}}
    meta["ownerReferences"] = [{"apiVersion": "godrun.io/v1alpha1", "kind": "GodRun", "name": run, "uid": uid}]
    return {"metadata": meta, "spec": {}} | fields


def job_pod(name: str, job: str, **kw) -> dict:
    p = pod(**kw)
    p["metadata"] = {"name": name, "namespace": "lab", "labels": {"batch.kubernetes.io/job-name": job}}
    return p


def controller(api: FakeApi, **cfg) -> Controller:
    c = Controller(api, KubeExecutor(api, progress="off"), ControllerMetrics(), LoopConfig(namespace="lab", **cfg))
    for kind in c.KINDS:
        c.synced[kind].set()
    return c


def run_view(**over) -> GodRunView:
    spec = GodRunSpec.model_validate({"image": "i", **over})
    return GodRunView("r", "lab", 1, spec, uid="uid-r", resource_version="1")


def _wait(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_progress_reads_never_block_a_reconcile_and_stay_bounded():
    """A metrics endpoint that never answers (default-deny NetworkPolicy) must not hold a reconcile worker:
    observe() returns at once, reads are bounded, and a read that lands reconciles its run."""
    release = threading.Event()
    calls: list[str] = []

    def hanging(pod, port):
        calls.append(pod["metadata"]["name"])
        release.wait(10)
        return "godrun_train_epoch 3\n"

    api = FakeApi()
    ex = KubeExecutor(api, metrics_fetcher=hanging)
    ex.poller.max_pending = 8
    updated: list = []
    ex.poller.on_update = updated.append
    views = []
    for i in range(20):
        name = f"r{i}"
        spec = GodRunSpec.model_validate({"image": "i"})
        view = GodRunView(name, "lab", 1, spec, uid=f"uid-{name}")
        train = job_name(name, "train", 1)
        ex.cache.jobs.upsert(owned_job(train, uid=f"uid-{name}", run=name))
        p = job_pod(f"{name}-p", train)
        p["metadata"]["labels"]["godrun.io/run"] = name
        ex.cache.pods.upsert(p)
        views.append(view)
    for _ in range(3):  # three rounds of 20 reconciles while every endpoint hangs
        assert all(ex.observe(v).progress is None for v in views)
    assert ex.poller.pending() == 8, "at most max_pending reads wait; one per pod"
    release.set()
    _wait(lambda: ex.poller.pending() == 0 and len(updated) == 8)
    assert sorted(updated) == sorted({("lab", c.removesuffix("-p")) for c in calls}) and len(calls) == 8
    ex.poller.min_interval = 0
    _wait(lambda: ex.observe(views[0]).progress is not None)
    assert ex.observe(views[0]).progress.epoch == 3


def test_executor_observes_owned_jobs_progress_and_verdict_from_the_cache():
    api = FakeApi()
    ex = KubeExecutor(api, metrics_fetcher=lambda p, port: "godrun_train_epoch 5\n")
    view = run_view()
    train, ev = job_name("r", "train", 1), job_name("r", "evaluate", 1)
    for obj in (owned_job(train), owned_job("stale"), owned_job("other", uid="someone")):
        ex.cache.jobs.upsert(obj)
    ex.cache.pods.upsert(job_pod("p", train))
    obs = ex.observe(view)  # the first look only asks the poller for a read
    assert obs.train.state == "active" and obs.progress is None and obs.stale_jobs == ("stale",)
    _wait(lambda: ex.poller.pending() == 0)
    obs = ex.observe(view)
    assert obs.progress.epoch == 5
    assert obs.evaluate.state == "absent" and api.pod_lists == 0
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    ex.cache.jobs.upsert(owned_job(train, **done))
    ex.cache.jobs.upsert(owned_job(ev, **done))
    ex.cache.pods.upsert(job_pod("p", train, exit_code=0))
    verdict = Verdict(verdict="fail", failed_gates=["tail"]).model_dump_json(by_alias=True)
    # the evaluation pod's watch event lags its Job's: one live LIST keeps the verdict
    api.pods.append(job_pod("q", ev, exit_code=0, message=verdict))
    obs = ex.observe(view)
    assert obs.evaluate.state == "succeeded" and obs.verdict.failed_gates == ["tail"] and api.pod_lists == 1
    ex.cache.pods.upsert(job_pod("q", ev, exit_code=0, message=verdict))
    assert ex.observe(view).verdict.failed_gates == ["tail"] and api.pod_lists == 1, "the cache has it now"


def test_executor_apply_is_idempotent_and_emits_events_off_the_reconcile_path():
    api = FakeApi()
    ex = KubeExecutor(api)
    view = run_view(resources={"gpus": 2})
    create = CreateJob("train", job_name("r", "train", 1), 1, ("python", "-m", "godrun.trainer"))
    ex.apply(view, [create, create])  # second one: 409 -> found, not an error
    assert len(api.jobs) == 1 and ex.cache.expectations.pending(("lab", create.name))
    body = api.jobs[create.name]
    assert body["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["python", "-m", "godrun.trainer.launch"]
    ex.apply(view, [CreateActB("r-actb", {"metadata": {"name": "r-actb"}})] * 2)
    assert list(api.children) == ["r-actb"]
    ex.apply(view, [EmitEvent("Warning", "GatesFailed", "roi")])
    assert ex.events.flush(5)
    (event,) = api.events
    assert event["involvedObject"]["uid"] == "uid-r" and event["reason"] == "GatesFailed" and event["type"] == "Warning"


def test_event_sender_drops_and_counts_on_overflow():
    release, sending = threading.Event(), threading.Event()
    sent: list[dict] = []

    def slow_send(body: dict) -> None:
        sending.set()
        release.wait(5)
        sent.append(body)

    sender = EventSender(slow_send, maxsize=4)
    assert sender.submit({"reason": "first"})
    assert sending.wait(5)  # the thread holds the first one: the queue is empty again
    accepted = [sender.submit({"reason": f"e{i}"}) for i in range(7)]
    assert accepted == [True] * 4 + [False] * 3 and sender.dropped == 3
    started = time.perf_counter()
    assert not sender.submit({"reason": "late"}), "a full queue never blocks the caller"
    assert time.perf_counter() - started < 0.05
    release.set()
    assert sender.flush(5) and [b["reason"] for b in sent] == ["first", "e0", "e1", "e2", "e3"]
    sender.stop()
    assert not sender.submit({"reason": "after stop"}) and sender.dropped == 5


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
    api.godruns["r"] = godrun_obj()
    c = controller(api, polling=Polling(progress_seconds=7))
    c.handle("godruns", "ADDED", copy.deepcopy(api.godruns["r"]))
    assert c.queue.get(timeout=0) == ("lab", "r")
    assert c.reconcile_key(("lab", "r")) == 7
    assert list(api.jobs) == [job_name("r", "train", 1)] and api.status_puts[0]["status"]["phase"] == "Training"
    assert c.cache.godruns.get(("lab", "r"))["status"]["phase"] == "Training", "the write's result is cached"
    assert c.executor.events.flush(5) and api.events[0]["reason"] == "TrainingStarted"
    for _ in range(2):  # the Job is running, as the first write already said: nothing changes any more
        c.reconcile_key(("lab", "r"))
    sync(c, api)
    c.reconcile_key(("lab", "r"))
    assert api.job_posts == 1, "no twin Job, not even a refused one"
    assert len(api.status_puts) == 1, "a status read back from JSON equals the one written: no redundant write"
    m = c.metrics
    c.handle("godruns", "DELETED", api.godruns["r"])
    assert 'godrun="r"' not in generate_latest(m.registry).decode()
    assert c.reconcile_key(("lab", "r")) is None and api.job_posts == 1


def test_expectations_prevent_twins_while_the_job_cache_lags():
    api = FakeApi()
    api.godruns["r"] = godrun_obj()
    c = controller(api)
    c.handle("godruns", "ADDED", copy.deepcopy(api.godruns["r"]))
    now = [0.0]
    c.cache.expectations = Expectations(ttl=60, clock=lambda: now[0])
    c.reconcile_key(("lab", "r"))
    for _ in range(3):  # Job events not delivered yet: the expectation stands in for the Job
        c.reconcile_key(("lab", "r"))
    assert api.job_posts == 1 and len(c.cache.expectations) == 1
    train = job_name("r", "train", 1)
    c.handle("jobs", "ADDED", copy.deepcopy(api.jobs[train]))
    assert len(c.cache.expectations) == 0, "the watch showed the Job: expectation met"
    c.handle("jobs", "DELETED", copy.deepcopy(api.jobs[train]))
    del api.jobs[train]
    c.reconcile_key(("lab", "r"))  # someone deleted it: the cache is believed, the Job recreated once
    assert api.job_posts == 2
    now[0] = 61.0  # the watch never showed the new one: the expectation lapses, a create is tried (and 409s)
    c.reconcile_key(("lab", "r"))
    assert api.job_posts == 3 and len(api.jobs) == 1


def test_cache_follows_watch_events():
    api = FakeApi()
    c = controller(api)
    managed = {"managedFields": [{"manager": "kubectl"}]}
    c.handle("godruns", "ADDED", godrun_obj(rv="5", **managed))
    cached = c.cache.godruns.get(("lab", "r"))
    assert cached["metadata"]["resourceVersion"] == "5" and "managedFields" not in cached["metadata"]
    c.handle("godruns", "MODIFIED", godrun_obj(rv="7", generation=2))
    c.handle("godruns", "MODIFIED", godrun_obj(rv="6"))  # older than what the cache holds: ignored
    assert c.cache.godruns.get(("lab", "r"))["metadata"]["generation"] == 2
    train = job_name("r", "train", 1)
    template = {"spec": {"suspend": True, "template": {"spec": {"containers": []}}}}
    c.handle("jobs", "ADDED", owned_job(train, **template))
    assert [j["spec"] for j in c.cache.jobs.by_index(("lab", "r"))] == [{"suspend": True}]
    moved = owned_job(train, run="elsewhere")
    c.handle("jobs", "MODIFIED", moved)
    assert c.cache.jobs.by_index(("lab", "r")) == [] and len(c.cache.jobs.by_index(("lab", "elsewhere"))) == 1
    c.handle("jobs", "MODIFIED", owned_job(train))
    c.handle("pods", "ADDED", job_pod("p", train) | {"spec": {"containers": [{"name": "big"}]}})
    assert [p["metadata"]["name"] for p in c.cache.pods.by_index(("lab", train))] == ["p"]
    assert "spec" not in c.cache.pods.get(("lab", "p"))
    queued = set()
    while (key := c.queue.get(timeout=0)) is not None:
        queued.add(key)
        c.queue.done(key)
    assert queued == {("lab", "r"), ("lab", "elsewhere")}
    c.handle("pods", "MODIFIED", job_pod("p", train, exit_code=0))
    assert c.queue.get(timeout=0) == ("lab", "r"), "a pod event enqueues its Job's owner"
    c.handle("pods", "DELETED", job_pod("p", train))
    c.handle("godruns", "DELETED", godrun_obj())
    assert len(c.cache.pods) == 0 and c.cache.godruns.get(("lab", "r")) is None


class FakeWatch:
    """Replays scripted watch streams: a list of events, or an exception to raise after them."""

    script: ClassVar[list] = []
    calls: ClassVar[list] = []

    def stream(self, fn, **kw):
        FakeWatch.calls.append(kw["resource_version"])
        events, error = FakeWatch.script.pop(0)
        yield from events
        if error is not None:
            raise error

    def stop(self):
        pass


def test_410_gone_relists_and_forgets_what_vanished(monkeypatch):
    api = FakeApi()
    c = controller(api)
    for kind in c.KINDS:
        c.synced[kind].clear()
    lists = [
        ([godrun_obj("a", rv="3"), godrun_obj("b", rv="4")], "10"),
        ([godrun_obj("a", rv="12"), godrun_obj("c", rv="15")], "20"),
    ]

    def list_fn(**kw):
        items, rv = lists.pop(0)
        return types.SimpleNamespace(data=json.dumps({"metadata": {"resourceVersion": rv}, "items": items}))

    def finish():  # a generator: stops the loop only when the second watch runs
        c.stop.set()
        yield from ()

    modified = {"type": "MODIFIED", "raw_object": godrun_obj("a", rv="11")}
    FakeWatch.calls = []
    FakeWatch.script = [([modified], ApiException(status=410, reason="Gone")), (finish(), None)]
    monkeypatch.setattr("godrun.controller.loop.watch.Watch", FakeWatch)
    c.metrics.observe("lab", "b", GodRunStatus(phase="Training"))
    c._watch_loop("godruns", list_fn)
    assert FakeWatch.calls == ["10", "20"], "the second watch starts from the relist's resourceVersion"
    assert sorted(c.cache.godruns.list_keys()) == [("lab", "a"), ("lab", "c")]
    assert c.cache.godruns.get(("lab", "a"))["metadata"]["resourceVersion"] == "12"
    assert c.synced["godruns"].is_set() and 'godrun="b"' not in generate_latest(c.metrics.registry).decode()
    queued = set()
    while (key := c.queue.get(timeout=0)) is not None:
        queued.add(key)
        c.queue.done(key)
    assert queued == {("lab", "a"), ("lab", "b"), ("lab", "c")}  # b was queued by the first list
    assert c.reconcile_key(("lab", "b")) is None and api.job_posts == 0, "gone from the cache: nothing to do"


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
        "import godrun.controller.main, godrun.controller.loop, godrun.controller.crd, godrun.controller.jobs\n"
        "import godrun.core.machine, godrun.core.commands, godrun.cli\n"
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
    api.godruns["r"] = godrun_obj()

    def refuse(ns, body):
        raise ApiException(status=422, reason="Invalid")

    api.create_namespaced_job = refuse
    c = controller(api)
    c.handle("godruns", "ADDED", copy.deepcopy(api.godruns["r"]))
    assert c.reconcile_key(("lab", "r")) is None
    st = api.status_puts[-1]["status"]
    assert c.executor.events.flush(5)
    assert (st["phase"], st["reason"]) == ("Error", "JobRejected") and api.events[-1]["reason"] == "JobRejected"
