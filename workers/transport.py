"""kombu's Redis transport, mended so that losing Redis never kills the worker.

The bug (kombu 5.x, ``kombu.transport.redis``): when the broker connection drops, Celery's
consumer calls ``Connection.collect()`` and then ``Connection.close()``. ``collect()`` closes the
channels and then drops the transport's link to its connection (``transport.client = None``).
But a channel closed while its BRPOP is in flight first reads that BRPOP's reply; with Redis gone
the read raises a connection error, the channel's ``close()`` stops half-way (still open, its
unacknowledged messages not restored), and the transport stops closing its other channels at the
first one that raises. Celery's ``close()`` then closes the same channel again: it restores the
unacknowledged messages through a connection pool it must rebuild from the dropped
``transport.client`` and fails with ``AttributeError: 'NoneType' object has no attribute
'hostname'``. That is not a connection error, so Celery logs "Unrecoverable error" and the
worker shuts down.

The mends, in :class:`Channel`:

- ``close()`` finishes even when reading the in-flight BRPOP's reply fails (the server is gone:
  there is nothing to read), so the channel is closed, and its messages restored when Redis
  still answers, the first time round;
- building a connection pool for a channel whose connection is already closed raises a
  connection error (which Celery and kombu handle: retry, or log "Couldn't ack") instead of an
  AttributeError.

:func:`install` makes ``redis://`` and ``rediss://`` URLs use this transport (and ``sentinel://``
URLs its Sentinel twin, :class:`SentinelTransport`) in this process
(Celery, Flower and plain kombu connections alike); URLs and their display are unchanged.
"""

from __future__ import annotations

import contextlib
from queue import Empty
from typing import Any

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis

TRANSPORT_PATH = "workers.transport:Transport"
_SCHEMES = ("redis", "rediss")
SENTINEL_TRANSPORT_PATH = "workers.transport:SentinelTransport"


class Channel(kombu_redis.Channel):
    """A Redis channel that closes completely, and fails like a lost connection once closed."""

    def close(self) -> None:
        if self._in_poll and not self.closed:
            # kombu reads the in-flight BRPOP's reply before closing; with the server gone that
            # read raises and the close would stop half-way (see the module docstring).
            with contextlib.suppress(Empty, *self.connection_errors):
                self._brpop_read()  # resets _in_poll, whatever happens
        super().close()

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise redis.ConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous=asynchronous)

    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu builds a new ``redis.Redis`` (a few hundred response callbacks, ~0.1 ms) for
        every publish and ack; one per pool serves them all (it only borrows a pooled
        connection per command, so threads may share it). The blocking client stays per call."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel with the same mends as :class:`Channel`."""


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with :class:`SentinelChannel`."""

    Channel = SentinelChannel


def install() -> None:
    """Route ``redis://`` and ``rediss://`` broker URLs of this process to :class:`Transport`,
    ``sentinel://`` ones to :class:`SentinelTransport`."""
    paths = {**dict.fromkeys(_SCHEMES, TRANSPORT_PATH), "sentinel": SENTINEL_TRANSPORT_PATH}
    for scheme, path in paths.items():
        kombu.transport.TRANSPORT_ALIASES[scheme] = path
        # A class resolved before (none is, in pitstop's processes) would otherwise stay cached.
        cache: dict[Any, Any] = getattr(kombu.transport, "_transport_cache", {})
        cache.pop(scheme, None)
