"""Deployments in Redis: records, per-environment history, the good versions, approvals.

- ``pitstop:deploy:record:<id>``: one JSON document per deployment (kept 180 days);
- ``pitstop:deploy:history:<env>``: its ids scored by request time;
- ``pitstop:deploy:good:<env>``: versions known good, newest first; ``current`` is the first,
  ``previous`` the second (what an automatic rollback returns to is the ``current`` before the
  deployment started);
- ``pitstop:deploy:env:<env>``: ``current``, ``previous``, ``status`` (``healthy`` or
  ``critical``), the last deployment and the highest fence that wrote;
- ``pitstop:deploy:pending``: deployments awaiting approval, scored by their expiry.

Every write to an environment's versions and status carries the writer's fence (see
:mod:`pitstop.deploy.lock`) and is refused with :class:`FencedOut` unless it is the latest.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from pitstop.bus.streamcodec import redis_call, text_of
from pitstop.kernel.constants import (
    DEPLOY_CLAIM_PREFIX,
    DEPLOY_ENV_PREFIX,
    DEPLOY_FENCE_PREFIX,
    DEPLOY_GOOD_KEEP,
    DEPLOY_GOOD_PREFIX,
    DEPLOY_HISTORY_PREFIX,
    DEPLOY_PENDING,
    DEPLOY_RECORD_PREFIX,
    DEPLOY_TTL_SECONDS,
    DEPLOY_WAITER_PREFIX,
)
from pitstop.kernel.errors import DeploymentNotFound, FencedOut, ValidationError

__all__ = ["DeployStore", "EnvironmentState"]

# KEYS: fence counter, env hash, good list. ARGV: fence, mode, version, other, now, deployment,
# keep. mode: "succeeded" (version becomes current), "rolled_back" (version becomes current,
# other, the version rolled back from, is dropped), "critical" (status only).
_COMMIT = """
local latest = redis.call('GET', KEYS[1])
if (not latest) or latest ~= ARGV[1] then return {0, latest or ''} end
local mode = ARGV[2]
if mode == 'succeeded' or mode == 'rolled_back' then
  if mode == 'rolled_back' and ARGV[4] ~= '' and ARGV[4] ~= ARGV[3] then
    redis.call('LREM', KEYS[3], 0, ARGV[4])
  end
  redis.call('LREM', KEYS[3], 0, ARGV[3])
  redis.call('LPUSH', KEYS[3], ARGV[3])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
  local previous = redis.call('LINDEX', KEYS[3], 1) or ''
  redis.call('HSET', KEYS[2], 'current', ARGV[3], 'previous', previous, 'status', 'healthy',
             'updated_at', ARGV[5], 'deployment', ARGV[6], 'fence', ARGV[1], 'attempted', '')
else
  redis.call('HSET', KEYS[2], 'status', 'critical', 'attempted', ARGV[3], 'updated_at', ARGV[5],
             'deployment', ARGV[6], 'fence', ARGV[1])
