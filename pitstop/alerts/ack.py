"""Signed acknowledgement links: ``<base>/alerts/ack/<alert id>?exp=<epoch>&sig=<hmac>``.

The HMAC key is random, created once in Redis (``SET NX``): whoever can read it could also ack
an alert by writing Redis directly, so keeping it there gives nothing away, and every worker and
``pitstop serve`` share it without configuration. Links expire (``ack.link_ttl``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import redis

from pitstop.kernel.constants import ALERT_ACK_SIGNING_KEY

__all__ = ["AckLinks", "signing_key"]


def signing_key(client: redis.Redis) -> bytes:
    client.set(ALERT_ACK_SIGNING_KEY, secrets.token_hex(32), nx=True)
    raw = client.get(ALERT_ACK_SIGNING_KEY)
    if raw is None:  # deleted between the two calls: try once more
        client.set(ALERT_ACK_SIGNING_KEY, secrets.token_hex(32), nx=True)
        raw = client.get(ALERT_ACK_SIGNING_KEY)
    return raw if isinstance(raw, bytes) else str(raw).encode()


class AckLinks:
    def __init__(self, key: bytes, base_url: str, ttl: float) -> None:
        self.key = key
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl

    def signature(self, alert_id: str, expires: int) -> str:
        mac = hmac.new(self.key, f"ack\x00{alert_id}\x00{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:18]).decode()

    def url(self, alert_id: str, *, now: float) -> str:
        expires = int(now + self.ttl)
        return (f"{self.base_url}/alerts/ack/{alert_id}?exp={expires}"
                f"&sig={self.signature(alert_id, expires)}")

    def verify(self, alert_id: str, expires: str, signature: str, *, now: float) -> str | None:
        """None when the link is good; else why not (bad, or expired)."""
        try:
            when = int(expires)
        except (TypeError, ValueError):
            return "the link is malformed"
        if not hmac.compare_digest(self.signature(alert_id, when), signature or ""):
            return "the link's signature is wrong"
        if when < now:
            return "the link has expired: use `pitstop alerts ack ID`"
        return None
