"""What the fleet page reads: the workers and the queues they consume, each queue's depth, the
event stream's consumer groups and how far behind they are, and who leads Beat and the alert
manager.

Workers answer a Celery broadcast, which takes up to its timeout: the web layer imports no
Celery, so ``pitstop serve`` hands in a ``probe`` (worker name -> queues) and a
:class:`WorkerWatch` asks it in the background, at most every few seconds, and the page shows
the last answer and its age instead of waiting for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from pitstop.bus.streamcodec import text_of
from pitstop.kernel.constants import (
    ALERTS_LEADER_KEY,
    BEAT_HEARTBEAT_KEY,
    BEAT_LOCK_KEY,
    DEAD_LETTER_STREAM,
    DEFAULT_QUEUE,
    EVENT_STREAM,
    PATCH_QUEUE,
    SCRIPT_QUEUES,
)

__all__ = ["FleetPage", "WorkerWatch", "fleet_page"]

log = logging.getLogger(__name__)

WorkerProbe = Callable[[], dict[str, list[str]]]
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
"""kombu's Redis transport keeps priorities 3, 6 and 9 in lists of their own next to the queue's."""
UNACKED_KEY = "unacked"
"""kombu's hash of messages delivered to a worker and not yet acknowledged."""
LAG_CAP = 10_000
"""Entries counted past a group's last delivered one at most (the page says "10000+")."""


class WorkerWatch:
    """The last answer of ``probe`` (refreshed in the background when older than ``max_age``)."""

    def __init__(self, probe: WorkerProbe | None, *, max_age: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.max_age = max_age
        self.clock = clock
        self.workers: dict[str, list[str]] | None = None
        self.error: str | None = None
        self.asked_at: float | None = None
        self._busy = threading.Lock()
        self._done = threading.Event()

    def _ask(self) -> None:
        try:
            if self.probe is not None:
                self.workers, self.error = self.probe(), None
        except Exception as exc:  # a broker hiccup is shown on the page, never raised
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("asking the workers failed: %s", exc)
        finally:
            self.asked_at = self.clock()
            self._done.set()
            self._busy.release()

    def snapshot(self, *, wait: float = 0.0) -> tuple[dict[str, list[str]] | None, float | None,
                                                       str | None]:
        """(workers, seconds since they answered, error); starts a refresh when stale and
        waits up to ``wait`` seconds for the first answer."""
        if self.probe is None:
            return None, None, "this server was started without a way to ask the workers"
        stale = self.asked_at is None or self.clock() - self.asked_at > self.max_age
        if stale and self._busy.acquire(blocking=False):
            self._done.clear()
            threading.Thread(target=self._ask, name="pitstop-web-workers", daemon=True).start()
        if self.asked_at is None and wait > 0:
            self._done.wait(wait)
        age = None if self.asked_at is None else self.clock() - self.asked_at
        return self.workers, age, self.error


@dataclass
class QueueRow:
    name: str
    depth: int
    consumers: list[str]


@dataclass
class GroupRow:
    name: str
    consumers: int
    pending: int
    last_delivered: str
    lag: int | None
    lag_capped: bool


@dataclass
class FleetPage:
    workers: dict[str, list[str]] | None
    workers_age: float | None
    workers_error: str | None
    queues: list[QueueRow]
    unacked: int
    groups: list[GroupRow]
    stream_length: int
    dead_letters: int
    beat: dict[str, Any]
    alerts_leader: str | None


def queue_depth(client: redis.Redis, names: Iterable[str]) -> dict[str, int]:
    names = list(names)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
        for step in PRIORITY_STEPS:
            pipe.llen(f"{name}{PRIORITY_SEPARATOR}{step}")
    counts = pipe.execute()
    per = 1 + len(PRIORITY_STEPS)
    return {name: sum(int(c) for c in counts[i * per:(i + 1) * per]) for i, name in
            enumerate(names)}


def _lag(client: redis.Redis, stream: str, last_delivered: str) -> tuple[int, bool]:
    entries = client.xrange(stream, min=f"({last_delivered}", max="+", count=LAG_CAP + 1) or []
    return min(len(entries), LAG_CAP), len(entries) > LAG_CAP


def consumer_groups(client: redis.Redis, stream: str = EVENT_STREAM) -> list[GroupRow]:
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream yet
        return []
    rows = []
    for group in groups:
        info = {text_of(k): v for k, v in group.items()}
        last = text_of(info.get("last-delivered-id", "0-0"))
        lag_value = info.get("lag")
        if isinstance(lag_value, int):
            lag, capped = lag_value, False
        else:
            lag, capped = _lag(client, stream, last)
        rows.append(GroupRow(name=text_of(info.get("name", "")),
                             consumers=int(info.get("consumers") or 0),
                             pending=int(info.get("pending") or 0), last_delivered=last,
                             lag=lag, lag_capped=capped))
    return rows


def beat_state(client: redis.Redis, default_ttl: float) -> dict[str, Any]:
    """Who holds Beat's lock, its last heartbeat's age and whether it counts as alive (as
    ``pitstop doctor`` judges it: a heartbeat at most its lock TTL old)."""
    raw: Any = client.get(BEAT_HEARTBEAT_KEY)
    holder_now = client.get(BEAT_LOCK_KEY)
    seconds, micros = client.time()
    now = float(seconds) + float(micros) / 1e6
    state: dict[str, Any] = {"leader": None, "age": None, "ttl": default_ttl, "alive": False,
                             "lock_held": holder_now is not None}
    if raw is None:
        return state
    parts = text_of(raw).split(" ")
    try:
        stamp = float(parts[0])
        ttl = float(parts[2]) if len(parts) > 2 else float(default_ttl)
    except ValueError:
        return state
    age = now - stamp
    state.update(leader=parts[1] if len(parts) > 1 else "", age=age, ttl=ttl,
                 alive=age <= ttl)  # pitstop.fleet.beatlock.beat_alive (a higher layer)
    return state


def fleet_page(client: redis.Redis, watch: WorkerWatch, *, beat_lock_ttl: float,
               extra_queues: Iterable[str] = ()) -> FleetPage:
    workers, age, error = watch.snapshot(wait=1.5)
    consumers: dict[str, list[str]] = {}
    for worker, queues in (workers or {}).items():
        for queue in queues:
            consumers.setdefault(queue, []).append(worker)
    names: list[str] = sorted({DEFAULT_QUEUE, PATCH_QUEUE, *SCRIPT_QUEUES, *extra_queues, *consumers})
    depth = queue_depth(client, names)
    rows = [QueueRow(name, depth[name], sorted(consumers.get(name, []))) for name in names]
    leader: Any = client.get(ALERTS_LEADER_KEY)
    return FleetPage(
        workers=workers, workers_age=age, workers_error=error, queues=rows,
        unacked=int(client.hlen(UNACKED_KEY)), groups=consumer_groups(client),
        stream_length=int(client.xlen(EVENT_STREAM)), dead_letters=int(client.xlen(DEAD_LETTER_STREAM)),
        beat=beat_state(client, beat_lock_ttl),
        alerts_leader=None if leader is None else text_of(leader))
