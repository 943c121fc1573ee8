"""A deduplicating, delaying work queue with per-key exponential backoff (client-go's rate-limited queue).

A key is held at most once; a key added while a worker processes it is handed out again after `done()`,
so one run is never reconciled by two workers at the same time.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(
        self, base_delay: float = 0.5, max_delay: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, K]] = []
        self._when: dict[K, float] = {}  # key -> the time it is due (the heap may hold stale entries)
        self._processing: set[K] = set()
        self._again: dict[K, float] = {}  # added while processing: due time once done()
        self._failures: dict[K, int] = {}
        self._seq = itertools.count()
        self._shutdown = False
        self.base_delay, self.max_delay, self.clock = base_delay, max_delay, clock

    def add(self, key: K) -> None:
        self.add_after(key, 0.0)

    def add_after(self, key: K, delay: float) -> None:
        with self._cv:
            due = self.clock() + max(delay, 0.0)
            if key in self._processing:
                self._again[key] = min(due, self._again.get(key, due))
                return
            if key in self._when and self._when[key] <= due:
                return
            self._when[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cv.notify()

    def add_rate_limited(self, key: K) -> float:
        """Retry `key` after base * 2^failures (capped); returns the delay used."""
        with self._cv:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self.base_delay * (2**n), self.max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset `key`'s backoff (after a successful reconcile)."""
        with self._cv:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cv:
            return self._failures.get(key, 0)

    def get(self, timeout: float | None = None) -> K | None:
        """The next due key (marked processing), or None on shutdown/timeout."""
        end = None if timeout is None else self.clock() + timeout
        with self._cv:
            while not self._shutdown:
                now = self.clock()
                while self._heap and self._when.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded entry
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._when[key]
                    self._processing.add(key)
                    return key
                wait = self._heap[0][0] - now if self._heap else None
                if end is not None:
                    left = end - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cv.wait(wait)
            return None

    def done(self, key: K) -> None:
        with self._cv:
            self._processing.discard(key)
            due = self._again.pop(key, None)
        if due is not None:
            self.add_after(key, due - self.clock())

    def __len__(self) -> int:
        with self._cv:
            return len(self._when)

    def shutdown(self) -> None:
        with self._cv:
            self._shutdown = True
            self._cv.notify_all()
