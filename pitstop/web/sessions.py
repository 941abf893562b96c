"""Logins of the web view: signed session cookies backed by Redis, CSRF tokens, and a limit on
failed logins per address.

The cookie holds a random session id and its HMAC (the key lives in Redis, made once): a forged
or altered cookie is refused before any lookup, and the session itself (user, CSRF token, whether
it may act) is a Redis document keyed by the id's SHA-256 with the login's lifetime as TTL, so a
logout ends it on every server at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis

from pitstop.kernel.constants import WEB_LOGIN_FAILURES_PREFIX, WEB_SESSION_PREFIX, WEB_SIGNING_KEY

__all__ = ["LoginLimiter", "Session", "SessionStore", "Signer", "signing_key"]

_KEY_BYTES = 32
_MAX_COOKIE_CHARS = 200


def signing_key(client: redis.Redis) -> bytes:
    """The key signing cookies, shared by every ``pitstop serve`` on this Redis (made once)."""
    client.set(WEB_SIGNING_KEY, secrets.token_hex(_KEY_BYTES), nx=True)
    raw: Any = client.get(WEB_SIGNING_KEY)
    return bytes(raw) if isinstance(raw, bytes) else str(raw).encode()


class Signer:
    """``value.signature`` tokens (HMAC-SHA256, URL-safe), checked in constant time."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()

    def sign(self, purpose: str, value: str) -> str:
        return f"{value}.{self._mac(purpose, value)}"

    def unsign(self, purpose: str, token: str | None) -> str | None:
        if not token or len(token) > _MAX_COOKIE_CHARS:
            return None
        value, dot, mac = token.rpartition(".")
        if not dot or not value:
            return None
        return value if hmac.compare_digest(mac, self._mac(purpose, value)) else None

    def matches(self, purpose: str, value: str, mac: str) -> bool:
        """Whether ``mac`` is the signature of ``value`` (a token bound to a cookie)."""
        return bool(value) and hmac.compare_digest(mac, self._mac(purpose, value))

    def mac(self, purpose: str, value: str) -> str:
        return self._mac(purpose, value)


@dataclass(frozen=True)
class Session:
    user: str
    via: str
    """``password`` or ``token``."""
    csrf: str
    created: float
    can_act: bool
    """Whether the actions (POST other than logout) are allowed, decided at login: a read-only
    session only looks."""


def _session_key(session_id: str) -> str:
    return WEB_SESSION_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Sessions in Redis, named by the signed ids their cookies carry."""

    PURPOSE = "session"

    def __init__(self, client: redis.Redis, signer: Signer, *, ttl_seconds: int) -> None:
        self.client = client
        self.signer = signer
        self.ttl = ttl_seconds

    def create(self, user: str, *, via: str, can_act: bool, now: float) -> tuple[str, Session]:
        """A new session; returns the cookie value and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(user=user, via=via, csrf=secrets.token_urlsafe(32), created=now,
                          can_act=can_act)
        self.client.set(_session_key(session_id), json.dumps(session.__dict__), ex=self.ttl)
        return self.signer.sign(self.PURPOSE, session_id), session

    def get(self, cookie: str | None) -> Session | None:
        session_id = self.signer.unsign(self.PURPOSE, cookie)
        if session_id is None:
            return None
        raw: Any = self.client.get(_session_key(session_id))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            # A session stored before sessions said whether they may act is read-only (its
            # user logs in again to act): never more rights than the login decided.
            return Session(user=str(doc["user"]), via=str(doc["via"]), csrf=str(doc["csrf"]),
                           created=float(doc["created"]), can_act=doc.get("can_act") is True)
        except (ValueError, KeyError, TypeError):
            return None

    def delete(self, cookie: str | None) -> None:
        session_id = self.signer.unsign(self.PURPOSE, cookie)
        if session_id is not None:
            self.client.delete(_session_key(session_id))


class LoginLimiter:
    """At most ``limit`` failed logins per address within ``window`` seconds (fleet-wide)."""

    def __init__(self, client: redis.Redis, *, limit: int, window: int) -> None:
        self.client = client
        self.limit = limit
        self.window = window

    def _key(self, address: str) -> str:
        return WEB_LOGIN_FAILURES_PREFIX + address[:100]

    def blocked(self, address: str) -> bool:
        raw: Any = self.client.get(self._key(address))
        return raw is not None and int(raw) >= self.limit

    def failed(self, address: str) -> None:
        # The window starts at the first failure (SET NX EX); INCR keeps that TTL (Redis 6.2
        # has no EXPIRE NX).
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self._key(address), 0, nx=True, ex=self.window)
        pipe.incr(self._key(address))
        pipe.execute()

    def reset(self, address: str) -> None:
        self.client.delete(self._key(address))