end
return {1, ARGV[1]}
"""


class EnvironmentState(dict[str, str]):
    """``current``, ``previous``, ``status`` … of one environment (empty strings when unknown)."""

    @property
    def current(self) -> str | None:
        return self.get("current") or None

    @property
    def previous(self) -> str | None:
        return self.get("previous") or None


class DeployStore:
    def __init__(self, client: redis.Redis, *, ttl_seconds: int = DEPLOY_TTL_SECONDS) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds

    def _call(self, action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        return redis_call(self.client, action, function, *args, **kwargs)

    # --- records ------------------------------------------------------------------------------
    def save(self, record: dict[str, Any], *, score: float) -> None:
        """Write ``record`` (already redacted) and index it in its environment's history."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{DEPLOY_RECORD_PREFIX}{record['id']}", json.dumps(record, default=str),
                 ex=self.ttl_seconds)
        pipe.zadd(f"{DEPLOY_HISTORY_PREFIX}{record['env']}", {record["id"]: score})
        self._call("save a deployment", pipe.execute)

    def get(self, deployment_id: str) -> dict[str, Any]:
        raw = self._call("read a deployment", self.client.get,
                         f"{DEPLOY_RECORD_PREFIX}{deployment_id}")
        if raw is None:
            raise DeploymentNotFound(f"no deployment {deployment_id!r}")
        value: dict[str, Any] = json.loads(raw)
        return value

    def resolve(self, given: str) -> str:
        """The id ``given`` names: itself, or the one id it is a unique prefix or suffix of."""
        if self._call("read a deployment", self.client.exists,
                      f"{DEPLOY_RECORD_PREFIX}{given}"):
            return given
        if len(given) < 4:
            raise DeploymentNotFound(f"no deployment {given!r} (give at least 4 characters)")
        matches: set[str] = set()
        for key in self._call("find a deployment", lambda: list(self.client.scan_iter(
                match=f"{DEPLOY_RECORD_PREFIX}*", count=1000))):
            ident = text_of(key)[len(DEPLOY_RECORD_PREFIX):]
            if ident.startswith(given) or ident.endswith(given):
                matches.add(ident)
        if not matches:
            raise DeploymentNotFound(f"no deployment {given!r}")
        if len(matches) > 1:
            raise ValidationError(f"{given!r} names {len(matches)} deployments: give more of "
                                  "its id")
        return matches.pop()

    def history(self, env: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The environment's deployments, newest first."""
        ids = self._call("read deployment history", self.client.zrevrange,
                         f"{DEPLOY_HISTORY_PREFIX}{env}", 0, max(0, limit - 1))
        if not ids:
            return []
        raws = self._call("read deployments", self.client.mget,
                          [f"{DEPLOY_RECORD_PREFIX}{text_of(i)}" for i in ids])
        return [json.loads(raw) for raw in raws if raw is not None]

    def environments(self) -> list[str]:
        keys = self._call("list environments", lambda: list(self.client.scan_iter(
            match=f"{DEPLOY_HISTORY_PREFIX}*", count=1000)))
        return sorted(text_of(key)[len(DEPLOY_HISTORY_PREFIX):] for key in keys)

    # --- versions -----------------------------------------------------------------------------
    def state(self, env: str) -> EnvironmentState:
        raw = self._call("read an environment", self.client.hgetall, f"{DEPLOY_ENV_PREFIX}{env}")
        return EnvironmentState({text_of(k): text_of(v) for k, v in (raw or {}).items()})

    def good_versions(self, env: str) -> list[str]:
        raw = self._call("read good versions", self.client.lrange,
                         f"{DEPLOY_GOOD_PREFIX}{env}", 0, -1)
        return [text_of(value) for value in raw]

    def commit(self, env: str, *, fence: int, mode: str, version: str, other: str = "",
               now: str, deployment: str) -> None:
        """Record the environment's new state; :class:`FencedOut` if ``fence`` is stale."""
        ok, latest = self._call(
            "record the environment's versions", self.client.eval, _COMMIT, 3,
            f"{DEPLOY_FENCE_PREFIX}{env}", f"{DEPLOY_ENV_PREFIX}{env}",
            f"{DEPLOY_GOOD_PREFIX}{env}", str(fence), mode, version, other, now, deployment,
            DEPLOY_GOOD_KEEP)
        if not int(ok):
            raise FencedOut(f"deployment {deployment} lost {env}'s lock to a newer deployment "
                            f"(fence {fence}, latest {text_of(latest) or 'none'}): its result is "
                            "recorded, the environment's versions are not")

    # --- approvals ----------------------------------------------------------------------------
    def add_pending(self, deployment_id: str, expires_at: float) -> None:
        self._call("queue an approval", self.client.zadd, DEPLOY_PENDING,
                   {deployment_id: expires_at})

    def remove_pending(self, deployment_id: str) -> bool:
        return bool(self._call("dequeue an approval", self.client.zrem, DEPLOY_PENDING,
                               deployment_id))

    def pending(self) -> list[tuple[str, float]]:
        raw = self._call("list approvals", self.client.zrange, DEPLOY_PENDING, 0, -1,
                         withscores=True)
        return [(text_of(ident), float(score)) for ident, score in raw]

    def set_waiter(self, deployment_id: str, ttl_seconds: int) -> None:
        self._call("mark a waiting requester", self.client.set,
                   f"{DEPLOY_WAITER_PREFIX}{deployment_id}", "1", ex=ttl_seconds)

    def clear_waiter(self, deployment_id: str) -> None:
        self._call("clear a waiting requester", self.client.delete,
                   f"{DEPLOY_WAITER_PREFIX}{deployment_id}")

    def has_waiter(self, deployment_id: str) -> bool:
        return bool(self._call("look for a waiting requester", self.client.exists,
                               f"{DEPLOY_WAITER_PREFIX}{deployment_id}"))

    def claim(self, deployment_id: str, who: str) -> bool:
        """True for the one process that executes an approved deployment."""
        return bool(self._call("claim a deployment", self.client.set,
                               f"{DEPLOY_CLAIM_PREFIX}{deployment_id}", who, nx=True,
                               ex=self.ttl_seconds))
