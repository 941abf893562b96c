"""One deployment per environment at a time: a lock in Redis with a fencing token.

Taking the lock (``SET NX PX``, in one script with the ``INCR`` of the environment's fence
counter) gives a :class:`Lease`: a random token and a fence number larger than every earlier
one. A second deployment finds the lock held and is refused with who holds it
(:class:`DeployLocked`), never interleaved. The holder renews the lock every third of its TTL
(:meth:`EnvironmentLock.keep_alive`); if it stalls past the TTL (a paused VM, a partition) and a
newer deployment takes the environment, the stale holder's writes to the environment's state
are refused, because every such write carries its fence and Redis checks it against the counter
(:class:`pitstop.deploy.store.DeployStore`): the fence, not the lock's expiry, is what keeps two
writers apart.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from pitstop.bus.streamcodec import redis_call, text_of
from pitstop.connection.tokenlock import TokenLock
from pitstop.kernel.constants import DEPLOY_FENCE_PREFIX, DEPLOY_LOCK_PREFIX
from pitstop.kernel.errors import DeployLocked

__all__ = ["EnvironmentLock", "Lease"]

log = logging.getLogger(__name__)

_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then return {0, held} end
local fence = redis.call('INCR', KEYS[2])
local value = fence .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
"""


@dataclass(frozen=True)
class Lease:
    env: str
    fence: int
    value: str
    """What the lock key holds: ``<fence> <token> <holder JSON>``."""

    @property
    def holder(self) -> dict[str, Any]:
        return _holder(self.value)


def _holder(value: str) -> dict[str, Any]:
    parts = value.split(" ", 2)
    try:
        meta = json.loads(parts[2]) if len(parts) > 2 else {}
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    meta["fence"] = parts[0]
    return meta


class EnvironmentLock:
    """The fenced lock of one environment."""

    def __init__(self, client: redis.Redis, env: str, ttl: float) -> None:
        self.client = client
        self.env = env
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.key = f"{DEPLOY_LOCK_PREFIX}{env}"
        self.fence_key = f"{DEPLOY_FENCE_PREFIX}{env}"
        # Registered scripts run by EVALSHA (the script body crosses the wire once per client).
        self._acquire = client.register_script(_ACQUIRE)
        self._lock = TokenLock(client, self.key)

    def acquire(self, **holder: Any) -> Lease:
        """The lease, or :class:`DeployLocked` naming the deployment that holds it."""
        token = secrets.token_hex(12)
        meta = json.dumps(holder, separators=(",", ":"), default=str)
        ok, value = redis_call(self.client, "take the deploy lock", self._acquire,
                               keys=[self.key, self.fence_key], args=[f"{token} {meta}", self.ttl_ms])
        text = text_of(value)
        if not int(ok):
            who = _holder(text)
            raise DeployLocked(
                f"refused: {self.env} is being deployed by deployment {who.get('deployment', '?')}"
                f" ({who.get('kind', 'deploy')} of {who.get('version', '?')} by "
                f"{who.get('by', '?')}, since {who.get('since', '?')}); one deployment per "
                "environment at a time: wait for it to finish (pitstop deploy history "
                f"{self.env})")
        return Lease(self.env, int(text.split(" ", 1)[0]), text)

    def renew(self, lease: Lease) -> bool:
        return bool(redis_call(self.client, "renew the deploy lock", self._lock.renew, lease.value,
                               self.ttl_ms))

    def release(self, lease: Lease) -> bool:
        return bool(redis_call(self.client, "release the deploy lock", self._lock.release,
                               lease.value))

    def holder(self) -> dict[str, Any] | None:
        value = redis_call(self.client, "read the deploy lock", self.client.get, self.key)
        return None if value is None else _holder(text_of(value))

    @contextmanager
    def keep_alive(self, lease: Lease) -> Iterator[threading.Event]:
        """Renew ``lease`` every third of the TTL while the block runs; the yielded event is
        set if a renewal found the lock gone (another deployment may hold it now)."""
        stop = threading.Event()
        lost = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl_ms / 3000):
                try:
                    if not self.renew(lease):
                        lost.set()
                        log.warning("deploy lock of %s lost (fence %d)", self.env, lease.fence)
                        return
                except Exception as exc:  # Redis away for a moment: the next tick tries again
                    log.warning("could not renew the deploy lock of %s: %s", self.env, exc)

        thread = threading.Thread(target=renew, name=f"pitstop-deploy-lock-{self.env}",
                                  daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join(5)
