"""Trainer progress read off the reconcile path: a small pool polls the rank-0 pods' metrics endpoints.

A reconcile asks `ProgressPoller.latest()` for what was read last (never waiting on the network) and thereby
requests a fresh read when the last one is older than `min_interval`; each pod has at most one read in flight,
at most `max_pending` reads wait at once, and a read that changes the progress calls `on_update(run key)` so
the run is reconciled again with it. A run behind a NetworkPolicy whose endpoint never answers costs one pool
thread for the fetch timeout, not a reconcile worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from godrun.controller.cache import Key
from godrun.core.observe import parse_progress
from godrun.spec import Progress

log = logging.getLogger("godrun.controller")
Fetch = Callable[[dict[str, Any], int], str | None]


class ProgressPoller:
    def __init__(
        self,
        fetch: Fetch,
        port: int,
        *,
        workers: int = 4,
        max_pending: int = 64,
        min_interval: float = 5.0,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetch, self.port = fetch, port
        self.max_pending, self.min_interval, self.forget_after = max_pending, min_interval, forget_after
        self.clock = clock
        self.on_update: Callable[[Key], None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="progress")
        self._lock = threading.Lock()
        self._latest: dict[Key, tuple[Progress | None, float]] = {}  # pod -> (progress, when read)
        self._inflight: set[Key] = set()

    def latest(self, run: Key, pod: dict[str, Any]) -> Progress | None:
        """The pod's progress as last read (None: not read yet or not readable); asks for a fresh read."""
        meta = pod["metadata"]
        key: Key = (meta.get("namespace", ""), meta["name"])
        now = self.clock()
        with self._lock:
            progress, read_at = self._latest.get(key, (None, -float("inf")))
            due = now - read_at >= self.min_interval
            if due and key not in self._inflight and len(self._inflight) < self.max_pending:
                self._inflight.add(key)
                self._pool.submit(self._read, run, key, pod)
            self._prune(now)
        return progress

    def pending(self) -> int:
        with self._lock:
            return len(self._inflight)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _read(self, run: Key, key: Key, pod: dict[str, Any]) -> None:
        try:
            text = self.fetch(pod, self.port)
            progress = parse_progress(text) if text else None
        except Exception as exc:  # endpoint not up yet, pod restarting, NetworkPolicy: keep the last progress
            log.debug("metrics of %s/%s not readable: %s", *key, exc)
            progress = None
        with self._lock:
            self._inflight.discard(key)
            before = self._latest.get(key, (None, 0.0))[0]
            kept = progress if progress is not None else before
            self._latest[key] = (kept, self.clock())
        if progress is not None and progress != before and self.on_update is not None:
            self.on_update(run)

    def _prune(self, now: float) -> None:
        old = [k for k, (_, at) in self._latest.items() if now - at > self.forget_after]
        for k in old:
            del self._latest[k]
