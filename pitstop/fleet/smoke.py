"""``pitstop smoke``: is this pitstop fleet doing its job right now?

Each check says exactly what it saw:

- **broker**: Redis reachable and the password accepted (a refused password is told apart from
  an unreachable server);
- **workers**: at least one worker answering per required queue (``celery.queues`` and the
  housekeeping queue ``default``, or the queues asked for), by the queues each one consumes;
- **canary**: a task sent to each required queue comes back from a worker with what it was sent;
- **beat**: Beat's singleton lock is held and the leader's heartbeat is younger than its lock
  TTL (:mod:`pitstop.fleet.beatlock`);
- **router** and **alerts**: the consumer groups of the router and of the alert manager (when
  ``alerts.yaml`` turns it on) exist, and neither has an entry waiting undelivered, or delivered
  and unacknowledged, for longer than ``stuck_after`` seconds (Redis's clock, from stream ids and
  idle times);
- **triggers**: a trigger config is in force fleet-wide, no edit was refused since, and the
  files here (when present) are the ones in force.

The Celery parts come in as two callables (:class:`WorkerProbe`), so this module stays free of
Celery: the CLI builds them from the app.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from pitstop.alerts.config import load_alerts_config
from pitstop.bus.streamcodec import text_of
from pitstop.fleet.beatlock import beat_alive
from pitstop.kernel.constants import (
    ALERTS_GROUP,
    BEAT_HEARTBEAT_KEY,
    BEAT_LOCK_KEY,
    EVENT_STREAM,
    ROUTER_GROUP,
    SMOKE_STUCK_AFTER_SECONDS,
)
from pitstop.kernel.errors import PitstopError
from pitstop.triggers.source import ConfigSource
from pitstop.triggers.state import TriggerState

__all__ = ["SmokeCheck", "SmokeReport", "WorkerProbe", "run_smoke"]

BACKLOG_COUNT_CAP = 1000
"""Undelivered entries counted at most (the report says ``1000+`` beyond)."""


@dataclass
class SmokeCheck:
    name: str
    ok: bool
    detail: str
    skipped: bool = False


@dataclass
class SmokeReport:
    checks: list[SmokeCheck]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[SmokeCheck]:
        return [check for check in self.checks if not check.ok]

    def to_list(self) -> list[dict[str, Any]]:
        return [asdict(check) for check in self.checks]


class WorkerProbe(Protocol):
    def queues_by_worker(self, timeout: float) -> dict[str, list[str]]:
        """Each worker answering within ``timeout``, with the queues it consumes."""
        ...

    def canary(self, queue: str, nonce: str, timeout: float) -> dict[str, Any]:
        """Send the canary task to ``queue`` and return its result (raises on timeout)."""
        ...


def run_smoke(client: redis.Redis, probe: WorkerProbe, *, queues: list[str],
              config_dir: Path, beat_lock_ttl: float, timeout: float = 2.0,
              stuck_after: float = SMOKE_STUCK_AFTER_SECONDS,
              clock: Callable[[], float] = time.monotonic) -> SmokeReport:
    """Run every check; a broker that fails stops the rest (they would only repeat it)."""
    checks: list[SmokeCheck] = []
    broker = _guard("broker", lambda: _broker(client))
    checks.append(broker)
    if not broker.ok:
        return SmokeReport(checks)
    workers = _guard("workers", lambda: _workers(probe, queues, timeout))
    checks.append(workers)
    if workers.ok:
        checks.append(_guard("canary", lambda: _canary(probe, queues, timeout * 5, clock)))
    else:
        checks.append(SmokeCheck("canary", False, "not sent: no worker for every required "
                                 "queue", skipped=True))
    checks.append(_guard("beat", lambda: _beat(client, beat_lock_ttl)))
    checks.append(_guard("router", lambda: _group(client, ROUTER_GROUP, stuck_after)))
    checks.append(_alerts(client, config_dir, stuck_after))
    checks.append(_guard("triggers", lambda: _triggers(client, config_dir)))
    return SmokeReport(checks)


def _guard(name: str, probe: Callable[[], str]) -> SmokeCheck:
    try:
        return SmokeCheck(name, True, probe())
    except (PitstopError, _Failed) as exc:
        return SmokeCheck(name, False, str(exc))
    except redis.AuthenticationError as exc:
        return SmokeCheck(name, False, f"the Redis password was refused: {exc}")
    except (redis.RedisError, OSError) as exc:
        return SmokeCheck(name, False, f"{type(exc).__name__}: {exc}")
    except TimeoutError as exc:
        return SmokeCheck(name, False, f"timed out: {exc}")


class _Failed(Exception):
    """A check's precise reason for failing."""


