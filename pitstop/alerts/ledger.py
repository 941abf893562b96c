"""The delivery ledger in Redis: one record per (notification, channel), so a restart neither
loses a pending alert nor sends a delivered one twice.

States: ``pending`` → ``sending`` (phase ``claimed``, then ``posting`` once the request may have
reached the service) → ``delivered`` | ``retrying`` (→ ``sending`` …) | ``failed``; a send whose
lease ran out in phase ``posting`` becomes ``in_doubt`` and is *not* sent again.

The idempotency point is the ``posting`` mark: it is written after the connection (and TLS,
and SMTP login) is up and before the first byte of the message goes out. A worker that dies
before it resends safely (nothing was sent); one that dies after it may or may not have been
heard, and we prefer a missing chat message (the alert is in ``.state/alerts.jsonl`` and
``pitstop alerts list`` shows the delivery ``in_doubt``) to a duplicate. That window, from the
first byte sent to the reply recorded, is the residual risk.

Unfinished records sit in a sorted set scored by when the sweeper should look again; the sweeper
puts overdue ones back on the queue (a claim is a compare-and-set, so duplicates are harmless).
A per-webhook rate limit (GCRA) and the ``Retry-After`` of a 429 are shared by every worker.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from pitstop.bus.streamcodec import text_of
from pitstop.kernel.constants import (
    ALERT_DELIVERIES_DUE,
    ALERT_DELIVERY_PREFIX,
    ALERT_NOTIFICATION_PREFIX,
    ALERT_RATE_PREFIX,
    ALERT_STATS_PREFIX,
    ALERTS_TTL_SECONDS,
)

__all__ = ["Claim", "DeliveryLedger", "delivery_id", "stats_key"]

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'channel', ARGV[2], 'notification', ARGV[3],
           'attempts', 0, 'created_at', ARGV[4], 'next_at', ARGV[4], 'fallback_of', ARGV[5],
           'receiver', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[7]), ARGV[1])
return 1
"""

# The shared rate limit of a webhook (GCRA) and its 429 block, as a Lua fragment: sets ``wait``
# (seconds, 0: go and the slot is taken). RATE_KEY, NOW, INTERVAL (1/rate, 0: none), BURST.
_RATE_FRAGMENT = """
local wait = 0
local blocked = tonumber(redis.call('HGET', RATE_KEY, 'blocked_until') or '0')
if blocked > NOW then
  wait = blocked - NOW
elseif INTERVAL > 0 then
  local tat = tonumber(redis.call('HGET', RATE_KEY, 'tat') or '0')
  if tat < NOW then tat = NOW end
  local new_tat = tat + INTERVAL
  if new_tat - NOW > INTERVAL * BURST then
    wait = new_tat - NOW - INTERVAL * BURST
  else
    redis.call('HSET', RATE_KEY, 'tat', tostring(new_tat))
    redis.call('EXPIRE', RATE_KEY, math.ceil(INTERVAL * BURST) + 3600)
  end
end
"""

# KEYS: delivery, due, notification prefix, rate key ('' for none).
# ARGV: token, now, lease, did, interval, burst.
_CLAIM = """
local s = redis.call('HMGET', KEYS[1], 'state', 'phase', 'lease_until', 'next_at')
local state = s[1]
if not state then return {'missing', ''} end
local NOW = tonumber(ARGV[2])
if state == 'sending' then
  if tonumber(s[3] or '0') > NOW then return {'busy', ''} end
  if s[2] == 'posting' then
    redis.call('HSET', KEYS[1], 'state', 'in_doubt')
    redis.call('ZREM', KEYS[2], ARGV[4])
    return {'now_in_doubt', ''}
  end
elseif state == 'pending' or state == 'retrying' then
  if tonumber(s[4] or '0') > NOW + 0.25 then return {'early', s[4]} end
else
  return {state, ''}
end
if KEYS[4] ~= '' then
  local RATE_KEY, INTERVAL, BURST = KEYS[4], tonumber(ARGV[5]), tonumber(ARGV[6])
  """ + _RATE_FRAGMENT + """
  if wait > 0 then return {'rate', tostring(wait)} end
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'sending', 'phase', 'claimed', 'token', ARGV[1],
           'lease_until', tostring(NOW + tonumber(ARGV[3])))
redis.call('ZADD', KEYS[2], NOW + tonumber(ARGV[3]), ARGV[4])
local info = redis.call('HMGET', KEYS[1], 'channel', 'notification')
local body = redis.call('GET', KEYS[3] .. (info[2] or ''))
return {'claimed', tostring(attempts), info[1] or '', body or ''}
"""

