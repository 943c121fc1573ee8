"""The Kubernetes executor (official `kubernetes` client; never imports torch).

`KubeExecutor` implements `machine.Executor`: it observes a run's Jobs/Pods from the informer caches
(`ClusterCache`, filled by the watches of godrun/controller/loop.py), the trainer's metrics endpoint and the
evaluation pod's termination message; applies actions (Jobs, headless Services, the Act B child)
synchronously; hands Events to a background sender; and writes the status through the status subresource
with optimistic-concurrency retries. Reading the objects themselves is godrun/controller/observe.py.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from godrun.contract.termination import read_verdict_message
from godrun.contract.words import LABEL_JOB_NAME, MANAGED_SELECTOR, MANAGER, FailureReason, PodPhase, Stage
from godrun.controller import jobs
from godrun.controller.cache import EventSender, Expectations, Key, Store
from godrun.controller.observe import (
    completion_index,
    foreign_act_b,
    job_finished,
    job_name_index,
    job_stage_obs,
    owned_by,
    run_index,
    slim,
    status_body,
    succeeded_pod_message,
    terminated,
)
from godrun.controller.progress import ProgressPoller
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
)
from godrun.core.names import act_b_name, job_name, run_label, service_name
from godrun.core.observe import final_progress
from godrun.spec import API_GROUP, API_VERSION, KIND, PLURAL, GodRunStatus, Progress

log = logging.getLogger("godrun.controller")
COMPONENT = MANAGER
MANAGED = MANAGED_SELECTOR


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


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
        body: dict[str, Any] = json.loads(resp.data)
        return body


def fetch_metrics_direct(pod: dict[str, Any], port: int, timeout: float = 3.0) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
        text: str = resp.read().decode("utf-8", "replace")
        return text


@dataclass
class ClusterCache:
    """The controller's informer caches, filled by its watches, plus the Jobs it expects them to show."""

    godruns: Store = field(default_factory=Store)
    jobs: Store = field(default_factory=lambda: Store(index=run_index))
    pods: Store = field(default_factory=lambda: Store(index=job_name_index))
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
        self.poller = ProgressPoller(self.fetch, jobs.TRAINER_METRICS_PORT)  # reads off the reconcile workers
        self.cache = cache or ClusterCache()
        self.events = EventSender(self._send_event, maxsize=event_queue)
        # Jobs the API server refused (invalid) -> (the run's UID, the API's message). A Job name carries the
        # run's generation; the UID tells a re-created run of the same name from the one refused.
        self.rejected: dict[Key, tuple[str | None, str]] = {}

    # ---- observe

    def observe(self, run: GodRunView) -> Observed:
        ns = run.namespace
        run_jobs = self.cache.jobs.by_index((ns, run_label(run.name)))
        by_name = {j["metadata"]["name"]: j for j in run_jobs if owned_by(j, run)}
        names = current_job_names(run)
        obs: dict[Stage, StageObs] = {}
        pods: dict[Stage, list[dict[str, Any]]] = {}
        for stage, name in names.items():
            job = by_name.get(name)
            pods[stage] = self._pods(ns, name, job) if job is not None else []
            rejected = self.rejected.get((ns, name))
            if rejected is not None and rejected[0] == run.uid:
                obs[stage] = StageObs("failed", reason=FailureReason.JOB_REJECTED, message=rejected[1])
            elif job is None and self.cache.expectations.pending((ns, name)):
                obs[stage] = StageObs("active")  # created by us, not in the cache yet: never create a twin
            else:
                gone = self.cache.pods.emptied_at((ns, name))
                gone_at = datetime.fromtimestamp(gone, UTC) if gone is not None else None
                obs[stage] = job_stage_obs(job, pods[stage], utcnow(), gone_at)
        verdict, verdict_error = None, None
        if obs[Stage.EVALUATE].state == "succeeded":
            verdict, verdict_error = read_verdict_message(succeeded_pod_message(pods[Stage.EVALUATE]))
        stale = tuple(
            n for n, j in sorted(by_name.items()) if n not in names.values() and job_stage_obs(j).state == "active"
        )
        child = self.cache.godruns.get((ns, act_b_name(run.name))) if run.spec.fallback.launch_act_b else None
        foreign = foreign_act_b(child, run)
        return Observed(
            train=obs[Stage.TRAIN],
            evaluate=obs[Stage.EVALUATE],
            progress=self._progress((ns, run.name), pods[Stage.TRAIN], obs[Stage.TRAIN].state),
            verdict=verdict,
            verdict_error=verdict_error,
            act_b_exists=child is not None and not foreign,
            act_b_foreign=foreign,
            stale_jobs=stale,
        )

    def _pods(self, ns: str, job: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The Job's pods from the cache; for a finished Job whose terminated pod the pod watch has not
        delivered yet (a separate stream from the Job's), one live LIST: its exit code and termination
        message (the verdict) must not be lost to the race."""
        cached = self.cache.pods.by_index((ns, job))
        if not job_finished(obj) or any(terminated(p) for p in cached):
            return cached
        listed = self.api.raw(self.api.core.list_namespaced_pod, ns, label_selector=f"{LABEL_JOB_NAME}={job}")
        return listed.get("items") or []

    def _progress(self, run: Key, pods: Sequence[dict[str, Any]], state: str) -> Progress | None:
        """A running trainer's gauges as the poller last read them from its metrics endpoint (never waiting on
        the network here); a finished one's from its termination message (the final gauges), so that a run
        shorter than the poll interval still reports its epochs."""
        rank0 = [p for p in pods if completion_index(p) in (None, "0")]  # only rank 0 writes it
        if state == "succeeded":
            return final_progress(succeeded_pod_message(rank0))
        if self.progress_mode == "off" or state != "active":
            return None
        running = [p for p in rank0 if (p.get("status") or {}).get("phase") == PodPhase.RUNNING]
        return self.poller.latest(run, running[0]) if running else None

    def _fetch_via_proxy(self, pod: dict[str, Any], port: int) -> str | None:
        meta = pod["metadata"]
        return self.api.core.connect_get_namespaced_pod_proxy_with_path(
            f"{meta['name']}:{port}", meta["namespace"], "metrics"
        )

    # ---- apply

    def apply(self, run: GodRunView, actions: Sequence[Action]) -> bool:
        """Carry out `actions`; stop at a Job the API server refuses (False): observe() reports it."""
        for action in actions:
            if isinstance(action, CreateJob):
                if not self._create_job(run, action):
                    return False
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
        return True

    def _create_job(self, run: GodRunView, action: CreateJob) -> bool:
        if action.stage == Stage.TRAIN and run.spec.resources.nodes > 1:
            problem = self._shared_volume_problem(run)
            if problem:  # refused like an invalid Job: observe() reports it, the run goes to Error
                self.rejected[(run.namespace, action.name)] = (run.uid, problem)
                return False
            svc = jobs.headless_service(run, action.name, action.generation)
            _ignore(409, self.api.core.create_namespaced_service, run.namespace, svc)
            self._delete_earlier_services(run, action)
        body = jobs.job_for(run, action)
        key = (run.namespace, action.name)
        try:
            if _ignore(409, self.api.batch.create_namespaced_job, run.namespace, body) is None:
                log.info("job %s/%s already exists", run.namespace, action.name)  # found, not twinned
            if self.cache.jobs.get(key) is None:
                self.cache.expectations.expect(key)  # until the Job watch shows it
        except ApiException as exc:
            if exc.status in (400, 422):  # the API refuses this Job: retrying cannot help
                self.rejected[key] = (run.uid, _api_message(exc))
                return False
            raise
        return True

    def _delete_earlier_services(self, run: GodRunView, action: CreateJob) -> None:
        """A recreated multi-node Job: the headless Services of this generation's failed attempts go (their
        Jobs stay for their logs until their TTL)."""
        for restart in range(run.spec.jobs.backoff_limit + 1):
            earlier = job_name(run.name, Stage.TRAIN, action.generation, restart)
            if earlier == action.name:
                return
            _ignore(404, self.api.core.delete_namespaced_service, service_name(earlier), run.namespace)

    def _shared_volume_problem(self, run: GodRunView) -> str | None:
        read = self.api.core.read_namespaced_persistent_volume_claim
        claim = _ignore(404, self.api.raw, read, run.spec.data.claim_name, run.namespace)
        return jobs.shared_volume_problem(run.spec, claim)

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
            "type": str(ev.type),
            "reason": str(ev.reason),
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
            self.api.core.create_namespaced_event(ns, body)  # type: ignore[arg-type]  # the client sends dicts as is
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
        obj: Any = self.api.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, run.namespace, PLURAL, run.name)
        self._remember(obj)
        return obj["metadata"]["resourceVersion"], int(obj["metadata"].get("generation") or 1)

    def _remember(self, obj: Any) -> None:
        """A GodRun the API just returned goes into the cache (unless the watch already brought a newer one)."""
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if meta and meta.get("name") and meta.get("namespace") and "spec" in obj:
            self.cache.godruns.upsert(slim("godruns", obj))


class ConflictError(RuntimeError):
    """The object changed under us; the work queue retries the key."""


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
