"""Fleet-wide dedupe, throttle and debounce for triggers, in Redis (each step one Lua script).

Every operation is idempotent for a redelivered event: the event that claimed a dedupe key, took
a throttle place or was stored as a burst's latest finds its own claim again and goes on, so a
router killed mid-batch neither loses nor doubles a launch.

Debounce: each event of a burst becomes the burst's latest (``<prefix><rule>:<key>`` hash) and
pushes the burst's due time (sorted set) to ``now + window``. Whoever finds it due (any router,
every loop) claims it with a lease, launches with the latest event, then settles it: unless a
newer event arrived meanwhile, which then fires on its own due time. A claimer that dies leaves
the lease to expire and another router launches (the launch key makes that launch idempotent).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from pitstop.bus.events import Event
from pitstop.bus.streamcodec import redis_call, unavailable
from pitstop.kernel.constants import (
    TRIGGER_DEBOUNCE_DUE_KEY,
    TRIGGER_DEBOUNCE_PREFIX,
    TRIGGER_DEDUPE_PREFIX,
    TRIGGER_THROTTLE_PREFIX,
)
from pitstop.kernel.errors import ValidationError

__all__ = ["DueBurst", "Limits", "key_hash"]

DEBOUNCE_LEASE_MS = 30_000
"""How long a claimed burst is left to its claimer before another router may launch it."""
_UNKNOWN: Any = object()

_DEDUPE = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return current
"""

_THROTTLE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: burst hash, due set. ARGV: member, event id, event json, due ms, ttl ms, event's ms.
# The latest is the one published last (ids start with their millisecond); within one
# millisecond, the one that arrived last.
_PUSH = """
local latest = redis.call('HGET', KEYS[1], 'ms')
redis.call('HINCRBY', KEYS[1], 'count', 1)
if (not latest) or latest <= ARGV[6] then
  redis.call('HSET', KEYS[1], 'id', ARGV[2], 'event', ARGV[3], 'ms', ARGV[6])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return redis.call('HGET', KEYS[1], 'count')
"""

# KEYS: due set, burst hash. ARGV: member, now ms, lease ms.
_CLAIM = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not due) or tonumber(due) > tonumber(ARGV[2]) then return false end
local burst = redis.call('HMGET', KEYS[2], 'id', 'event', 'count')
if not burst[1] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return false
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return burst
"""

# KEYS: due set, burst hash. ARGV: member, claimed event id.
_SETTLE = """
if redis.call('HGET', KEYS[2], 'id') == ARGV[2] then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def key_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class DueBurst:
    """A debounced burst whose quiet period is over, claimed for launching."""

    rule_id: str
    member: str
    event: Event
    count: int