def _broker(client: redis.Redis) -> str:
    started = time.perf_counter()
    try:
        client.ping()
    except redis.AuthenticationError:
        raise _Failed("Redis answered but refused the password (check PITSTOP_REDIS_URL)") \
            from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise _Failed(f"Redis refused the credentials: {exc}") from None
        raise
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        raise _Failed(f"Redis at {where} is unreachable: {exc}") from None
    latency = (time.perf_counter() - started) * 1000
    version = client.info("server").get("redis_version", "?")
    return f"reachable and authenticated (redis {version}, ping {latency:.1f} ms)"


def _workers(probe: WorkerProbe, queues: list[str], timeout: float) -> str:
    answering = probe.queues_by_worker(timeout)
    if not answering:
        raise _Failed(f"no worker answered within {timeout:g}s (required queues: "
                      f"{', '.join(queues)})")
    missing = [queue for queue in queues
               if not any(queue in consumed for consumed in answering.values())]
    seen = "; ".join(f"{name} [{','.join(sorted(consumed))}]"
                     for name, consumed in sorted(answering.items()))
    if missing:
        raise _Failed(f"no worker answering consumes queue {', '.join(missing)} (answering: "
                      f"{seen})")
    per_queue = ", ".join(
        f"{queue}: {sum(1 for consumed in answering.values() if queue in consumed)}"
        for queue in queues)
    return f"{len(answering)} answering ({per_queue})"


def _canary(probe: WorkerProbe, queues: list[str], timeout: float,
            clock: Callable[[], float]) -> str:
    parts = []
    for queue in queues:
        nonce = secrets.token_hex(8)
        started = clock()
        try:
            result = probe.canary(queue, nonce, timeout)
        except TimeoutError:
            raise _Failed(f"no answer from queue {queue} within {timeout:g}s") from None
        if not isinstance(result, dict) or result.get("nonce") != nonce:
            raise _Failed(f"queue {queue} answered {result!r}, not the canary sent")
        parts.append(f"{queue} {(clock() - started) * 1000:.0f} ms via "
                     f"{result.get('worker', '?')}")
    return "round trip: " + ", ".join(parts)


def _beat(client: redis.Redis, default_ttl: float) -> str:
    raw: Any = client.get(BEAT_HEARTBEAT_KEY)
    if raw is None:
        raise _Failed("no Beat heartbeat: no Beat has led for over twice its lock TTL "
                      "(is one running? pitstop beat)")
    parts = text_of(raw).split(" ")  # "<stamp> <holder> <ttl>"
    holder = parts[1] if len(parts) > 1 else "an unknown Beat"
    ttl = _number(parts[2]) if len(parts) > 2 else None
    ttl = ttl or float(default_ttl)
    seconds, micros = client.time()
    age = seconds + micros / 1e6 - (_number(parts[0]) or 0.0)
    if not beat_alive(age, ttl):
        raise _Failed(f"Beat is down: its last heartbeat (from {holder.split('/')[0]}) is "
                      f"{age:.0f}s old, over its lock TTL of {ttl:g}s")
    if not client.exists(BEAT_LOCK_KEY):
        raise _Failed("Beat's singleton lock is not held (a leader is between renewals or gone)")
    return f"lock held, heartbeat {age:.1f}s old (TTL {ttl:g}s, {holder.split('/')[0]})"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _ms_of(stream_id: str) -> int:
    return int(stream_id.split("-", 1)[0])


