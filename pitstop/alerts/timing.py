"""When things happen: pure functions of state and ``now`` (epoch seconds), tested by tables.

Grouping follows Prometheus Alertmanager: a new group waits ``group_wait`` for company before
its first message; later changes go out at most every ``group_interval``; an unchanged firing
group is repeated every ``repeat_interval`` until acknowledged or resolved.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pitstop.alerts.config import Route
    from pitstop.alerts.model import Alert

__all__ = ["backoff_delay", "escalation_due_at", "next_flush_at", "percentile", "storm_admits"]


def next_flush_at(alert: Alert, route: Route) -> float | None:
    """When ``alert`` next needs a message (may be in the past: due), or None."""
    if alert.status == "resolved":
        if alert.resolved_notified or not alert.notified or not route.send_resolved:
            return None
        resolved_at = alert.resolved_at or alert.last_event_at
        since = alert.last_notified_at or resolved_at
        return max(resolved_at, since + route.group_interval)
    if alert.in_digest:
        return None
    if not alert.notified:
        return alert.created_at + route.group_wait if alert.pending else None
    last = alert.last_notified_at or alert.created_at
    if alert.pending:
        return last + route.group_interval
    if alert.acked_at is not None:
        return None
    return last + route.repeat_interval


def escalation_due_at(alert: Alert, route: Route) -> float | None:
    """When an unacknowledged firing alert of an escalating route goes to ``escalate_to``."""
    if (route.escalate_after is None or alert.status != "firing" or alert.acked_at is not None
            or alert.escalated_at is not None):
        return None
    return alert.created_at + route.escalate_after


def storm_admits(sent: Sequence[float], limit: int, window: float, now: float) -> bool:
    """True when a receiver that sent messages at ``sent`` may send one more at ``now``."""
    return sum(1 for moment in sent if now - moment < window) < limit


def storm_reopens_at(sent: Sequence[float], limit: int, window: float, now: float) -> float:
    """When a receiver over its limit may send again (the digest goes out then)."""
    recent = sorted(moment for moment in sent if now - moment < window)
    if len(recent) < limit:
        return now
    return recent[len(recent) - limit] + window


def backoff_delay(attempt: int, *, base: float, cap: float,
                  rng: Callable[[], float] = random.random) -> float:
    """Seconds before attempt ``attempt + 1``: exponential (``base * 2**(attempt-1)``, at most
    ``cap``) with equal jitter (between half and all of it), so retries of a storm spread out."""
    ceiling: float = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])
