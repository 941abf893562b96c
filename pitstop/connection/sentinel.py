"""Redis behind Sentinel: one ``PITSTOP_REDIS_URL`` for the broker, the results, the bus and every
pitstop key.

The form (documented in docs/operations.md)::

    sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB][?sentinel_password=…]

``HOST:PORT`` pairs are the sentinels (port 26379 by default), ``SERVICE`` the name they monitor
(``sentinel monitor SERVICE …``), ``DB`` the database number (0). ``USER``/``PASSWORD`` log in to
the primary (and replicas); ``sentinel_password`` (and ``sentinel_username``) log in to the
sentinels themselves, when they ask for one (``requirepass`` in sentinel.conf).

redis-py asks the sentinels where the primary is before each new connection
(:meth:`redis.sentinel.Sentinel.master_for`) and drops connections to a primary that was demoted,
so a failover looks to pitstop like a short outage (ridden out by :mod:`pitstop.connection.outage`
and Celery's own reconnects). kombu and Celery take the same sentinels as their own URL form
(``sentinel://…;sentinel://…`` with the ``master_name`` transport option): :meth:`SentinelURL.kombu_url`
and :meth:`SentinelURL.transport_options` give them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import redis
from redis.sentinel import Sentinel

from pitstop.kernel.errors import ConfigError

SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_SOCKET_TIMEOUT = 5.0
"""Seconds to wait for a sentinel's answer: a stopped sentinel must not hang every connect."""
_QUERY_KEYS = frozenset({"sentinel_password", "sentinel_username"})
_KEY = "redis.url"


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() == SCHEME


def _fail(message: str) -> ConfigError:
    return ConfigError(f"{message} (expected sentinel://[[user]:password@]host:port[,host:port…]"
                       "/service[/db])", key_path=_KEY)


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise _fail(f"sentinel address {text!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _fail(f"sentinel address {text!r} has no valid port")
    return host, int(port_text)


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``sentinel://`` URL (see the module)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """The URL's parts; a :class:`ConfigError` at ``redis.url`` naming what is wrong
        (never the password)."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != SCHEME:
            raise _fail("not a sentinel:// URL")
        rest, _, query = rest.partition("?")
        rest, _, fragment = rest.partition("#")
        if fragment:
            raise _fail("a URL fragment (#…) is not allowed")
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
            if not colon:  # redis:// reads a lone userinfo as the password too
                username, password = None, unquote(user) or None
        if not hosts:
            raise _fail("no sentinel address")
        sentinels = tuple(_host_port(part.strip()) for part in hosts.split(","))
        segments = [segment for segment in path.split("/") if segment]
        if not segments:
            raise _fail("no service name (the name the sentinels monitor)")
        if len(segments) > 2:
            raise _fail(f"path /{path} has more than /service/db")
        db = 0
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise _fail(f"database {segments[1]!r} is not a number")
            db = int(segments[1])
        options = parse_qs(query, keep_blank_values=True)
        last = {key: values[-1] for key, values in options.items()}
        unknown = sorted(set(options) - _QUERY_KEYS)
        if unknown:
            raise _fail(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(_QUERY_KEYS))})")
        return cls(sentinels=sentinels, service=unquote(segments[0]), db=db,
                   username=username, password=password,
                   sentinel_username=last.get("sentinel_username") or None,
                   sentinel_password=last.get("sentinel_password") or None)

    # --- redis-py -------------------------------------------------------------------------------
    def sentinel_kwargs(self) -> dict[str, Any]:
        """Connection arguments for the sentinels themselves."""
        kwargs: dict[str, Any] = {"socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT,
                                  "socket_timeout": SENTINEL_SOCKET_TIMEOUT}
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client of the current primary; it finds the new one after a failover."""
        manager = Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels), sentinel_kwargs=self.sentinel_kwargs())
        credentials: dict[str, Any] = {"db": self.db}
        if self.username:
            credentials["username"] = self.username
        if self.password:
            credentials["password"] = self.password
        client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
            self.service, redis_class=redis.Redis, **credentials, **kwargs)
        return client

    # --- kombu and Celery ------------------------------------------------------------------------
    def kombu_url(self) -> str:
        """kombu's form: one ``sentinel://`` URL per sentinel, joined by ``;``; the credentials
        in each are the primary's (kombu and Celery log in to the primary with the first's)."""
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        return ";".join(f"{SCHEME}://{auth}{_netloc(host, port)}/{self.db}"
                        for host, port in self.sentinels)

    def transport_options(self) -> dict[str, Any]:
        """What kombu's Sentinel transport and Celery's Sentinel result backend need besides."""
        return {"master_name": self.service, "sentinel_kwargs": self.sentinel_kwargs()}

    def describe(self) -> str:
        """Safe to print: the sentinels, service and db, never a password."""
        hosts = ",".join(_netloc(host, port) for host, port in self.sentinels)
        return f"{SCHEME}://{hosts}/{self.service}/{self.db}"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
