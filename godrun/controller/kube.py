"""The Kubernetes executor and the control loop (official `kubernetes` client; never imports torch).

- `KubeExecutor` implements `machine.Executor`: it observes a run's Jobs/Pods from the informer caches
  (`ClusterCache`), the trainer's metrics endpoint and the evaluation pod's termination message, applies actions
  (Jobs, headless Services, the Act B child) synchronously, hands Events to a background sender, and writes
  the status through the status subresource with optimistic-concurrency retries.
- `Controller` watches GodRuns, the Jobs it owns and their Pods into those caches (resourceVersion bookkeeping,
  relist after 410 Gone, periodic resync) and feeds a rate-limited work queue that worker threads drain through
  `reconcile()`: a reconcile reads only the caches, so its API calls are the writes it makes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from godrun.controller import jobs as J
from godrun.controller.cache import EventSender, Expectations, Store, obj_key
from godrun.controller.metrics import ControllerMetrics
from godrun.controller.workqueue import WorkQueue
from godrun.core.machine import (
    Action,
    CreateActB,
    CreateJob,
    DeleteJob,
    EmitEvent,
    GodRunView,
    Observed,
    StageObs,
    current_job_names,
    reconcile,
    settle_conditions,
)
from godrun.core.names import act_b_name, run_label, service_name
from godrun.spec import API_GROUP, API_VERSION, KIND, PLURAL, GodRunSpec, GodRunStatus, Progress, Verdict
from godrun.spec import format_validation_error as fmt_error

log = logging.getLogger("godrun.controller")
COMPONENT = "godrun-controller"
MANAGED = "app.kubernetes.io/managed-by=godrun-controller"
Key = tuple[str, str]  # (namespace, name)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------- pure parsing helpers


PROGRESS_METRICS = {
    "godrun_train_epoch": "epoch",
    "godrun_train_epochs": "epochs",
    "godrun_train_best_epoch": "best_epoch",
    "godrun_train_panel_psnr_mean_decibels": "psnr_mean",
    "godrun_train_panel_sam_mean_degrees": "sam_mean",
    "godrun_train_epoch_seconds": "epoch_seconds",
}


def parse_progress(text: str) -> Progress | None:
    """Progress from the trainer's Prometheus exposition (None when it carries none of the metrics)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        field = PROGRESS_METRICS.get(family.name)
        if field and family.samples:
            values[field] = family.samples[0].value
    if not values:
        return None
    ints = {k: int(v) for k, v in values.items() if k in ("epoch", "epochs", "best_epoch") and v >= 0}  # NaN: False
    floats = {k: v for k, v in values.items() if k in ("psnr_mean", "sam_mean", "epoch_seconds") and v == v}  # no NaN
    return Progress(**ints, **floats)


def parse_verdict(message: str) -> tuple[Verdict | None, str | None]:
    """(verdict, None) from a termination message, (None, error) when it is not a Verdict, (None, None) if empty."""
    if not message.strip():
        return None, None
    try:
        return Verdict.model_validate_json(message), None
    except ValidationError as exc:
        return None, fmt_error(exc)[:300]
    except ValueError as exc:  # not JSON at all
        return None, str(exc)[:300]


_EXIT_IN_MESSAGE = re.compile(r"exit code (\d+)")


def job_stage_obs(job: dict[str, Any] | None, pods: Sequence[dict[str, Any]] = ()) -> StageObs:
    """A Job (raw API dict) and its pods -> StageObs."""
    if job is None:
        return StageObs()
    status, spec = job.get("status") or {}, job.get("spec") or {}
    conds = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    exit_code, term_message = _last_termination(pods)
    disrupted = any(_pod_condition(p, "DisruptionTarget") for p in pods)
    for failed in ("Failed", "FailureTarget"):
        if failed in conds:
            c = conds[failed]
            if exit_code is None and (m := _EXIT_IN_MESSAGE.search(c.get("message") or "")):
                exit_code = int(m.group(1))
            message = term_message or c.get("message") or ""
            return StageObs("failed", reason=c.get("reason") or "", exit_code=exit_code, message=message)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        return StageObs("succeeded", exit_code=0, message=term_message)
    return StageObs("active", disrupted=disrupted, suspended=bool(spec.get("suspend")) or "Suspended" in conds)


def _pod_condition(pod: dict[str, Any], type_: str) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conds)


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term:
            return term
    return None


