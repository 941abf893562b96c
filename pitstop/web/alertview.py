"""What the alerts page reads: open alerts by severity with their acknowledgements, silences,
today's summary (time to deliver and to acknowledge, p50/p95 per severity: the measured MTTR)
and the last days' counts; and the actions it takes (ack, silence, unsilence), recorded in
``alert_activity.jsonl`` as the CLI records them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from pitstop.alerts.config import parse_duration
from pitstop.alerts.engine import Silence
from pitstop.alerts.model import Alert, iso
from pitstop.alerts.store import AlertStore
from pitstop.alerts.summary import day_window, gather, summarize
from pitstop.bus.patterns import compile_pattern
from pitstop.kernel.errors import ValidationError
from pitstop.kernel.statelog import StateLog

__all__ = ["AlertDesk", "AlertRow", "AlertsPage"]

SEVERITY_ORDER = {"critical": 0, "failed": 1, "error": 2, "warning": 3, "info": 4, "debug": 5}
HISTORY_DAYS = 7
RECENT_LIMIT = 50


@dataclass
class AlertRow:
    alert: Alert
    subject: str
    acked: tuple[float, str] | None
    delivered: float | None


@dataclass
class AlertsPage:
    open: list[AlertRow]
    recent: list[AlertRow]
    silences: list[Silence]
    summary: dict[str, Any]
    days: list[dict[str, Any]]
    """Per day, oldest first: day, alerts, events, p50 seconds to acknowledge."""
    leader: str | None
    now: float


def subject_of(alert: Alert) -> str:
    return alert.group.get("subject") or ", ".join(
        f"{k}={v}" for k, v in alert.group.items()) or alert.labels.get("type", "")


class AlertDesk:
    def __init__(self, client: redis.Redis, activity: StateLog | None) -> None:
        self.store = AlertStore(client)
        self.client = client
        self.activity = activity

    def now(self) -> float:
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    def _rows(self, alerts: list[Alert]) -> list[AlertRow]:
        ids = [a.id for a in alerts]
        acks, delivered = self.store.acks(ids), self.store.delivered(ids)
        return [AlertRow(a, subject_of(a), acks.get(a.id), delivered.get(a.id)) for a in alerts]

    def page(self) -> AlertsPage:
        now = self.now()
        open_alerts, _ = self.store.load_open()
        firing = sorted(open_alerts.values(), key=lambda a: (
            SEVERITY_ORDER.get(a.severity, 9), -a.last_event_at))
        week_start = day_window(_day(now - (HISTORY_DAYS - 1) * 86400))[0]
        week = self.store.recent(since=week_start)
        open_ids = {a.id for a in firing}
        recent = sorted((a for a in week if a.id not in open_ids),
                        key=lambda a: -a.created_at)[:RECENT_LIMIT]
        today_start, today_end = day_window(_day(now))
        summary = gather(self.store, today_start, min(today_end, now + 1))
        acks = self.store.acks([a.id for a in week])
        days = []
        for offset in range(HISTORY_DAYS - 1, -1, -1):
            day = _day(now - offset * 86400)
            start, end = day_window(day)
            figures = summarize(week, acks=acks, delivered={}, stats={}, dead_letters=0,
                                start=start, end=end)
            p50s = [spread["p50"] for spread in figures["time_to_ack"].values()
                    if spread["p50"] is not None]
            days.append({"day": day, "alerts": figures["alerts"], "events": figures["events"],
                         "ack_p50": max(p50s) if p50s else None})
        return AlertsPage(open=self._rows(firing), recent=self._rows(recent),
                          silences=self.store.silences(now=now), summary=summary, days=days,
                          leader=self.store.leader(), now=now)

    # --- actions ------------------------------------------------------------------------------
    def ack(self, alert_id: str, *, by: str) -> tuple[bool, dict[str, Any]]:
        if not alert_id or len(alert_id) > 200 or self.store.get(alert_id) is None:
            raise ValidationError("no such alert")
        created, record = self.store.ack(alert_id, by=by, now=self.now())
        if created and self.activity is not None:
            self.activity.append({"kind": "ack", "alert": alert_id, "by": record["by"],
                                  "via": "web"})
        return created, record

    def silence(self, pattern: str, duration: str, reason: str, *, by: str) -> Silence:
        compiled = compile_pattern(pattern.strip())
        try:
            seconds = parse_duration(duration.strip())
        except ValueError as exc:
            raise ValidationError(f"duration: {exc}") from None
        if not reason.strip():
            raise ValidationError("say why (reason)")
        now = self.now()
        made = Silence(id=f"s-{secrets.token_hex(4)}", pattern=compiled.text, starts_at=now,
                       ends_at=now + seconds, reason=reason.strip()[:500], created_by=by)
        self.store.add_silence(made)
        if self.activity is not None:
            self.activity.append({"kind": "silence", **made.to_dict(), "via": "web"})
        return made

    def unsilence(self, silence_id: str, *, by: str) -> Silence:
        if not silence_id.startswith("s-") or len(silence_id) > 100:
            raise ValidationError("no such silence")
        ended = self.store.end_silence(silence_id, now=self.now())
        if self.activity is not None:
            self.activity.append({"kind": "unsilence", "silence": ended.id, "by": by,
                                  "via": "web"})
        return ended


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d")


def when(epoch: float | None) -> str:
    return iso(epoch)


def days_ago(now: float, days: int) -> float:
    return (datetime.fromtimestamp(now, tz=UTC) - timedelta(days=days)).timestamp()
