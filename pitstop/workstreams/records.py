"""Workstream run records: a compare-and-set in one round trip, with what goes with it.

A run record is the run store's JSON document (:class:`pitstop.runs.store.Run`, same key, same
TTL). Every change of a workstream run is a compare-and-set of that document by a Lua script
that, only if the document is still the one the change was computed from, writes the new one and
what must happen with it, atomically: progress lines on the run's output stream, the step's
heartbeat key, stop requests for running steps, and when the run ends the output's one ``end``
entry (the protocol of :meth:`pitstop.runs.output.RunOutput.close`: ``SET NX`` of the end flag,
then the entry), and for a run that ends with nothing left to hand on (no concurrency slot, no
parent, no sub-workstream to stop) its ``completed``/``failed`` event and its removal from the
set the reaper watches: its whole finalization in the same step. A step transition is then one
round trip when nobody else changed the run meanwhile (the caller passes the document it last
saw), two otherwise.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from pitstop.kernel.constants import (
    RUN_KEY_PREFIX,
    RUN_OUTPUT_END_PREFIX,
    RUN_OUTPUT_MAXLEN,
    RUN_OUTPUT_PREFIX,
)
from pitstop.kernel.errors import PitstopError, RedisUnavailable, RunNotFound
from pitstop.runs.store import Run

__all__ = ["Effects", "RunRecords", "Snapshot", "synced_clock"]

MAX_TRIES = 1000

_SWAP = """
local run_key, stream, end_flag = KEYS[1], KEYS[2], KEYS[3]
local expected, new, ttl, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if redis.call('GET', run_key) ~= expected then return 0 end
redis.call('SET', run_key, new, 'EX', ttl)
local at = 5
local lines = tonumber(ARGV[at])
for i = 1, lines do
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 's', 'stdout', 'l', ARGV[at + i])
end
at = at + lines + 1
local sets = tonumber(ARGV[at])
for i = 1, sets do
  redis.call('SET', ARGV[at + 3 * i - 2], ARGV[at + 3 * i - 1], 'EX', tonumber(ARGV[at + 3 * i]))
end
at = at + 3 * sets + 1
local ending = ARGV[at]
if ending ~= '' and redis.call('SET', end_flag, ending, 'NX', 'EX', ttl) then
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'end', ending, 'exit_code', ARGV[at + 1])
end
if lines > 0 or ending ~= '' then redis.call('EXPIRE', stream, ttl) end
at = at + 2
if ARGV[at] ~= '' then
  redis.call('XADD', ARGV[at], 'MAXLEN', '~', ARGV[at + 1], '*', ARGV[at + 2], ARGV[at + 3])
  redis.call('PUBLISH', ARGV[at + 4], ARGV[at + 3])
end
at = at + 5
if ARGV[at] ~= '' then redis.call('SREM', ARGV[at], ARGV[at + 1]) end
return 1
"""


@dataclass
class Effects:
    """What a committed change brings with it (written by the same script, atomically)."""

    lines: list[str] = field(default_factory=list)
    """Progress lines for the run's output stream."""
    sets: list[tuple[str, str, int]] = field(default_factory=list)
    """Keys to set with a TTL: a step's heartbeat, stop requests."""
    end: tuple[str, int | None] | None = None
    """The run ended: close its output with this status and exit code (once)."""
    publish: tuple[str, int, str, str, str] | None = None
    """An event to append and fan out with the change: (stream, maxlen, field, payload,
    channel), the bus's own XADD + PUBLISH."""
    forget: tuple[str, str] | None = None
    """(set, member) to remove with the change: the run leaves the set the reaper watches."""


@dataclass(frozen=True)
class Snapshot:
    """A run as read (or written) with the exact document, for the next compare-and-set."""

    raw: bytes
    run: Run


Change = Callable[[Run, datetime], "tuple[Run, Effects] | None"]


class RunRecords:
    """Read and compare-and-set workstream run records."""

    def __init__(self, client: redis.Redis, *, ttl_seconds: int,
                 clock: Callable[[], datetime]) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.clock = clock
        self._swap = client.register_script(_SWAP)

    def get(self, run_id: str) -> Snapshot:
        try:
            raw = cast("bytes | None", self.client.get(RUN_KEY_PREFIX + run_id))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"Redis is unreachable while reading run {run_id}: {exc}"
                                   ) from exc
        if raw is None:
            raise RunNotFound(f"no run {run_id!r}: the id is wrong, or its record is gone")
        return Snapshot(raw, Run.model_validate_json(raw))

    def transact(self, run_id: str, change: Change, *,
                 known: Snapshot | None = None) -> tuple[Snapshot, Effects | None]:
        """Apply ``change(run, now)`` (it returns the new run and its effects, or None to leave
        it) as a compare-and-set, retried from a fresh read while others change the run. It may
        be called more than once, so it must not act outside its return value. Returns the run
        as it now is and the effects written (None: nothing changed)."""
        snapshot = known or self.get(run_id)
        for _ in range(MAX_TRIES):
            outcome = change(snapshot.run, self.clock())
            if outcome is None:
                return snapshot, None
            new, effects = outcome
            raw = new.model_dump_json().encode()
            if self._write(run_id, snapshot.raw, raw, effects):
                return Snapshot(raw, new), effects
            snapshot = self.get(run_id)
        raise PitstopError(f"run {run_id!r} is changed too often to update it; try again")

    def say(self, run_id: str, lines: list[str]) -> None:
        """Progress lines alone (no change of the record), as unnumbered entries."""
        if not lines:
            return
        pipe = self.client.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(RUN_OUTPUT_PREFIX + run_id, {"s": "stdout", "l": line},
                      maxlen=RUN_OUTPUT_MAXLEN, approximate=True)
        pipe.execute()

    def _write(self, run_id: str, expected: bytes, new: bytes, effects: Effects) -> bool:
        args: list[Any] = [expected, new, self.ttl, RUN_OUTPUT_MAXLEN, len(effects.lines),
                           *effects.lines, len(effects.sets)]
        for key, value, ttl in effects.sets:
            args.extend((key, value, ttl))
        if effects.end is not None:
            status, code = effects.end
            args.extend((status, "" if code is None else str(code)))
        else:
            args.extend(("", ""))
        args.extend(effects.publish or ("", "", "", "", ""))
        args.extend(effects.forget or ("", ""))
        keys = [RUN_KEY_PREFIX + run_id, RUN_OUTPUT_PREFIX + run_id,
                RUN_OUTPUT_END_PREFIX + run_id]
        try:
            return bool(self._swap(keys=keys, args=args))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"Redis is unreachable while updating run {run_id}: {exc}"
                                   ) from exc


def synced_clock(client: redis.Redis, *, every: float = 10.0) -> Callable[[], datetime]:
    """Redis's clock (as every host agrees on it), read once every ``every`` seconds and carried
    on meanwhile by this host's monotonic clock: a launch then costs no ``TIME`` round trip."""
    lock = threading.Lock()
    state = {"offset": 0.0, "synced": -math.inf}

    def now() -> datetime:
        mono = time.monotonic()
        with lock:
            if mono - state["synced"] > every:
                seconds, micros = client.time()
                state["offset"] = seconds + micros / 1_000_000 - time.monotonic()
                state["synced"] = mono
            offset = state["offset"]
        return datetime.fromtimestamp(time.monotonic() + offset, tz=UTC)

    return now