def _pod_time(pod: dict[str, Any]) -> str:
    term = _terminated(pod) or {}
    return term.get("finishedAt") or (pod.get("metadata") or {}).get("creationTimestamp") or ""


def _last_termination(pods: Sequence[dict[str, Any]]) -> tuple[int | None, str]:
    """Exit code and termination message of the most recently finished pod."""
    finished = [p for p in pods if _terminated(p)]
    if not finished:
        return None, ""
    term = _terminated(max(finished, key=_pod_time)) or {}
    return term.get("exitCode"), term.get("message") or ""


def succeeded_pod_message(pods: Sequence[dict[str, Any]]) -> str:
    """Termination message of the newest pod that exited 0 (the evaluator's verdict)."""
    ok = [p for p in pods if (_terminated(p) or {}).get("exitCode") == 0]
    return ((_terminated(max(ok, key=_pod_time)) or {}).get("message") or "") if ok else ""


def view_from_object(obj: dict[str, Any]) -> GodRunView:
    """A GodRun as the API returns it -> GodRunView (raises ValidationError on a spec pydantic refuses)."""
    meta = obj["metadata"]
    spec = GodRunSpec.model_validate(obj.get("spec") or {})
    try:
        status = GodRunStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = GodRunStatus()  # unreadable status: recompute from observation (names are deterministic)
    return GodRunView(
        name=meta["name"],
        namespace=meta["namespace"],
        generation=int(meta.get("generation") or 1),
        spec=spec,
        status=status,
        uid=meta.get("uid"),
        resource_version=meta.get("resourceVersion"),
    )