class Limits:
    """Dedupe, throttle and debounce state shared by every router through Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._dedupe = Script(client, _DEDUPE)
        self._throttle = Script(client, _THROTTLE)
        self._push = Script(client, _PUSH)
        self._claim = Script(client, _CLAIM)
        self._settle = Script(client, _SETTLE)
        self._next_due: int | None = _UNKNOWN

    def _run(self, script: Script, keys: list[str], args: list[Any], action: str) -> Any:
        return redis_call(self.client, action, script, keys=keys, args=args)

    def dedupe(self, rule_id: str, key: str, event_id: str, window_s: float) -> str | None:
        """None when ``event_id`` holds the key (first, or its own redelivery); else the id of
        the event that took it within the window."""
        winner = self._run(self._dedupe, [f"{TRIGGER_DEDUPE_PREFIX}{rule_id}:{key_hash(key)}"],
                           [event_id, int(window_s * 1000)], "check a trigger dedupe key")
        text = winner.decode() if isinstance(winner, bytes) else str(winner)
        return None if text == event_id else text

    def throttle(self, rule_id: str, key: str, event_id: str, *, limit: int, per_s: float,
                 now_ms: int) -> bool:
        """True when ``event_id`` may launch (it took, or already holds, a place in the window)."""
        name = f"{TRIGGER_THROTTLE_PREFIX}{rule_id}:{key_hash(key)}"
        allowed = self._run(self._throttle, [name], [now_ms, int(per_s * 1000), limit, event_id],
                            "check a trigger throttle")
        return bool(allowed)

    def peek_dedupe(self, rule_id: str, key: str) -> str | None:
        """The event holding a dedupe key, or None (a dry run: nothing is taken)."""
        try:
            value = self.client.get(f"{TRIGGER_DEDUPE_PREFIX}{rule_id}:{key_hash(key)}")
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read a trigger dedupe key") from exc
        return None if value is None else (value.decode() if isinstance(value, bytes)
                                           else str(value))

    def peek_throttle(self, rule_id: str, key: str, *, limit: int, per_s: float,
                      now_ms: int) -> bool:
        """Whether a launch would fit the throttle now (a dry run: no place is taken)."""
        name = f"{TRIGGER_THROTTLE_PREFIX}{rule_id}:{key_hash(key)}"
        try:
            used = int(self.client.zcount(name, now_ms - int(per_s * 1000) + 1, "+inf"))
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read a trigger throttle") from exc
        return used < limit

    def push_burst(self, rule_id: str, key: str, event: Event, *, window_s: float,
                   now_ms: int) -> int:
        """Make ``event`` its burst's latest (unless a newer one is) and delay the burst's launch
        to ``now + window``; returns how many events the burst has seen."""
        self._next_due = _UNKNOWN
        member = f"{rule_id}:{key_hash(key)}"
        window_ms = int(window_s * 1000)
        count = self._run(self._push, [TRIGGER_DEBOUNCE_PREFIX + member, TRIGGER_DEBOUNCE_DUE_KEY],
                          [member, event.id, event.to_json(), now_ms + window_ms,
                           window_ms + 7 * 86400 * 1000, event.id[:13]],
                          "store a debounced event")
        return int(count)

    def next_due_ms(self) -> int | None:
        """When the earliest burst comes due (ms), or None. Right after a :meth:`claim_due`
        that found nothing due, that call's answer (no second round trip)."""
        if self._next_due is not _UNKNOWN:
            known, self._next_due = self._next_due, _UNKNOWN
            return known
        try:
            first = self.client.zrange(TRIGGER_DEBOUNCE_DUE_KEY, 0, 0, withscores=True)
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read debounced launches") from exc
        return int(first[0][1]) if first else None

    def claim_due(self, now_ms: int, *, limit: int = 50,
                  lease_ms: int = DEBOUNCE_LEASE_MS) -> list[DueBurst]:
        """Claim bursts due by ``now_ms`` (each for ``lease_ms``)."""
        self._next_due = _UNKNOWN
        try:
            # The earliest first: nothing due (the router's usual turn) costs one round trip,
            # whose answer also says when to look again (next_due_ms).
            first = self.client.zrange(TRIGGER_DEBOUNCE_DUE_KEY, 0, 0, withscores=True)
            earliest = int(first[0][1]) if first else None
            if earliest is None or earliest > now_ms:
                self._next_due = earliest
                return []
            members = self.client.zrangebyscore(TRIGGER_DEBOUNCE_DUE_KEY, "-inf", now_ms,
                                                start=0, num=limit)
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read debounced launches") from exc
        claimed: list[DueBurst] = []
        for raw in members:
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            burst = self._run(self._claim, [TRIGGER_DEBOUNCE_DUE_KEY,
                                            TRIGGER_DEBOUNCE_PREFIX + member],
                              [member, now_ms, lease_ms], "claim a debounced launch")
            if not burst:
                continue
            payload, count = burst[1], burst[2]
            try:
                event = Event.from_json(payload)
            except ValidationError:
                self.drop(member)
                continue
            rule_id = member.rsplit(":", 1)[0]
            claimed.append(DueBurst(rule_id, member, event, int(count or 1)))
        return claimed

    def settle(self, burst: DueBurst) -> bool:
        """Forget a launched burst, unless a newer event joined it meanwhile (False)."""
        done = self._run(self._settle, [TRIGGER_DEBOUNCE_DUE_KEY,
                                        TRIGGER_DEBOUNCE_PREFIX + burst.member],
                         [burst.member, burst.event.id], "settle a debounced launch")
        return bool(done)

    def drop(self, member: str) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(TRIGGER_DEBOUNCE_DUE_KEY, member)
            pipe.delete(TRIGGER_DEBOUNCE_PREFIX + member)
            pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "drop a debounced launch") from exc

    def pending_bursts(self) -> list[dict[str, Any]]:
        """Pending debounced launches (for ``pitstop triggers list``)."""
        try:
            entries = self.client.zrange(TRIGGER_DEBOUNCE_DUE_KEY, 0, 999, withscores=True)
        except redis.RedisError as exc:
            raise unavailable(self.client, exc, "read debounced launches") from exc
        out = []
        pairs: list[Any] = list(entries)
        for raw, score in pairs:
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            out.append({"rule": member.rsplit(":", 1)[0], "due_ms": int(score)})
        return out


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
