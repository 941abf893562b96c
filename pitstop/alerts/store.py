"""Alert state in Redis: open alerts, acks, first deliveries, silences, and the leader lock.

Only the leading alert manager writes alert documents, in transactions fenced by its lock (WATCH:
a manager that lost the lock while paused commits nothing). Acks and first deliveries are
write-once keys (``SET NX``) that anyone may set: the CLI, the ack link, the delivery task.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

from pitstop.alerts.engine import Outgoing, Silence, StormState
from pitstop.alerts.ledger import DeliveryLedger
from pitstop.alerts.model import Alert
from pitstop.bus.streamcodec import text_of
from pitstop.connection.tokenlock import TokenLock
from pitstop.kernel.constants import (
    ALERT_ACK_PREFIX,
    ALERT_DELIVERED_PREFIX,
    ALERT_DELIVERY_PREFIX,
    ALERT_KEY_PREFIX,
    ALERT_SILENCES,
    ALERTS_INDEX,
    ALERTS_LEADER_KEY,
    ALERTS_OPEN,
    ALERTS_SEEN,
    ALERTS_STORM,
    ALERTS_TTL_SECONDS,
)
from pitstop.kernel.errors import ValidationError

__all__ = ["AlertStore", "LeaderLost"]

SEEN_TTL_SECONDS = 86400
"""Longer than an entry can wait for redelivery (claim_idle_ms x max_deliveries)."""


class LeaderLost(Exception):
    """The manager's lock went to another: what it holds in memory may be stale."""


