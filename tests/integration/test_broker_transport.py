"""The mended kombu Redis transport: a broker connection lost with a BRPOP in flight closes
cleanly instead of raising AttributeError (which Celery takes for an "Unrecoverable error")."""

from __future__ import annotations

import logging

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Queue
from kombu.message import Message

from pitstop.connection.server import RedisServer
from pitstop.kernel.serverinfo import ServerInfo
from workers.transport import Transport

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def consuming_worker_connection(url: str) -> tuple[Connection, Message]:
    """A connection in the state a Celery worker's is in while it runs a task: one message
    delivered and not yet acknowledged, a BRPOP in flight for the next one, and a fanout
    (broadcast) consumer on a channel of its own."""
    connection = Connection(url, transport=Transport)
    tasks = Queue("tasks", routing_key="tasks")
    with connection.Producer() as producer:
        producer.publish({"task": 1}, routing_key="tasks", declare=[tasks])
    delivered: list[Message] = []
    consumer = connection.Consumer([tasks], callbacks=[lambda _, message: delivered.append(message)])
    consumer.consume()
    connection.drain_events(timeout=5)
    broadcast = connection.channel()
    Consumer(broadcast, [Queue("bcast", Exchange("bcast", type="fanout"), auto_delete=True)]
             ).consume()
    assert broadcast.client is not None  # as the worker's pidbox channel has it
    delivered[0].channel._brpop_start()  # the worker's event loop keeps a BRPOP in flight
    return connection, delivered[0]


def test_losing_redis_with_a_brpop_in_flight_closes_cleanly(
        own_redis: tuple[RedisServer, ServerInfo]) -> None:
    server, info = own_redis
    connection, message = consuming_worker_connection(info.url)
    server.kill()
    # What Celery's consumer does on a lost connection (on_connection_error_after_connected),
    # where kombu's own transport raises AttributeError("'NoneType' object has no attribute
    # 'hostname'") from the second call.
    connection.collect(socket_timeout=1)
    connection.close()
    assert message.channel.closed
    # Acknowledging the message later (its task ends) is a connection error, which Celery
    # logs ("Couldn't ack") and survives, not an AttributeError.
    with pytest.raises(redis.ConnectionError):
        message.ack()
    message.ack_log_error(logging.getLogger(__name__), connection.connection_errors)