_POSTING = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] and
   redis.call('HGET', KEYS[1], 'state') == 'sending' then
  redis.call('HSET', KEYS[1], 'phase', 'posting')
  return 1
end
return 0
"""

# KEYS: delivery, due, stats, then the alerts' first-delivery keys.
# ARGV: token, state, now, next_at, error, requeue_after, did, counter ('' none),
#       first-delivery value, ttl.
_FINISH = """
local s = redis.call('HMGET', KEYS[1], 'token', 'state')
if s[1] ~= ARGV[1] or (s[2] ~= 'sending' and not (s[2] == 'in_doubt' and ARGV[2] == 'delivered'))
then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'phase', '', 'error', ARGV[5],
           'updated_at', ARGV[3])
if ARGV[2] == 'delivered' then
  redis.call('HSET', KEYS[1], 'delivered_at', ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[7])
  for i = 4, #KEYS do
    redis.call('SET', KEYS[i], ARGV[9], 'NX', 'EX', tonumber(ARGV[10]))
  end
elseif ARGV[2] == 'retrying' then
  redis.call('HSET', KEYS[1], 'next_at', ARGV[4])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[6]), ARGV[7])
else
  redis.call('ZREM', KEYS[2], ARGV[7])
end
if ARGV[8] ~= '' then
  redis.call('HINCRBY', KEYS[3], ARGV[8], 1)
  redis.call('EXPIRE', KEYS[3], 3456000)
