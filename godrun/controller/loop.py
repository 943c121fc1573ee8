"""The control loop: watches fill the executor's caches, a rate-limited work queue feeds reconcile workers.

GodRuns, the Jobs the controller owns and their Pods are listed and watched into `ClusterCache`
(resourceVersion bookkeeping, relist after 410 Gone, periodic resync); every change enqueues the run it
concerns, and worker threads drain the queue through `machine.reconcile()`, which reads only the caches,
so a reconcile's API calls are the writes it makes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kubernetes import watch
from kubernetes.client.rest import ApiException

from godrun.controller.cache import Key, obj_key
from godrun.controller.kube import MANAGED, ConflictError, KubeApi, KubeExecutor, utcnow
from godrun.controller.observe import job_name_index, owner_key, slim, view_from_object
from godrun.controller.workqueue import WorkQueue
from godrun.core.machine import Polling, reconcile
from godrun.core.prometheus import ControllerMetrics
from godrun.spec import API_GROUP, API_VERSION, PLURAL

log = logging.getLogger("godrun.controller")


@dataclass
class LoopConfig:
    namespace: str | None = None  # None: all namespaces
    workers: int = 2
    resync_seconds: float = 300.0
    watch_timeout_seconds: int = 300
    polling: Polling = field(default_factory=Polling)


class Controller:
    """Watches GodRuns, their Jobs and Pods into the executor's caches and reconciles each changed run."""

    KINDS = ("godruns", "jobs", "pods")

    def __init__(self, api: KubeApi, executor: KubeExecutor, metrics: ControllerMetrics, cfg: LoopConfig) -> None:
        self.api, self.executor, self.metrics, self.cfg = api, executor, metrics, cfg
        self.cache = executor.cache
        self.queue: WorkQueue[Key] = WorkQueue()
        executor.poller.on_update = self.queue.add  # a new epoch read off the workers reconciles its run
        self.stop = threading.Event()
        self.synced = {kind: threading.Event() for kind in self.KINDS}
        self._threads: list[threading.Thread] = []

    # ---- lifecycle

    def start(self) -> None:
        lists = {"godruns": self._list_godruns, "jobs": self._list_jobs, "pods": self._list_pods}
        targets: list[tuple[str, Callable[[], None]]] = [
            (f"watch-{kind}", partial(self._watch_loop, kind, lists[kind])) for kind in self.KINDS
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
        self.executor.poller.shutdown()
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
        key = owner_key(obj)
        if key is not None:
            self.queue.add(key)

    def _on_pod(self, type_: str, obj: dict[str, Any]) -> None:
        job_key = job_name_index(obj)
        job = self.cache.jobs.get(job_key) if job_key else None
        key = owner_key(job) if job else None
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
        run, spec_error = view_from_object(obj)
        decision = reconcile(self.executor, run, utcnow(), self.cfg.polling, spec_error=spec_error)
        self.metrics.observe(ns, name, decision.status, before=run.status)
        return decision.requeue_after
