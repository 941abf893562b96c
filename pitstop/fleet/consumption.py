"""Is every connected worker consuming? ``pitstop doctor``'s check beyond "it answers ping".

A worker can answer ping (its control connection works) and still take nothing: its consumers
were cancelled (``celery control cancel_consumer``, a bug, a broker hiccup it never recovered
from), so messages wait in a queue it should drain. Two samples of the queues, taken a couple of
seconds apart (around the ping), tell: a queue whose next message is the same in both while no
answering worker consumes it, or while a worker consuming it has free pool slots, is not being
consumed. The Celery side (who consumes what, how busy) comes in as :class:`WorkerView` values,
so this module stays free of Celery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

__all__ = ["QueueSample", "WorkerView", "not_consuming", "sample_queues"]

_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
"""kombu's Redis transport keeps a queue as one list per priority step (0 is the queue's own
name): ``<queue>\\x06\\x16<step>``."""


@dataclass(frozen=True)
class WorkerView:
    name: str
    queues: tuple[str, ...]
    """The queues it consumes now (``inspect active_queues``)."""
    busy: int
    """Tasks it is executing."""
    slots: int
    """Its pool's size."""


@dataclass(frozen=True)
class QueueSample:
    waiting: int
    head: bytes | None
    """The message the next consumer would take (kombu pushes left, pops right)."""


def sample_queues(client: redis.Redis, queues: Iterable[str]) -> dict[str, QueueSample]:
    """How many messages wait in each queue, and which is next; one round trip."""
    names = list(dict.fromkeys(queues))
    pipe = client.pipeline(transaction=False)
    for name in names:
        for key in _keys(name):
            pipe.llen(key)
        pipe.lindex(name, -1)
    replies: list[Any] = pipe.execute()
    samples: dict[str, QueueSample] = {}
    width = len(_PRIORITY_STEPS) + 2
    for index, name in enumerate(names):
        chunk = replies[index * width:(index + 1) * width]
        samples[name] = QueueSample(waiting=sum(int(n or 0) for n in chunk[:-1]), head=chunk[-1])
    return samples


def _keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)]


def not_consuming(workers: Iterable[WorkerView], before: Mapping[str, QueueSample],
                  after: Mapping[str, QueueSample], window: float) -> list[str]:
    """What is connected but not consuming, one line each (empty: all is well).

    ``before`` and ``after``: :func:`sample_queues` taken ``window`` seconds apart.
    """
    views = list(workers)
    problems = [f"{view.name} answers but consumes no queue" for view in views if not view.queues]
    for queue, then in sorted(before.items()):
        now = after.get(queue)
        if not then.waiting or now is None or not now.waiting or now.head != then.head:
            continue  # empty, or moving
        takers = [view for view in views if queue in view.queues]
        if not takers:
            problems.append(f"queue {queue}: {now.waiting} waiting and no answering worker "
                            "consumes it")
            continue
        idle = [view for view in takers if view.busy < view.slots]
        if idle:
            names = ", ".join(f"{view.name} ({view.slots - view.busy}/{view.slots} free)"
                              for view in idle)
            problems.append(f"queue {queue}: {now.waiting} waiting, none taken in {window:.1f}s "
                            f"while {names} consume it: connected but not consuming")
    return problems