end
return 1
"""

# KEYS: rate key. ARGV: now, interval (1/rate, 0: none), burst. Returns the wait ("0": go).
_RATE = """
local RATE_KEY, NOW, INTERVAL, BURST = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3])
""" + _RATE_FRAGMENT + """
return tostring(wait)
"""

_BLOCK = """
local current = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'blocked_until', ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 3600)
end
return 1
"""


def delivery_id(notification_id: str, channel: str) -> str:
    return f"{notification_id}:{channel}"


def stats_key(epoch: float) -> str:
    return ALERT_STATS_PREFIX + datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d")


def rate_key_of(url: str) -> str:
    """The rate-limit key of a webhook: a hash, so the URL (a secret) is never a key name."""
    return ALERT_RATE_PREFIX + hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Claim:
    outcome: str
    """``claimed``, ``busy``, ``early``, ``rate`` (held by the webhook's shared limit until
    ``next_at`` seconds from now), ``now_in_doubt`` (this claim found the sender dead after it
    may have sent), ``missing``, or a final state (``in_doubt`` among them)."""
    attempt: int = 0
    next_at: float | None = None
    channel: str = ""
    notification: dict[str, Any] | None = None
    """The notification to send (a claim reads it in the same round trip)."""


class DeliveryLedger:
    def __init__(self, client: redis.Redis, *, ttl_seconds: int = ALERTS_TTL_SECONDS) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._posting = client.register_script(_POSTING)
        self._finish = client.register_script(_FINISH)
        self._rate = client.register_script(_RATE)
        self._block = client.register_script(_BLOCK)

    # --- writes the alert manager makes inside its fenced transaction ---------------------------
    def queue_notification(self, pipe: Any, notification: dict[str, Any], channels: list[str],
                           *, now: float, requeue_after: float, fallback_of: str = "") -> list[str]:
        """Store ``notification`` and a pending delivery per channel on ``pipe``; returns the
        delivery ids (existing ones are left as they are: the same flush redone is no resend)."""
        pipe.set(ALERT_NOTIFICATION_PREFIX + notification["id"], json.dumps(notification),
                 ex=self.ttl, nx=True)
        ids = []
        for channel in channels:
            did = delivery_id(notification["id"], channel)
            self._create(keys=[ALERT_DELIVERY_PREFIX + did, ALERT_DELIVERIES_DUE],
                         args=[did, channel, notification["id"], now, fallback_of,
                               notification.get("receiver", ""), requeue_after, self.ttl],
                         client=pipe)
            ids.append(did)
        return ids

    def add_delivery(self, notification_id: str, channel: str, *, now: float,
                     requeue_after: float, fallback_of: str = "", receiver: str = "") -> str | None:
        """A delivery of an existing notification (a fallback); None when it existed already."""
        did = delivery_id(notification_id, channel)
        created = self._create(keys=[ALERT_DELIVERY_PREFIX + did, ALERT_DELIVERIES_DUE],
                               args=[did, channel, notification_id, now, fallback_of, receiver,
                                     requeue_after, self.ttl])
        return did if created else None

    # --- the sender's side ----------------------------------------------------------------------
    def claim(self, did: str, token: str, *, now: float, lease: float,
              rate: tuple[str, float | None, int] | None = None) -> Claim:
        """Take the delivery for one attempt. ``rate``: (URL, per second or None, burst) of a
        webhook whose shared limit (and 429 block) applies: over it, ``rate`` with the wait."""
        rate_key, interval, burst = "", 0.0, 1
        if rate is not None:
            rate_key = rate_key_of(rate[0])
            interval = 1.0 / rate[1] if rate[1] else 0.0
            burst = rate[2]
        reply = self._claim(keys=[ALERT_DELIVERY_PREFIX + did, ALERT_DELIVERIES_DUE,
                                  ALERT_NOTIFICATION_PREFIX, rate_key],
                            args=[token, now, lease, did, interval, burst])
        outcome, extra = text_of(reply[0]), text_of(reply[1])
        if outcome == "claimed":
            body = text_of(reply[3]) if len(reply) > 3 else ""
            try:
                notification = json.loads(body) if body else None
            except ValueError:
                notification = None
            return Claim(outcome, attempt=int(extra), channel=text_of(reply[2]),
                         notification=notification if isinstance(notification, dict) else None)
        if outcome in ("early", "rate"):
            return Claim(outcome, next_at=float(extra))
        return Claim(outcome)

    def mark_posting(self, did: str, token: str) -> bool:
        return bool(self._posting(keys=[ALERT_DELIVERY_PREFIX + did], args=[token]))

    def finish(self, did: str, token: str, state: str, *, now: float, next_at: float = 0.0,
               error: str = "", requeue_after: float = 30.0, count: str | None = None,
               first_delivery_keys: list[str] | None = None, first_delivery: str = "") -> bool:
        """Record the outcome if our claim still holds, in one round trip: ``count`` bumps a
        stats field; ``first_delivery_keys`` are set (NX) to ``first_delivery`` when delivered."""
        return bool(self._finish(
            keys=[ALERT_DELIVERY_PREFIX + did, ALERT_DELIVERIES_DUE, stats_key(now),
                  *(first_delivery_keys or [])],
            args=[token, state, now, next_at, error[:500], requeue_after, did, count or "",
                  first_delivery, self.ttl]))

    def get(self, did: str) -> dict[str, str]:
        raw = self.client.hgetall(ALERT_DELIVERY_PREFIX + did)
        return {text_of(k): text_of(v) for k, v in raw.items()}

    def notification(self, notification_id: str) -> dict[str, Any] | None:
        raw = self.client.get(ALERT_NOTIFICATION_PREFIX + notification_id)
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    def overdue(self, now: float, *, limit: int = 200) -> list[str]:
        return [text_of(member) for member in
                self.client.zrangebyscore(ALERT_DELIVERIES_DUE, "-inf", now, start=0, num=limit)]

    def postpone(self, dids: list[str], until: float) -> None:
        if dids:
            self.client.zadd(ALERT_DELIVERIES_DUE, dict.fromkeys(dids, until), xx=True)

    # --- shared rate limits -----------------------------------------------------------------------
    def rate_wait(self, url: str, *, per_second: float | None, burst: int, now: float) -> float:
        """Seconds to wait before posting to ``url`` (0: go, and the slot is taken); with no
        rate (``per_second`` None) only a 429's block holds it up."""
        interval = 1.0 / per_second if per_second else 0.0
        return float(text_of(self._rate(keys=[rate_key_of(url)], args=[now, interval, burst])))

    def block(self, url: str, *, until: float, now: float) -> None:
        """Every worker holds off ``url`` until ``until`` (a 429's Retry-After)."""
        self._block(keys=[rate_key_of(url)], args=[until, max(1.0, until - now)])

    def count(self, field: str, *, now: float, amount: int = 1) -> None:
        key = stats_key(now)
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(key, field, amount)
        pipe.expire(key, 40 * 86400)
        pipe.execute()