def status_body(status: GodRunStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- API access


@dataclass
class KubeApi:
    core: client.CoreV1Api
    batch: client.BatchV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def from_client(cls, api_client: client.ApiClient | None = None) -> KubeApi:
        return cls(client.CoreV1Api(api_client), client.BatchV1Api(api_client), client.CustomObjectsApi(api_client))

    def raw(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call a typed API method but return the JSON as plain dicts (camelCase, like the manifests)."""
        resp = fn(*args, _preload_content=False, **kwargs)
        return json.loads(resp.data)


def fetch_metrics_direct(pod: dict[str, Any], port: int, timeout: float = 3.0) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
        return resp.read().decode("utf-8", "replace")


FINISHED_CONDITIONS = ("Complete", "SuccessCriteriaMet", "Failed", "FailureTarget")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def _run_index(job: dict[str, Any]) -> Key | None:
    """Jobs by (namespace, godrun.io/run label): the cached form of the per-run label selector."""
    meta = job.get("metadata") or {}
    label = (meta.get("labels") or {}).get("godrun.io/run")
    return (meta.get("namespace", ""), label) if label else None


def _job_name_index(pod: dict[str, Any]) -> Key | None:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    job = next((labels[k] for k in JOB_NAME_LABELS if labels.get(k)), None)
    return (meta.get("namespace", ""), job) if job else None


def slim(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What the cache keeps of an object: no managedFields, no pod spec, no Job pod template (memory)."""
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    if kind == "pods":
        out.pop("spec", None)
    elif kind == "jobs" and isinstance(out.get("spec"), dict):
        out["spec"] = {k: v for k, v in out["spec"].items() if k != "template"}
    return out


@dataclass
class ClusterCache:
    """The controller's informer caches, filled by its watches, plus the Jobs it expects them to show."""

    godruns: Store = field(default_factory=Store)
    jobs: Store = field(default_factory=lambda: Store(index=_run_index))
    pods: Store = field(default_factory=lambda: Store(index=_job_name_index))
    expectations: Expectations = field(default_factory=Expectations)

    def store(self, kind: str) -> Store:
        return {"godruns": self.godruns, "jobs": self.jobs, "pods": self.pods}[kind]


class KubeExecutor:
    """`machine.Executor` on a Kubernetes cluster; reads come from `self.cache`, writes go to the API."""

    def __init__(
        self,
        api: KubeApi,
        *,
        identity: str = COMPONENT,
        progress: str = "direct",  # direct (pod IP) | proxy (API server pod proxy) | off
        metrics_fetcher: Callable[[dict[str, Any], int], str | None] | None = None,
        cache: ClusterCache | None = None,
        event_queue: int = 1000,
    ) -> None:
        self.api, self.identity, self.progress_mode = api, identity, progress
        self.fetch = metrics_fetcher or (fetch_metrics_direct if progress == "direct" else self._fetch_via_proxy)
        self.cache = cache or ClusterCache()
        self.events = EventSender(self._send_event, maxsize=event_queue)

    # ---- observe

    def observe(self, run: GodRunView) -> Observed:
        ns = run.namespace
        jobs = self.cache.jobs.by_index((ns, run_label(run.name)))
        by_name = {j["metadata"]["name"]: j for j in jobs if _owned_by(j, run)}
        names = current_job_names(run)
        obs: dict[str, StageObs] = {}
        pods: dict[str, list[dict[str, Any]]] = {}
        for stage, name in names.items():
            job = by_name.get(name)
            pods[stage] = self._pods(ns, name, job) if job is not None else []
            if job is None and self.cache.expectations.pending((ns, name)):
                obs[stage] = StageObs("active")  # created by us, not in the cache yet: never create a twin
            else:
                obs[stage] = job_stage_obs(job, pods[stage])
        verdict, verdict_error = None, None
        if obs["evaluate"].state == "succeeded":
            verdict, verdict_error = parse_verdict(succeeded_pod_message(pods["evaluate"]))
        stale = tuple(
            n for n, j in sorted(by_name.items()) if n not in names.values() and job_stage_obs(j).state == "active"
        )
        act_b = run.spec.fallback.launch_act_b and self.cache.godruns.get((ns, act_b_name(run.name))) is not None
        return Observed(
            train=obs["train"],
            evaluate=obs["evaluate"],
            progress=self._progress(pods["train"]) if obs["train"].state == "active" else None,
            verdict=verdict,
            verdict_error=verdict_error,
            act_b_exists=act_b,
            stale_jobs=stale,
        )

    def _pods(self, ns: str, job: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The Job's pods from the cache; for a finished Job whose terminated pod the pod watch has not
        delivered yet (a separate stream from the Job's), one live LIST: its exit code and termination
        message (the verdict) must not be lost to the race."""
        cached = self.cache.pods.by_index((ns, job))
        conds = ((obj.get("status") or {}).get("conditions")) or []
        finished = any(c.get("type") in FINISHED_CONDITIONS and c.get("status") == "True" for c in conds)
        if not finished or any(_terminated(p) for p in cached):
            return cached
        listed = self.api.raw(
            self.api.core.list_namespaced_pod, ns, label_selector=f"batch.kubernetes.io/job-name={job}"
        )
        return listed.get("items") or []

    def _progress(self, pods: Sequence[dict[str, Any]]) -> Progress | None:
        if self.progress_mode == "off":
            return None
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        rank0 = [p for p in running if _completion_index(p) in (None, "0")]
        for pod in rank0[:1]:
            try:
                text = self.fetch(pod, J.TRAINER_METRICS_PORT)
            except Exception as exc:  # endpoint not up yet, pod restarting: keep the last progress
                log.debug("metrics of %s not readable: %s", pod["metadata"]["name"], exc)
                return None
            return parse_progress(text) if text else None
        return None

    def _fetch_via_proxy(self, pod: dict[str, Any], port: int) -> str | None:
        meta = pod["metadata"]
        return self.api.core.connect_get_namespaced_pod_proxy_with_path(
            f"{meta['name']}:{port}", meta["namespace"], "metrics"
        )

    # ---- apply

    def apply(self, run: GodRunView, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, CreateJob):
                self._create_job(run, action)
            elif isinstance(action, DeleteJob):
                self._delete_job(run, action)
            elif isinstance(action, CreateActB):
                _ignore(
                    409,
                    self.api.custom.create_namespaced_custom_object,
                    API_GROUP,
                    API_VERSION,
                    run.namespace,
                    PLURAL,
                    action.body,
                )
            elif isinstance(action, EmitEvent):
                self.emit(run, action)

    def _create_job(self, run: GodRunView, action: CreateJob) -> None:
        if action.stage == "train" and run.spec.resources.nodes > 1:
            self._check_shared_volume(run)
            svc = J.headless_service(run, action.name, action.generation)
            _ignore(409, self.api.core.create_namespaced_service, run.namespace, svc)
        body = J.job_for(run, action.stage, action.name, action.generation, list(action.argv))
        key = (run.namespace, action.name)
        try:
            if _ignore(409, self.api.batch.create_namespaced_job, run.namespace, body) is None:
                log.info("job %s/%s already exists", run.namespace, action.name)  # found, not twinned
            if self.cache.jobs.get(key) is None:
                self.cache.expectations.expect(key)  # until the Job watch shows it
        except ApiException as exc:
            if exc.status in (400, 422):  # the API refuses this Job: retrying cannot help
                raise JobRejected(f"Job {action.name} rejected: {_api_message(exc)}") from exc
            raise

    def _check_shared_volume(self, run: GodRunView) -> None:
        claim = _ignore(
            404,
            self.api.raw,
            self.api.core.read_namespaced_persistent_volume_claim,
            run.spec.data.claim_name,
            run.namespace,
        )
        problem = J.shared_volume_problem(run.spec, claim)
        if problem:
            raise JobRejected(problem)

    def _delete_job(self, run: GodRunView, action: DeleteJob) -> None:
        opts = client.V1DeleteOptions(propagation_policy="Background")
        _ignore(404, self.api.batch.delete_namespaced_job, action.name, run.namespace, body=opts)
        if run.spec.resources.nodes > 1:
            _ignore(404, self.api.core.delete_namespaced_service, service_name(action.name), run.namespace)

    def emit(self, run: GodRunView, ev: EmitEvent) -> bool:
        """Queue a core/v1 Event on the GodRun for the sender thread (False: dropped, the queue is full)."""
        now = utcnow().isoformat().replace("+00:00", "Z")
        body = {
            "metadata": {"generateName": f"{run.name[:200]}.", "namespace": run.namespace},
            "involvedObject": {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": run.name,
                "namespace": run.namespace,
                "uid": run.uid,
            },
            "type": ev.type,
            "reason": ev.reason,
            "message": ev.message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": f"{API_GROUP}/{COMPONENT}",
            "reportingInstance": self.identity[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        return self.events.submit(body)

    def _send_event(self, body: dict[str, Any]) -> None:
        ns, reason = body["metadata"]["namespace"], body["reason"]
        try:
            self.api.core.create_namespaced_event(ns, body)
        except ApiException as exc:
            log.warning("event %s on %s/%s not recorded: %s", reason, ns, body["involvedObject"]["name"], exc.reason)

    # ---- status

    def write_status(self, run: GodRunView, status: GodRunStatus, attempts: int = 5) -> None:
        """PUT the status subresource; on 409 re-read and retry while the generation is unchanged."""
        rv = run.resource_version
        for _ in range(attempts):
            if rv is None:
                rv, generation = self._current_version(run)
                if generation != run.generation:
                    raise ConflictError(f"{run.namespace}/{run.name} changed generation; reconcile again")
            body = {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "metadata": {"name": run.name, "namespace": run.namespace, "resourceVersion": rv},
                "status": status_body(status),
            }
            try:
                written = self.api.custom.replace_namespaced_custom_object_status(
                    API_GROUP, API_VERSION, run.namespace, PLURAL, run.name, body
                )
                self._remember(written)  # the next reconcile must not start from the status before this write
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
                rv = None
        raise ConflictError(f"status of {run.namespace}/{run.name}: too many conflicts")

    def _current_version(self, run: GodRunView) -> tuple[str, int]:
        obj = self.api.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, run.namespace, PLURAL, run.name)
        self._remember(obj)
        return obj["metadata"]["resourceVersion"], int(obj["metadata"].get("generation") or 1)

    def _remember(self, obj: Any) -> None:
        """A GodRun the API just returned goes into the cache (unless the watch already brought a newer one)."""
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if meta and meta.get("name") and meta.get("namespace") and "spec" in obj:
            self.cache.godruns.upsert(slim("godruns", obj))


class ConflictError(RuntimeError):
    """The object changed under us; the work queue retries the key."""


class JobRejected(RuntimeError):
    """The API server refused a Job built from this spec (invalid); the run goes to Error."""


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)[:800]
    except ValueError:
        return str(exc.reason)


def _ignore(status: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if exc.status == status:
            return None
        raise


def _owned_by(obj: dict[str, Any], run: GodRunView) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    if run.uid is None or not refs:
        return not refs or any(r.get("kind") == KIND and r.get("name") == run.name for r in refs)
    return any(r.get("uid") == run.uid for r in refs)


def _completion_index(pod: dict[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(J.COMPLETION_INDEX_ANNOTATION)


def _owner_key(obj: dict[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(f"{API_GROUP}/"):
            return meta.get("namespace", ""), ref["name"]
    return None


# --------------------------------------------------------------------------- the control loop


@dataclass
class LoopConfig:
    namespace: str | None = None  # None: all namespaces
    workers: int = 2
    resync_seconds: float = 300.0
    watch_timeout_seconds: int = 300
    progress_seconds: float = 30.0


class Controller:
    """Watches GodRuns, their Jobs and Pods into the executor's caches and reconciles each changed run."""

    KINDS = ("godruns", "jobs", "pods")

    def __init__(self, api: KubeApi, executor: KubeExecutor, metrics: ControllerMetrics, cfg: LoopConfig) -> None:
        self.api, self.executor, self.metrics, self.cfg = api, executor, metrics, cfg
        self.cache = executor.cache
        self.queue = WorkQueue()
        self.stop = threading.Event()
        self.synced = {kind: threading.Event() for kind in self.KINDS}
        self._threads: list[threading.Thread] = []

    # ---- lifecycle

    def start(self) -> None:
        lists = {"godruns": self._list_godruns, "jobs": self._list_jobs, "pods": self._list_pods}
        targets: list[tuple[str, Callable[[], None]]] = [
            (f"watch-{kind}", lambda kind=kind: self._watch_loop(kind, lists[kind])) for kind in self.KINDS
        ]
        targets.append(("resync", self._resync_loop))
        targets += [(f"worker-{i}", self._worker) for i in range(self.cfg.workers)]
        for name, target in targets:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def run(self) -> None:
        """Start and block until stopped (the leader-election callback)."""
        self.start()
        self.stop.wait()

    def shutdown(self) -> None:
        self.stop.set()
        self.queue.shutdown()
        self.executor.events.flush(timeout=2.0)  # the Events already decided still go out

    def ready(self) -> bool:
        return all(e.is_set() for e in self.synced.values())

    # ---- watches

    def _list_godruns(self, **kw: Any) -> Any:
        c, ns = self.api.custom, self.cfg.namespace
        if ns:
            return c.list_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, **kw)
        return c.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL, **kw)

    def _list_jobs(self, **kw: Any) -> Any:
        b, ns = self.api.batch, self.cfg.namespace
        if ns:
            return b.list_namespaced_job(ns, label_selector=MANAGED, **kw)
        return b.list_job_for_all_namespaces(label_selector=MANAGED, **kw)

    def _list_pods(self, **kw: Any) -> Any:
        c, ns = self.api.core, self.cfg.namespace  # the Job pod template carries the managed-by label
        if ns:
            return c.list_namespaced_pod(ns, label_selector=MANAGED, **kw)
        return c.list_pod_for_all_namespaces(label_selector=MANAGED, **kw)

    def _watch_loop(self, kind: str, list_fn: Callable[..., Any]) -> None:
        rv: str | None = None
        backoff = 1.0
        while not self.stop.is_set():
            try:
                if rv is None:  # (re)list: replaces the cache; every object counts as changed
                    listed = list_fn(_preload_content=False)
                    body = json.loads(listed.data)
                    self.relist(kind, body.get("items") or [])
                    rv = body["metadata"]["resourceVersion"]
                    self.synced[kind].set()
                w = watch.Watch()
                stream = w.stream(
                    list_fn,
                    resource_version=rv,
                    timeout_seconds=self.cfg.watch_timeout_seconds,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    obj = event.get("raw_object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event["type"] != "BOOKMARK":
                        self.handle(kind, event["type"], obj)
                    if self.stop.is_set():
                        w.stop()
                backoff = 1.0
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: relist
                    log.info("%s watch expired (410 Gone); relisting", kind)
                    rv = None
                    continue
                log.warning("%s watch failed: %s %s", kind, exc.status, exc.reason)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # connection reset, API server restart, ...
                log.warning("%s watch interrupted: %s", kind, exc)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def relist(self, kind: str, items: list[dict[str, Any]]) -> None:
        """A full LIST: the cache becomes `items`; objects gone meanwhile are handled as DELETED."""
        slimmed = [slim(kind, o) for o in items]
        removed = self.cache.store(kind).replace(slimmed)
        for obj in slimmed:
            self._dispatch(kind, "SYNC", obj)
        for obj in removed:
            self._dispatch(kind, "DELETED", obj)

    def handle(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        """One watch event: update the cache, then enqueue the run it concerns."""
        store = self.cache.store(kind)
        if type_ == "DELETED":
            store.delete(obj_key(obj))
        else:
            store.upsert(slim(kind, obj))
        self._dispatch(kind, type_, obj)

    def _dispatch(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        {"godruns": self._on_godrun, "jobs": self._on_job, "pods": self._on_pod}[kind](type_, obj)

    def _on_godrun(self, type_: str, obj: dict[str, Any]) -> None:
        key = obj_key(obj)
        if type_ == "DELETED":
            self.metrics.forget(*key)
            self.queue.forget(key)
            return
        self.queue.add(key)

    def _on_job(self, type_: str, obj: dict[str, Any]) -> None:
        self.cache.expectations.observed(obj_key(obj))  # seen (or gone): the cache speaks for it now
        key = _owner_key(obj)
        if key is not None:
            self.queue.add(key)

    def _on_pod(self, type_: str, obj: dict[str, Any]) -> None:
        job_key = _job_name_index(obj)
        job = self.cache.jobs.get(job_key) if job_key else None
        key = _owner_key(job) if job else None
        if key is not None:
            self.queue.add(key)

    def _resync_loop(self) -> None:
        while not self.stop.wait(self.cfg.resync_seconds):
            for key in self.cache.godruns.list_keys():
                self.queue.add(key)

    # ---- workers

    def _worker(self) -> None:
        while not self.stop.is_set() and not self.ready():  # a reconcile on half-filled caches would twin Jobs
            self.stop.wait(0.05)
        while not self.stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                self.process(key)
            finally:
                self.queue.done(key)

    def process(self, key: Key) -> None:
        """Reconcile one GodRun; failures are retried with backoff."""
        started = time.perf_counter()
        try:
            delay = self.reconcile_key(key)
            self.queue.forget(key)
            if delay is not None:
                self.queue.add_after(key, delay)
        except Exception as exc:
            self.metrics.reconcile_errors.inc()
            delay = self.queue.add_rate_limited(key)
            level = logging.INFO if isinstance(exc, ConflictError) else logging.WARNING
            log.log(
                level, "reconcile %s/%s failed (retry in %.1fs): %s", *key, delay, exc, exc_info=level > logging.INFO
            )
        finally:
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)

    def reconcile_key(self, key: Key) -> float | None:
        ns, name = key
        obj = self.cache.godruns.get(key)
        if obj is None:  # deleted (the cache is filled before any worker runs)
            self.metrics.forget(ns, name)
            return None
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return None
        try:
            run = view_from_object(obj)
        except ValidationError as exc:
            self._invalid_spec(obj, exc)
            return None
        try:
            decision = reconcile(self.executor, run, utcnow())
        except JobRejected as exc:
            self._rejected(run, str(exc))
            return None
        self.metrics.observe(ns, name, decision.status, before=run.status)
        if decision.requeue_after is None:
            return None
        return self.cfg.progress_seconds if decision.status.phase in ("Training", "Pending") else decision.requeue_after

    def _rejected(self, run: GodRunView, message: str) -> None:
        status = run.status.model_copy(deep=True)
        if status.observed_generation != run.generation:
            status = GodRunStatus(observed_generation=run.generation)
        status.phase, status.reason, status.message = "Error", "JobRejected", message
        status.completion_time = utcnow()
        settle_conditions(status, status.completion_time)
        self.executor.emit(run, EmitEvent("Warning", "JobRejected", message))
        self.executor.write_status(run, status)
        self.metrics.observe(run.namespace, run.name, status, before=run.status)

    def _invalid_spec(self, obj: dict[str, Any], exc: ValidationError) -> None:
        """A spec the CRD let through but pydantic refuses: Error/InvalidSpec, nothing started."""
        meta = obj["metadata"]
        run = GodRunView(
            meta["name"], meta["namespace"], int(meta.get("generation") or 1), GodRunSpec.model_construct()
        )
        run = _with_rv(run, meta)
        status = GodRunStatus(
            phase="Error",
            reason="InvalidSpec",
            message=fmt_error(exc, prefix="spec.")[:1024],
            observed_generation=run.generation,
            completion_time=utcnow(),
        )
        settle_conditions(status, status.completion_time)
        old = obj.get("status") or {}
        if old.get("reason") != "InvalidSpec" or old.get("observedGeneration") != run.generation:
            self.executor.emit(run, EmitEvent("Warning", "InvalidSpec", status.message))
            self.executor.write_status(run, status)
        self.metrics.observe(run.namespace, run.name, status)


def _with_rv(run: GodRunView, meta: dict[str, Any]) -> GodRunView:
    return replace(run, uid=meta.get("uid"), resource_version=meta.get("resourceVersion"))


def keys_of(objs: Iterable[dict[str, Any]]) -> list[Key]:
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs]
