"""Launching a run in one Redis round trip, and concurrency slots.

:data:`LAUNCH` is one Lua script, so a launch is atomic and costs one round trip: it checks the
launch key (an idempotent launch returns the first run), applies the concurrency policy to the
slot of the run's key, writes the run record (running, or queued behind the slot's holder),
indexes it and adds it to the set the reaper watches. :data:`RELEASE` hands a freed slot to the
next queued run.

A slot holder whose run has ended (its record says so) counts as free, so a crash between a run's
end and its release never blocks the key for good; the reaper releases such slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from pitstop.bus.streamcodec import text_of
from pitstop.kernel.constants import (
    RUN_CANCEL_PREFIX,
    RUN_INDEX,
    RUN_KEY_PREFIX,
    RUN_OUTPUT_MAXLEN,
    RUN_OUTPUT_PREFIX,
    WS_ACTIVE_RUNS,
    WS_LAUNCH_PREFIX,
    WS_SLOT_PREFIX,
    WS_SLOT_QUEUE_PREFIX,
)

_TERMINAL = "{succeeded=true, failed=true, timed_out=true, cancelled=true, lost=true, expired=true}"

_LAUNCH = """
local run_key, index, active, launch_key, slot, slot_queue =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local run_id, running_doc, queued_doc, score, ttl, policy, run_prefix, has_key =
    ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local cancel_prefix, stream, queued_line = ARGV[9], ARGV[10], ARGV[11]
local lines = tonumber(ARGV[12])
local maxlen = ARGV[13 + lines]
local terminal = """ + _TERMINAL + """
if has_key == '1' then
  local first = redis.call('GET', launch_key)
  if first then return {'duplicate', first} end
end
local decision, other = 'launched', ''
if policy ~= 'allow' then
  local holder = redis.call('GET', slot)
  if holder then
    local doc = redis.call('GET', run_prefix .. holder)
    local ok, record = pcall(cjson.decode, doc or 'null')
    if not doc or not ok or type(record) ~= 'table' or terminal[record['status']] then
      holder = false
    end
  end
  if holder then
    other = holder
    if policy == 'skip' then
      decision = 'skipped'
    elseif policy == 'queue' then
      decision = 'queued'
      redis.call('RPUSH', slot_queue, run_id)
      redis.call('EXPIRE', slot_queue, ttl)
    else
      decision = 'cancelled_previous'
      redis.call('SET', cancel_prefix .. holder, '1', 'EX', ttl)
    end
  end
  if decision == 'launched' or decision == 'cancelled_previous' then
    redis.call('SET', slot, run_id, 'EX', ttl)
  end
end
if has_key == '1' then
  local remembered = run_id
  if decision == 'skipped' then remembered = '' end
  redis.call('SET', launch_key, decision .. ':' .. remembered .. ':' .. other, 'EX', ttl)
end
if decision == 'skipped' then return {decision, other} end
local doc = running_doc
if decision == 'queued' then
  doc = queued_doc
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 's', 'stdout', 'l', queued_line .. other)
else
  for i = 1, lines do
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 's', 'stdout', 'l', ARGV[12 + i])
  end
end
redis.call('EXPIRE', stream, ttl)
redis.call('SET', run_key, doc, 'EX', ttl)
redis.call('ZADD', index, score, run_id)
redis.call('SADD', active, run_id)
return {decision, other}
"""

_RELEASE = """
local slot, slot_queue = KEYS[1], KEYS[2]
local run_id, run_prefix, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local holder = redis.call('GET', slot)
if holder and holder ~= run_id then
  local doc = redis.call('GET', run_prefix .. holder)
  local ok, record = pcall(cjson.decode, doc or 'null')
  local terminal = """ + _TERMINAL + """
  if doc and ok and type(record) == 'table' and not terminal[record['status']] then
    return false
  end
end
while true do
  local next_id = redis.call('LPOP', slot_queue)
  if not next_id then
    redis.call('DEL', slot)
    return false
  end
  local doc = redis.call('GET', run_prefix .. next_id)
  local ok, record = pcall(cjson.decode, doc or 'null')
  if doc and ok and type(record) == 'table' and record['status'] == 'queued' then
    redis.call('SET', slot, next_id, 'EX', ttl)
    return next_id
  end
end
"""


@dataclass(frozen=True)
class LaunchDecision:
    decision: str
    """``launched``, ``queued``, ``skipped``, ``cancelled_previous`` or ``duplicate``."""
    other: str
    """The slot's holder (skipped, queued, cancelled_previous), or for ``duplicate`` the
    remembered ``decision:run id:holder`` of the first launch."""


class Slots:
    """The two scripts, registered on one client (``EVALSHA``, loaded on first use)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._launch = client.register_script(_LAUNCH)
        self._release = client.register_script(_RELEASE)

    def launch(self, *, run_id: str, running_doc: str, queued_doc: str, score: float, ttl: int,
               policy: str, slot: str | None, launch_key: str | None,
               lines: Sequence[str] = (), queued_line: str = "") -> LaunchDecision:
        """``lines``: progress lines for the run's output stream when it starts; a queued run
        gets ``queued_line`` followed by the id of the run it waits for."""
        keys = [RUN_KEY_PREFIX + run_id, RUN_INDEX, WS_ACTIVE_RUNS,
                WS_LAUNCH_PREFIX + (launch_key or ""), WS_SLOT_PREFIX + (slot or ""),
                WS_SLOT_QUEUE_PREFIX + (slot or "")]
        args: list[Any] = [run_id, running_doc, queued_doc, repr(score), ttl,
                           policy if slot else "allow", RUN_KEY_PREFIX,
                           "1" if launch_key else "0", RUN_CANCEL_PREFIX,
                           RUN_OUTPUT_PREFIX + run_id, queued_line, len(lines), *lines,
                           RUN_OUTPUT_MAXLEN]
        reply = cast("list[Any]", self._launch(keys=keys, args=args))
        return LaunchDecision(text_of(reply[0]), text_of(reply[1]))

    def release(self, slot: str, run_id: str, *, ttl: int) -> str | None:
        """Free ``slot`` if ``run_id`` (or an ended run) holds it; returns the queued run that
        takes it over, if any (its record still says queued: the caller starts it)."""
        reply = self._release(keys=[WS_SLOT_PREFIX + slot, WS_SLOT_QUEUE_PREFIX + slot],
                              args=[run_id, RUN_KEY_PREFIX, ttl])
        return text_of(reply) if reply else None

    def holder(self, slot: str) -> str | None:
        value = self._client.get(WS_SLOT_PREFIX + slot)
        return text_of(value) if value is not None else None

    def waiting(self, slot: str) -> list[str]:
        return [text_of(item) for item in cast(
            "list[Any]", self._client.lrange(WS_SLOT_QUEUE_PREFIX + slot, 0, -1))]
