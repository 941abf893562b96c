"""The daily summary: counts by severity, source and route, the noisiest alerts, time from event
to delivery and to acknowledgement (p50/p95 per severity: the measured MTTR), and the health of
the alerting pipeline itself (retries, fallbacks, failures, deliveries in doubt, dead letters).

:func:`summarize` is pure (alerts and figures in, a JSON-able dict out); percentiles are
nearest-rank over the alerts created in the window.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pitstop.alerts.ledger import stats_key
from pitstop.alerts.model import Alert, iso
from pitstop.alerts.timing import percentile
from pitstop.kernel.constants import (
    ALERT_SUMMARY_SENT_PREFIX,
    ALERTS_GROUP,
    ALERTS_TTL_SECONDS,
    DEAD_LETTER_STREAM,
    LOG_ALERT_ACTIVITY,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pitstop.alerts.config import AlertsConfig
    from pitstop.alerts.runtime import AlertsRuntime
    from pitstop.alerts.store import AlertStore

__all__ = ["day_window", "format_summary", "gather", "send_daily_summary", "summarize"]

PIPELINE_FIELDS = ("delivered", "retries", "fallbacks", "failed", "in_doubt")


def day_window(day: str) -> tuple[float, float]:
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def _spread(values: list[float]) -> dict[str, Any]:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return {"n": len(values), "p50": None if p50 is None else round(p50, 3),
            "p95": None if p95 is None else round(p95, 3)}


def summarize(alerts: list[Alert], *, acks: dict[str, tuple[float, str]],
              delivered: dict[str, float], stats: dict[str, int], dead_letters: int,
              start: float, end: float) -> dict[str, Any]:
    """The summary of ``alerts`` (created in [start, end)) with their acks and first deliveries
    (epoch seconds by alert id)."""
    alerts = [a for a in alerts if start <= a.created_at < end]
    to_deliver: dict[str, list[float]] = {}
    to_ack: dict[str, list[float]] = {}
    for alert in alerts:
        if alert.id in delivered:
            to_deliver.setdefault(alert.severity, []).append(
                max(0.0, delivered[alert.id] - alert.first_event_at))
        ack = acks.get(alert.id)
        if ack is not None:
            to_ack.setdefault(alert.severity, []).append(max(0.0, ack[0] - alert.first_event_at))
    noisiest = sorted(alerts, key=lambda a: (-a.count, a.created_at))[:5]
    sources: Counter[str] = Counter()
    for alert in alerts:
        sources[alert.source] += alert.count
    return {
        "from": iso(start), "to": iso(end), "alerts": len(alerts),
        "events": sum(a.count for a in alerts),
        "by_severity": dict(Counter(a.severity for a in alerts).most_common()),
        "by_source": dict(sources.most_common(10)),
        "by_route": dict(Counter(a.route_id for a in alerts).most_common()),
        "noisiest": [{"id": a.id, "subject": a.group.get("subject") or a.labels.get("type", ""),
                      "severity": a.severity, "events": a.count} for a in noisiest],
        "time_to_deliver": {sev: _spread(v) for sev, v in sorted(to_deliver.items())},
        "time_to_ack": {sev: _spread(v) for sev, v in sorted(to_ack.items())},
        "unacknowledged": sum(1 for a in alerts if a.id not in acks),
        "pipeline": {**{name: int(stats.get(name, 0)) for name in PIPELINE_FIELDS},
                     "dead_letters": dead_letters},
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['alerts']} alerts ({summary['events']} events), "
             f"{summary['from']} to {summary['to']}"]
    if summary["by_severity"]:
        lines.append("by severity: " + ", ".join(f"{k} {v}" for k, v in
                                                 summary["by_severity"].items()))
    if summary["by_source"]:
        lines.append("by source (events): " + ", ".join(f"{k} {v}" for k, v in
                                                        summary["by_source"].items()))
    if summary["by_route"]:
        lines.append("by route: " + ", ".join(f"{k} {v}" for k, v in summary["by_route"].items()))
    for item in summary["noisiest"]:
        lines.append(f"noisy: {item['subject']} ({item['severity']}) {item['events']} events, "
                     f"alert {item['id']}")
    for label, key in (("event -> delivered", "time_to_deliver"),
                       ("event -> acknowledged", "time_to_ack")):
        for severity, spread in summary[key].items():
            lines.append(f"{label} [{severity}]: p50 {_seconds(spread['p50'])}, "
                         f"p95 {_seconds(spread['p95'])} (n={spread['n']})")
    lines.append(f"unacknowledged: {summary['unacknowledged']}")
    pipeline = summary["pipeline"]
    lines.append("pipeline: " + ", ".join(f"{k} {v}" for k, v in pipeline.items()))
    return "\n".join(lines)


def count_dead_letters(store: AlertStore, start: float, end: float) -> int:
    entries = store.client.xrange(DEAD_LETTER_STREAM, min=f"{int(start * 1000)}-0",
                                  max=f"{int(end * 1000)}-0", count=100_000)
    count = 0
    for _, fields in entries or []:
        group = (fields or {}).get(b"group", (fields or {}).get("group"))
        if group in (ALERTS_GROUP, ALERTS_GROUP.encode()):
            count += 1
    return count


def gather(store: AlertStore, start: float, end: float) -> dict[str, Any]:
    """The summary of [start, end) from Redis."""
    alerts = store.recent(since=start, until=end)
    ids = [a.id for a in alerts]
    raw_stats = store.client.hgetall(stats_key(start))
    stats = {(k.decode() if isinstance(k, bytes) else str(k)): int(v)
             for k, v in raw_stats.items()}
    return summarize(alerts, acks=store.acks(ids), delivered=store.delivered(ids), stats=stats,
                     dead_letters=count_dead_letters(store, start, end), start=start, end=end)


def due_day(now: float, at: str) -> str | None:
    """The day whose summary is due at ``now`` (yesterday, once past ``at`` UTC), else None."""
    moment = datetime.fromtimestamp(now, tz=UTC)
    hour, minute = (int(part) for part in at.split(":"))
    if (moment.hour, moment.minute) < (hour, minute):
        return None
    return (moment - timedelta(days=1)).strftime("%Y-%m-%d")


def send_daily_summary(rt: AlertsRuntime, config: AlertsConfig, *,
                       enqueue: Callable[[str], None], now: float | None = None) -> str:
    """Send yesterday's summary once (``SET NX`` per day), after ``summary.at``."""
    moment = rt.clock() if now is None else now
    day = due_day(moment, config.file.summary.at)
    if day is None:
        return "not yet"
    if not rt.client.set(ALERT_SUMMARY_SENT_PREFIX + day, str(moment), nx=True,
                         ex=ALERTS_TTL_SECONDS):
        return "already sent"
    start, end = day_window(day)
    summary = gather(rt.store, start, end)
    rt.state_log(LOG_ALERT_ACTIVITY).append({"kind": "summary", "date": day, "summary": summary})
    receiver = config.file.summary.receiver
    if receiver is None:
        return "logged"
    notification = {"id": f"summary.{day}", "kind": "summary", "receiver": receiver,
                    "created_at": moment, "alerts": [], "alert_ids": [], "more_alerts": 0,
                    "more_events": 0, "date": day, "summary": summary,
                    "summary_text": format_summary(summary)}
    with rt.client.pipeline(transaction=True) as pipe:
        deliveries = rt.store.ledger.queue_notification(
            pipe, notification, config.receiver_channels(receiver), now=moment,
            requeue_after=config.file.delivery.requeue_after)
        pipe.execute()
    for did in deliveries:
        enqueue(did)
    return f"sent to {receiver}"
