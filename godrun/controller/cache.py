"""Informer-style building blocks for the controller (client-go's store, expectations and event broadcaster).

- `Store`: a thread-safe map (namespace, name) -> API object filled by a watch, with one secondary index.
- `Expectations`: objects this controller created that its cache has not shown yet (ReplicaSet style), so a
  reconcile that runs before the watch delivers them does not create them again.
- `EventSender`: posts Events from a background thread through a bounded queue; overflow is dropped and
  counted, never waited for, so the reconcile path does not pay an API round trip per Event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

log = logging.getLogger("godrun.controller")
Key = tuple[str, str]  # (namespace, name)
Obj = dict[str, Any]
EMPTIED_KEPT_SECONDS = 600.0


def obj_key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _older(new: Obj, old: Obj) -> bool:
    """True when `new` carries a lower resourceVersion than `old` (etcd revisions; opaque ones never compare)."""
    a = (new.get("metadata") or {}).get("resourceVersion") or ""
    b = (old.get("metadata") or {}).get("resourceVersion") or ""
    return a.isdigit() and b.isdigit() and int(a) < int(b)


class Store:
    """Objects by (namespace, name), indexed by `index(obj)` (None: not indexed)."""

    def __init__(self, index: Callable[[Obj], Hashable | None] | None = None) -> None:
        self._lock = threading.Lock()
        self._items: dict[Key, Obj] = {}
        self._index_fn = index
        self._index: dict[Hashable, set[Key]] = {}
        self._emptied: dict[Hashable, float] = {}  # index value -> when its last object went (time.time())

    def get(self, key: Key) -> Obj | None:
        with self._lock:
            return self._items.get(key)

    def list_keys(self) -> list[Key]:
        with self._lock:
            return list(self._items)

    def by_index(self, value: Hashable) -> list[Obj]:
        with self._lock:
            return [self._items[k] for k in sorted(self._index.get(value, ()))]

    def emptied_at(self, value: Hashable) -> float | None:
        """When the last object under `value` was deleted (None: it has objects, or never lost one)."""
        with self._lock:
            return None if value in self._index else self._emptied.get(value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def upsert(self, obj: Obj) -> bool:
        """Store `obj` unless the store already holds a newer version of it (returns whether it was stored)."""
        key = obj_key(obj)
        with self._lock:
            old = self._items.get(key)
            if old is not None and _older(obj, old):
                return False
            self._unindex(key, old)
            self._items[key] = obj
            if self._index_fn and (value := self._index_fn(obj)) is not None:
                self._index.setdefault(value, set()).add(key)
                self._emptied.pop(value, None)
            return True

    def delete(self, key: Key) -> Obj | None:
        with self._lock:
            old = self._items.pop(key, None)
            self._unindex(key, old)
            return old

    def replace(self, objs: Iterable[Obj]) -> list[Obj]:
        """A relist: the store becomes `objs`; returns the objects that disappeared."""
        objs = list(objs)
        fresh = {obj_key(o) for o in objs}
        removed = [o for k in self.list_keys() if k not in fresh and (o := self.delete(k)) is not None]
        for obj in objs:
            self.upsert(obj)
        return removed

    def _unindex(self, key: Key, old: Obj | None) -> None:
        if old is None or not self._index_fn or (value := self._index_fn(old)) is None:
            return
        keys = self._index.get(value)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._index[value]
                self._note_emptied(value)

    def _note_emptied(self, value: Hashable) -> None:
        # Only a recent time changes what a reader concludes (a stall needs a minute without pods), so old
        # entries go and the map stays as small as the recent deletions.
        now = time.time()
        for old in [v for v, t in self._emptied.items() if now - t > EMPTIED_KEPT_SECONDS]:
            del self._emptied[old]
        self._emptied[value] = now


class Expectations:
    """Keys of objects created but not yet seen in the cache; an expectation lapses after `ttl` seconds."""

    def __init__(self, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Key, float] = {}
        self.ttl, self.clock = ttl, clock

    def expect(self, key: Key) -> None:
        with self._lock:
            self._pending[key] = self.clock() + self.ttl

    def observed(self, key: Key) -> None:
        with self._lock:
            self._pending.pop(key, None)

    def pending(self, key: Key) -> bool:
        with self._lock:
            due = self._pending.get(key)
            if due is not None and due <= self.clock():
                del self._pending[key]  # the watch never showed it: trust the cache (a create would 409)
                return False
            return due is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class EventSender:
    """Sends Event bodies with `send` from one daemon thread; `submit` never blocks."""

    def __init__(self, send: Callable[[Obj], None], maxsize: int = 1000) -> None:
        self.send, self.maxsize = send, maxsize
        self.sent = self.dropped = self.failed = 0
        self._cv = threading.Condition()
        self._queue: deque[Obj] = deque()
        self._busy = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def submit(self, body: Obj) -> bool:
        """Queue one Event; False (and counted in `dropped`) when the queue is full or the sender stopped."""
        with self._cv:
            if self._stopped or len(self._queue) >= self.maxsize:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("event queue full: %d event(s) dropped so far", self.dropped)
                return False
            self._queue.append(body)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="event-sender", daemon=True)
                self._thread.start()
            self._cv.notify_all()
            return True

    def pending(self) -> int:
        with self._cv:
            return len(self._queue) + int(self._busy)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued Event was sent (or failed); False on timeout."""
        end = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued (up to `timeout`), then stop; later submits are dropped."""
        self.flush(timeout)
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopped:
                    self._cv.wait()
                if not self._queue:
                    return
                body = self._queue.popleft()
                self._busy = True
            try:
                self.send(body)
                self.sent += 1
            except Exception as exc:  # losing an Event is logged, never fatal
                self.failed += 1
                log.warning("event %s not recorded: %s", body.get("reason"), exc)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
