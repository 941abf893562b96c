"""A lock that is one Redis key holding its owner's token: Beat's singleton lock, the alert
manager's leader lock, a deployment's environment lock.

Whoever wrote the token renews or releases the lock only while the key still holds that token,
compared and acted on in one Lua script (run by EVALSHA): an owner that stalled past the TTL, its
lock gone to another meanwhile, can neither extend nor delete the new owner's lock.
"""

from __future__ import annotations

import redis

__all__ = ["TokenLock"]

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class TokenLock:
    """The lock in ``key``; redis-py errors pass through to the caller."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self, token: str, ttl_ms: int) -> bool:
        """Take the lock for ``token`` (``SET NX PX``), or renew it if ``token`` holds it
        already; False while another token holds it."""
        if self.client.set(self.key, token, nx=True, px=ttl_ms):
            return True
        return self.renew(token, ttl_ms)

    def renew(self, token: str, ttl_ms: int) -> bool:
        """Give the lock ``ttl_ms`` more if ``token`` still holds it."""
        return bool(self._renew(keys=[self.key], args=[token, ttl_ms]))

    def release(self, token: str) -> bool:
        """Delete the lock if ``token`` still holds it."""
        return bool(self._release(keys=[self.key], args=[token]))
