"""Where Redis is: the embedded redis-server, connecting to it, riding out short outages, and the
token lock that keeps one leader (Beat, the alert manager, a deployment)."""

from pitstop.connection.connect import (
    client_for_url,
    connect,
    describe_url,
    embedded_server,
    resolve_redis_url,
)
from pitstop.connection.outage import RedisOutage, is_transient
from pitstop.connection.sentinel import SentinelURL, is_sentinel_url
from pitstop.connection.server import RedisServer, find_redis_server
from pitstop.connection.tokenlock import TokenLock

__all__ = ["RedisOutage", "RedisServer", "SentinelURL", "TokenLock", "client_for_url", "connect",
           "describe_url", "embedded_server", "find_redis_server", "is_sentinel_url", "is_transient",
           "resolve_redis_url"]
