"""The alert: an open group of alerting events, and the snapshot of it a notification carries.

An alert is what one acknowledges: the occurrences (events) of one group key from the first until
it resolves. Times are epoch seconds (floats) inside, ISO-8601 UTC when shown.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pitstop.alerts.labels import max_severity
from pitstop.bus.events import Event
from pitstop.kernel.ids import utc_iso

__all__ = ["Alert", "event_example", "group_key", "iso"]

MAX_EXAMPLES = 5
MAX_TYPES = 50
MAX_DEDUPE_KEYS = 200
_SUMMARY_FIELDS = ("summary", "message", "error", "reason", "title")


def iso(epoch: float | None) -> str:
    return "" if epoch is None else utc_iso(datetime.fromtimestamp(epoch, tz=UTC))


def epoch_of(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def group_key(route_id: str, values: dict[str, str]) -> str:
    """A stable key for (route, group label values): hashed, so label text never becomes a key."""
    raw = json.dumps([route_id, sorted(values.items())], separators=(",", ":"))
    return f"{route_id}:{hashlib.sha256(raw.encode()).hexdigest()[:20]}"


def _safe_link(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 500:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    if any(c in value for c in "<>|\"' \r\n\t"):
        return None
    return value


def event_example(event: Event) -> dict[str, Any]:
    """What a message shows of one event: type, source, time, a one-line summary, a link."""
    data = event.data or {}
    summary = next((str(data[k]) for k in _SUMMARY_FIELDS if data.get(k) not in (None, "")), "")
    link = _safe_link(data.get("run_url")) or _safe_link(data.get("url"))
    example: dict[str, Any] = {"id": event.id, "type": event.type, "source": event.source,
                               "time": event.time, "summary": " ".join(summary.split())[:300]}
    if link:
        example["link"] = link
    if isinstance(data.get("run_id"), str):
        example["run_id"] = data["run_id"][:100]
    return example


@dataclass
class Alert:
    id: str
    group_key: str
    route_id: str
    receiver: str
    group: dict[str, str]
    labels: dict[str, str]
    severity: str
    source: str
    created_at: float
    first_event_at: float
    last_event_at: float
    status: str = "firing"
    count: int = 0
    counts_by_type: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    dedupe: dict[str, float] = field(default_factory=dict)
    pending: int = 0
    """Occurrences not yet told (throttled ones excluded)."""
    throttled: int = 0
    notified: int = 0
    last_notified_at: float | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    resolved_notified: bool = False
    escalated_at: float | None = None
    acked_at: float | None = None
    acked_by: str | None = None
    in_digest: bool = False

    def add(self, event: Event, *, event_epoch: float, dedupe_key: str, throttle_window: float,
            now: float) -> bool:
        """Count ``event`` in; returns False when it was throttled (its dedupe key was seen
        within ``throttle_window``)."""
        self.count += 1
        self.severity = max_severity(self.severity, event.severity)
        self.last_event_at = max(self.last_event_at, event_epoch)
        if event.type in self.counts_by_type or len(self.counts_by_type) < MAX_TYPES:
            self.counts_by_type[event.type] = self.counts_by_type.get(event.type, 0) + 1
        self.examples = [*self.examples, event_example(event)][-MAX_EXAMPLES:]
        seen = self.dedupe.get(dedupe_key)
        self.dedupe[dedupe_key] = now
        if len(self.dedupe) > MAX_DEDUPE_KEYS:
            for key in sorted(self.dedupe, key=self.dedupe.__getitem__)[:-MAX_DEDUPE_KEYS]:
                del self.dedupe[key]
        if seen is not None and throttle_window > 0 and now - seen < throttle_window:
            self.throttled += 1
            return False
        self.pending += 1
        return True

    @property
    def open(self) -> bool:
        return self.status == "firing" or not self.resolved_notified

    def to_dict(self) -> dict[str, Any]:
        # Field by field (shallow), not dataclasses.asdict: that deep-copies every example.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Alert:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def snapshot(self, ack_url: str | None) -> dict[str, Any]:
        """What a notification carries about this alert (JSON, bounded)."""
        top = sorted(self.counts_by_type.items(), key=lambda item: (-item[1], item[0]))[:5]
        return {
            "id": self.id, "status": self.status, "severity": self.severity,
            "subject": self.group.get("subject") or ", ".join(
                f"{k}={v}" for k, v in self.group.items()) or self.labels.get("type", ""),
            "group": self.group, "route": self.route_id, "source": self.source,
            "count": self.count, "top_types": top, "examples": list(self.examples),
            "first_at": iso(self.first_event_at), "last_at": iso(self.last_event_at),
            "resolved_at": iso(self.resolved_at), "ack_url": ack_url,
            "first_event_at": self.first_event_at,
        }
