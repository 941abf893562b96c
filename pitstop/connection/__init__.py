"""Where Redis is: the embedded redis-server, connecting to it, and riding out short outages."""

from pitstop.connection.connect import connect, describe_url, embedded_server, resolve_redis_url
from pitstop.connection.outage import RedisOutage, is_transient
from pitstop.connection.server import RedisServer, find_redis_server

__all__ = ["RedisOutage", "RedisServer", "connect", "describe_url", "embedded_server",
           "find_redis_server", "is_transient", "resolve_redis_url"]