def _group(client: redis.Redis, group: str, stuck_after: float) -> str:
    try:
        groups = client.xinfo_groups(EVENT_STREAM)
    except redis.ResponseError:
        groups = []
    info = next((g for g in groups if text_of(g.get("name")) == group), None)
    if info is None:
        raise _Failed(f"consumer group {group!r} does not exist on {EVENT_STREAM}: nothing "
                      "has consumed events yet (is a worker running it?)")
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    last = text_of(info.get("last-delivered-id"))
    waiting = client.xrange(EVENT_STREAM, min=f"({last}", max="+", count=BACKLOG_COUNT_CAP)
    problems = []
    if waiting:
        oldest = (now_ms - _ms_of(text_of(waiting[0][0]))) / 1000
        count = f"{len(waiting)}+" if len(waiting) >= BACKLOG_COUNT_CAP else str(len(waiting))
        if oldest > stuck_after:
            problems.append(f"{count} entries not delivered, the oldest {oldest:.0f}s old "
                            f"(over {stuck_after:g}s: nothing consumes the group)")
    pending = int(info.get("pending") or 0)
    if pending:
        stale = client.xpending_range(EVENT_STREAM, group, min="-", max="+", count=100,
                                      idle=int(stuck_after * 1000))
        if stale:
            first = stale[0]
            consumers = sorted({text_of(item["consumer"]) for item in stale})
            problems.append(
                f"{len(stale)}{'+' if len(stale) >= 100 else ''} entries delivered and not "
                f"acknowledged for over {stuck_after:g}s (oldest idle "
                f"{int(first['time_since_delivered']) / 1000:.0f}s, consumer "
                f"{', '.join(consumers)})")
    if problems:
        raise _Failed(f"group {group!r}: stuck backlog: " + "; ".join(problems))
    members = int(info.get("consumers") or 0)
    lag = f"{len(waiting)} undelivered" if waiting else "nothing undelivered"
    return f"group {group!r}: {members} consumer(s), {lag}, {pending} pending"


def _alerts(client: redis.Redis, config_dir: Path, stuck_after: float) -> SmokeCheck:
    try:
        config = load_alerts_config(config_dir)
    except PitstopError as exc:
        return SmokeCheck("alerts", False, f"alerts config refused: {exc}")
    if config is None or not config.file.enabled:
        return SmokeCheck("alerts", True, f"off (no enabled {config_dir / 'alerts.yaml'}): "
                          "no alert manager group to check", skipped=True)
    return _guard("alerts", lambda: _group(client, ALERTS_GROUP, stuck_after))


def _triggers(client: redis.Redis, config_dir: Path) -> str:
    state = TriggerState(client)
    active = state.active_config()
    refused = state.last_error()
    source = ConfigSource(config_dir, state)
    if refused:
        in_force = f"config {active.version} stays in force" if active else "no config in force"
        raise _Failed(f"an edit was refused at {refused.get('at')} ({refused.get('by')}): "
                      f"{refused.get('error')}; {in_force}")
    if active is None:
        if source.triggers_path.is_file():
            raise _Failed(f"{source.triggers_path} exists but no trigger config is in force "
                          "(no router has loaded it: are workers running?)")
        return "no trigger config (none here, none in force)"
    if source.triggers_path.is_file():
        local = source.load_files().config.version
        if local != active.version:
            raise _Failed(f"the config here ({source.triggers_path}, version {local}) is not the "
                          f"one in force (version {active.version}, loaded {active.loaded_at} by "
                          f"{active.loaded_by}): run pitstop triggers reload")
    return f"config {active.version} in force (loaded {active.loaded_at} by {active.loaded_by})"