def _json(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


class AlertStore:
    def __init__(self, client: redis.Redis, ledger: DeliveryLedger | None = None) -> None:
        self.client = client
        self.ledger = ledger or DeliveryLedger(client)
        self._leader = TokenLock(client, ALERTS_LEADER_KEY)

    # --- leadership -------------------------------------------------------------------------------
    def acquire(self, token: str, ttl: float) -> bool:
        return self._leader.hold(token, max(100, int(ttl * 1000)))

    def release(self, token: str) -> None:
        self._leader.release(token)

    def leader(self) -> str | None:
        raw = self.client.get(ALERTS_LEADER_KEY)
        return None if raw is None else text_of(raw)

    # --- the manager's state ----------------------------------------------------------------------
    def load_open(self) -> tuple[dict[str, Alert], dict[str, StormState]]:
        ids = {text_of(k): text_of(v) for k, v in self.client.hgetall(ALERTS_OPEN).items()}
        alerts: dict[str, Alert] = {}
        if ids:
            docs = self.client.mget([ALERT_KEY_PREFIX + i for i in ids.values()])
            for (key, _), raw in zip(ids.items(), docs, strict=True):
                doc = _json(raw)
                if doc is not None:
                    alerts[key] = Alert.from_dict(doc)
        storm = {text_of(k): StormState.from_dict(_json(v) or {})
                 for k, v in self.client.hgetall(ALERTS_STORM).items()}
        return alerts, storm

    def seen(self, event_ids: list[str]) -> set[str]:
        if not event_ids:
            return set()
        scores = self.client.zmscore(ALERTS_SEEN, event_ids)
        return {i for i, score in zip(event_ids, scores, strict=True) if score is not None}

    def commit(self, token: str, *, changed: Iterable[Alert], closed: dict[str, Alert],
               storm: dict[str, StormState], outbox: list[Outgoing], seen: Iterable[str],
               now: float, requeue_after: float) -> list[str]:
        """Write it all in one transaction if we still lead; returns the new delivery ids.

        Raises :class:`LeaderLost` when the lock is no longer ours (nothing is written).
        """
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(ALERTS_LEADER_KEY)  # type: ignore[no-untyped-call]
                if text_of(pipe.get(ALERTS_LEADER_KEY) or b"") != token:
                    raise LeaderLost
                pipe.multi()
                written = [*changed, *closed.values()]
                for alert in written:
                    pipe.set(ALERT_KEY_PREFIX + alert.id, alert.to_json(), ex=ALERTS_TTL_SECONDS)
                if written:
                    pipe.zadd(ALERTS_INDEX, {alert.id: alert.created_at for alert in written})
                reopened = {alert.group_key for alert in changed}
                gone = [key for key in closed if key not in reopened]
                if gone:  # before the HSET: a group closed and opened again keeps its new alert
                    pipe.hdel(ALERTS_OPEN, *gone)
                if changed:
                    pipe.hset(ALERTS_OPEN, mapping={a.group_key: a.id for a in changed})
                if storm:
                    pipe.hset(ALERTS_STORM, mapping={receiver: json.dumps(state.to_dict())
                                                     for receiver, state in storm.items()})
                marks = dict.fromkeys(seen, now)
                if marks:
                    pipe.zadd(ALERTS_SEEN, marks)
                    pipe.zremrangebyscore(ALERTS_SEEN, "-inf", now - SEEN_TTL_SECONDS)
                deliveries: list[str] = []
                for item in outbox:
                    deliveries += self.ledger.queue_notification(
                        pipe, item.notification, list(item.channels), now=now,
                        requeue_after=requeue_after)
                pipe.zremrangebyscore(ALERTS_INDEX, "-inf", now - ALERTS_TTL_SECONDS)
                pipe.execute()
            except redis.WatchError:
                raise LeaderLost from None
        return deliveries

    # --- anyone's reads and writes ------------------------------------------------------------
    def get(self, alert_id: str) -> Alert | None:
        doc = _json(self.client.get(ALERT_KEY_PREFIX + alert_id))
        return None if doc is None else Alert.from_dict(doc)

    def resolve_id(self, text: str) -> str:
        """The alert id ``text`` names: the whole id or a unique prefix or suffix."""
        text = text.strip()
        if text and self.client.exists(ALERT_KEY_PREFIX + text):
            return text
        if len(text) < 4:
            raise ValidationError(f"alert id {text!r} is too short to be unique")
        found = [i for i in (text_of(m) for m in self.client.zrange(ALERTS_INDEX, 0, -1))
                 if i.startswith(text) or i.endswith(text)]
        if not found:
            raise ValidationError(f"no alert has id {text!r}: `pitstop alerts list` shows them")
        if len(found) > 1:
            raise ValidationError(f"alert id {text!r} is ambiguous ({len(found)} alerts)")
        return found[0]

    def recent(self, *, since: float, until: float | None = None,
               limit: int = 10_000) -> list[Alert]:
        ids = [text_of(i) for i in self.client.zrangebyscore(
            ALERTS_INDEX, since, "+inf" if until is None else f"({until}")][-limit:]
        if not ids:
            return []
        docs = self.client.mget([ALERT_KEY_PREFIX + i for i in ids])
        return [Alert.from_dict(d) for d in (_json(raw) for raw in docs) if d is not None]

    def ack(self, alert_id: str, *, by: str, now: float) -> tuple[bool, dict[str, Any]]:
        """Acknowledge (first one wins); returns (this call acked it, the ack on record)."""
        record = {"at": now, "by": by[:200]}
        created = bool(self.client.set(ALERT_ACK_PREFIX + alert_id, json.dumps(record),
                                       nx=True, ex=ALERTS_TTL_SECONDS))
        if created:
            return True, record
        return False, _json(self.client.get(ALERT_ACK_PREFIX + alert_id)) or record

    def acks(self, alert_ids: list[str]) -> dict[str, tuple[float, str]]:
        if not alert_ids:
            return {}
        found: dict[str, tuple[float, str]] = {}
        for alert_id, raw in zip(alert_ids, self.client.mget(
                [ALERT_ACK_PREFIX + i for i in alert_ids]), strict=True):
            doc = _json(raw)
            if doc is not None:
                found[alert_id] = (float(doc.get("at", 0)), str(doc.get("by", "")))
        return found

    def delivered(self, alert_ids: list[str]) -> dict[str, float]:
        if not alert_ids:
            return {}
        found: dict[str, float] = {}
        for alert_id, raw in zip(alert_ids, self.client.mget(
                [ALERT_DELIVERED_PREFIX + i for i in alert_ids]), strict=True):
            doc = _json(raw)
            if doc is not None:
                found[alert_id] = float(doc.get("at", 0))
        return found

    def deliveries_of(self, alert_id: str, *, limit: int = 200) -> list[dict[str, str]]:
        """The ledger records of the alert's own notifications (``<id>.<n>``, ``<id>.escalation``;
        digests are not found this way), oldest first."""
        found = []
        for key in self.client.scan_iter(match=f"{ALERT_DELIVERY_PREFIX}{alert_id}.*",
                                         count=1000):
            did = text_of(key).removeprefix(ALERT_DELIVERY_PREFIX)
            found.append({"delivery": did, **self.ledger.get(did)})
            if len(found) >= limit:
                break
        return sorted(found, key=lambda record: record.get("created_at", ""))

    # --- silences -------------------------------------------------------------------------------
    def add_silence(self, silence: Silence) -> None:
        self.client.hset(ALERT_SILENCES, silence.id, json.dumps(silence.to_dict()))

    def silences(self, *, now: float | None = None) -> list[Silence]:
        """All silences (with ``now``: the ones not yet over; older ones are dropped)."""
        found, expired = [], []
        for key, raw in self.client.hgetall(ALERT_SILENCES).items():
            doc = _json(raw)
            if doc is None:
                continue
            silence = Silence.from_dict(doc)
            if now is not None and silence.ends_at <= now:
                if silence.ends_at < now - 86400:
                    expired.append(text_of(key))
                continue
            found.append(silence)
        if expired:
            self.client.hdel(ALERT_SILENCES, *expired)
        return sorted(found, key=lambda s: s.starts_at)

    def end_silence(self, silence_id: str, *, now: float) -> Silence:
        for silence in self.silences():
            if silence.id == silence_id or silence.id.startswith(silence_id):
                ended = Silence.from_dict({**silence.to_dict(), "ends_at": min(now,
                                                                              silence.ends_at)})
                self.add_silence(ended)
                return ended
        raise ValidationError(f"no silence has id {silence_id!r}: `pitstop alerts silences`")
