"""Attacks through ``POST /events`` by a holder of the API token: bodies that used to reach a
500 with a traceback, or to put poison into the stream every reader then chokes on, or to forge
an event only pitstop publishes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import Event
from pitstop.kernel.constants import EVENT_STREAM
from pitstop.server.app import create_app

pytestmark = pytest.mark.integration

TOKEN = "api-token-attacks-7f3e"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def http(redis_client: redis.Redis) -> Iterator[TestClient]:
    app = create_app(bus=EventBus(redis_client), client=redis_client, webhook_secret=None,
                     api_token=TOKEN)
    with TestClient(app) as client:
        yield client


def test_a_number_past_pythons_digit_limit_is_400_not_500(http: TestClient) -> None:
    body = b'{"type": "a.b", "data": {"n": ' + b"1" * 5000 + b"}}"
    reply = http.post("/events", content=body, headers=HEADERS)
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["error"]


@pytest.mark.parametrize("body", [
    b'{"type": "a.b", "data": {"s": "\\ud800"}}',
    b'{"type": "a.b", "data": {"\\udc00": 1}}',
    b'{"type": "a.b", "data": {"list": ["ok", "\\uDBFFx"]}}',
])
def test_a_lone_surrogate_never_enters_the_stream(http: TestClient, redis_client: redis.Redis,
                                                  body: bytes) -> None:
    reply = http.post("/events", content=body, headers=HEADERS)
    assert reply.status_code == 400
    assert "surrogate" in reply.json()["error"]
    assert redis_client.xlen(EVENT_STREAM) == 0


def test_an_emoji_still_passes(http: TestClient) -> None:
    reply = http.post("/events", json={"type": "a.b", "data": {"s": "ok \U0001f600"}},
                      headers=HEADERS)
    assert reply.status_code == 201
    assert reply.json()["data"] == {"s": "ok \U0001f600"}


def test_a_lone_surrogate_written_past_the_bus_is_not_an_event() -> None:
    good = Event.from_json('{"id":"x","type":"a.b","source":"s","time":"2026-01-01T00:00:00Z",'
                           '"data":{"s":"\\ud83d\\ude00"},"trace_id":"x","parent_id":null,'
                           '"hops":0}')
    assert good.data == {"s": "\U0001f600"}
    with pytest.raises(Exception, match="surrogate"):
        Event.from_json(good.to_json().replace("\\ude00", ""))


@pytest.mark.parametrize("event_type", ["schedule.fired", "Schedule.Fired", "schedule.x.y"])
def test_schedule_events_cannot_be_forged(http: TestClient, redis_client: redis.Redis,
                                          event_type: str) -> None:
    reply = http.post("/events", json={"type": event_type, "data": {"trigger": "nightly"}},
                      headers=HEADERS)
    assert reply.status_code == 403
    assert redis_client.xlen(EVENT_STREAM) == 0
