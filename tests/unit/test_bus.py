"""Event bus logic without a server: validation, encodings, time parsing, fakeredis streams."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from pitstop.bus.eventbus import (
    EVENT_FIELD,
    EventBus,
    encode_event,
    pack_commands,
    stream_id_at,
)
from pitstop.bus.events import Event, make_event
from pitstop.connection.server import free_port
from pitstop.kernel.constants import DEAD_LETTER_STREAM, EVENT_CHANNEL_PREFIX, EVENT_STREAM
from pitstop.kernel.errors import (
    HopLimitExceeded,
    InvalidEventType,
    InvalidPattern,
    PayloadTooLarge,
    RedisUnavailable,
    ValidationError,
)
from pitstop.kernel.timeparse import parse_since

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=6)
event_types = st.lists(st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), min_size=1,
                       max_size=4).map(".".join)


@pytest.fixture
def fake() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def bus(fake: fakeredis.FakeRedis) -> EventBus:
    return EventBus(fake, source="unit/1", clock=lambda: NOW)


# --- encodings ---------------------------------------------------------------------------------
@given(event_types, json_objects,
       st.text(st.characters().filter(str.isprintable), max_size=20),  # sources are printable
       st.integers(0, 16))
def test_encode_event_is_exactly_to_json(event_type: str, data: dict[str, Any], source: str,
                                         hops: int) -> None:
    event = replace(make_event(event_type, data, source=source or "s", now=NOW), hops=hops)
    assert encode_event(event) == event.to_json()
    assert Event.from_json(encode_event(event)) == event


@given(st.lists(st.tuples(st.sampled_from(["XADD", "PUBLISH", "SET"]),
                          st.lists(st.text() | st.integers(), max_size=6)), min_size=1,
                max_size=3))
def test_pack_commands_matches_redis_py(commands: list[tuple[str, list[str | int]]]) -> None:
    flat = [(name, *args) for name, args in commands]
    packer = redis.Connection()  # type: ignore[no-untyped-call]
    expected = b"".join(packer.pack_commands(flat))  # type: ignore[no-untyped-call]
    assert pack_commands(*flat) == expected


# --- since -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "delta"), [
    ("30s", timedelta(seconds=30)), ("10m", timedelta(minutes=10)), ("2h", timedelta(hours=2)),
    ("1d", timedelta(days=1)), ("1w", timedelta(weeks=1)), ("1.5h", timedelta(minutes=90)),
    (" 10M ", timedelta(minutes=10)),
])
def test_relative_since_counts_back_from_the_clock(text: str, delta: timedelta) -> None:
    assert parse_since(text, now=NOW) == NOW - delta


def test_iso_since_with_zone_naive_or_z() -> None:
    assert parse_since("2025-03-01T10:00:00Z", now=NOW) == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_since("2025-03-01T10:00:00", now=NOW) == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_since("2025-03-01T12:00:00+02:00", now=NOW) == datetime(2025, 3, 1, 10,
                                                                           tzinfo=UTC)
    aware = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_since(aware, now=NOW) is aware
    assert parse_since(datetime(2024, 1, 1), now=NOW) == aware


@pytest.mark.parametrize("bad", ["yesterday", "10x", "", "m10", "-5m"])
def test_bad_since_is_a_validation_error_naming_the_value(bad: str) -> None:
    with pytest.raises(ValidationError, match="since"):
        parse_since(bad, now=NOW)


def test_stream_id_at_is_epoch_milliseconds() -> None:
    assert stream_id_at(datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)) == "1500-0"
    assert stream_id_at(datetime(1960, 1, 1, tzinfo=UTC)) == "0-0"


# --- publish -----------------------------------------------------------------------------------
def _stored(client: fakeredis.FakeRedis, stream: str = EVENT_STREAM) -> list[Event]:
    entries = client.xrange(stream) or []
    return [Event.from_json(fields[EVENT_FIELD.encode()]) for _, fields in entries if fields]


def _sid(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_publish_stores_the_returned_event_with_clock_time_and_source(
        bus: EventBus, fake: fakeredis.FakeRedis) -> None:
    event = bus.publish("Phase.1.Completed", {"ok": True})
    assert event.type == "phase.1.completed"
    assert event.time == "2025-03-01T12:00:00.000Z"
    assert event.source == "unit/1"
    assert _stored(fake) == [event]
    other = bus.publish("x.y", source="ci/runner-7")
    assert other.source == "ci/runner-7"
    assert other.data == {}


def test_publish_with_parent_joins_its_trace(bus: EventBus) -> None:
    root = bus.publish("a.started")
    child = bus.publish("a.completed", parent=root)
    assert (child.trace_id, child.parent_id, child.hops) == (root.trace_id, root.id, 1)


@pytest.mark.parametrize(("call", "error"), [
    (lambda b: b.publish("phase..completed"), InvalidEventType),
    (lambda b: b.publish("phase.*.completed"), InvalidEventType),
    (lambda b: b.publish(""), InvalidEventType),
    (lambda b: b.publish("big.event", {"blob": "x" * 2000}), PayloadTooLarge),
    (lambda b: b.publish("not.object", ["a"]), ValidationError),
    (lambda b: b.publish("nan.value", {"x": math.nan}), ValidationError),
    (lambda b: b.publish("deep.event", parent=replace(make_event("p", now=NOW), hops=3)),
     HopLimitExceeded),
])
def test_invalid_publish_raises_and_publishes_nothing(fake: fakeredis.FakeRedis, call: Any,
                                                      error: type[Exception]) -> None:
    bus = EventBus(fake, max_data_bytes=1000, max_hops=3, clock=lambda: NOW)
    with pytest.raises(error):
        call(bus)
    assert fake.exists(EVENT_STREAM) == 0


def test_publish_event_normalizes_and_validates(bus: EventBus, fake: fakeredis.FakeRedis) -> None:
    built = replace(make_event("deploy.prod.failed", {"n": 1}, now=NOW), type="Deploy.PROD.Failed")
    sent = bus.publish_event(built)
    assert sent.type == "deploy.prod.failed"
    assert _stored(fake) == [sent]
    with pytest.raises(HopLimitExceeded, match="trigger"):
        bus.publish_event(replace(built, hops=bus.max_hops + 1))
    with pytest.raises(InvalidEventType):
        bus.publish_event(replace(built, type="bad type"))
    with pytest.raises(ValidationError):
        bus.publish_event(replace(built, hops=-1))
    assert len(_stored(fake)) == 1


def test_private_stream_uses_private_channels_and_dead_letters(fake: fakeredis.FakeRedis) -> None:
    default = EventBus(fake)
    assert (default.channel_prefix, default.dead_letter_stream) == (EVENT_CHANNEL_PREFIX,
                                                                    DEAD_LETTER_STREAM)
    private = EventBus(fake, stream="t:events")
    assert (private.channel_prefix, private.dead_letter_stream) == ("t:events:ev:",
                                                                    "t:events:dead")


# --- replay ------------------------------------------------------------------------------------
def test_replay_pages_forward_and_backward_with_pattern_and_limit(
        fake: fakeredis.FakeRedis) -> None:
    bus = EventBus(fake, clock=lambda: NOW)
    types = ["build.ok", "build.failed", "deploy.prod.failed"]
    published = [bus.publish(types[i % 3], {"i": i}) for i in range(1100)]  # > 2 pages of 500
    assert list(bus.replay()) == published
    assert list(bus.replay(reverse=True)) == published[::-1]
    failures = [e for e in published if e.type.endswith(".failed")]
    assert list(bus.replay(pattern="**.failed")) == failures
    assert list(bus.replay(pattern="*.failed", limit=5)) == [e for e in published
                                                            if e.type == "build.failed"][:5]
    assert list(bus.replay(pattern="**.failed", limit=3, reverse=True)) == failures[::-1][:3]
    assert list(bus.replay(limit=700)) == published[:700]
    assert list(bus.replay(limit=0)) == []


def test_replay_since_maps_to_stream_ids(fake: fakeredis.FakeRedis) -> None:
    bus = EventBus(fake, clock=lambda: NOW)
    fake.xadd(EVENT_STREAM, {EVENT_FIELD: encode_event(make_event("old.one", now=NOW))},
              id="1000-0")
    fresh = make_event("new.one", now=NOW)
    fake.xadd(EVENT_STREAM, {EVENT_FIELD: encode_event(fresh)}, id="2000-5")
    moment = datetime.fromtimestamp(1.5, tz=UTC)
    assert list(bus.replay(since=moment)) == [fresh]
    assert list(bus.replay(since="1970-01-01T00:00:01.500Z")) == [fresh]
    assert len(list(bus.replay(since=datetime.fromtimestamp(0, tz=UTC)))) == 2
    later = EventBus(fake, clock=lambda: datetime.fromtimestamp(2.5, tz=UTC))
    assert list(later.replay(since="1s")) == [fresh]
    assert len(list(later.replay(since="3s"))) == 2


def test_replay_skips_malformed_entries(bus: EventBus, fake: fakeredis.FakeRedis) -> None:
    fake.xadd(EVENT_STREAM, {"junk": "1"})
    fake.xadd(EVENT_STREAM, {EVENT_FIELD: "{not json"})
    event = bus.publish("ok.event")
    assert list(bus.replay()) == [event]


def test_replay_rejects_bad_arguments_before_iterating(bus: EventBus) -> None:
    with pytest.raises(InvalidPattern):
        bus.replay(pattern="phase.1*")
    with pytest.raises(ValidationError):
        bus.replay(since="soon")
    with pytest.raises(ValidationError):
        bus.replay(limit=-1)


# --- consumer groups (the parts fakeredis models faithfully) -----------------------------------
def test_group_reads_history_from_before_it_existed_and_dead_letters_junk(
        bus: EventBus, fake: fakeredis.FakeRedis) -> None:
    first = bus.publish("a.one")
    junk_id = _sid(fake.xadd(EVENT_STREAM, {"not": "an event"}))
    bad_json_id = _sid(fake.xadd(EVENT_STREAM, {EVENT_FIELD: "[1, 2]"}))
    second = bus.publish("a.two")
    consumer = bus.consumer("g", "c1")
    deliveries = consumer.read(count=10, block_ms=0)
    assert [d.event for d in deliveries] == [first, second]
    assert [d.deliveries for d in deliveries] == [1, 1]
    consumer.ack(*deliveries)
    assert fake.xpending(EVENT_STREAM, "g")["pending"] == 0
    letters = bus.dead_letters()
    assert [letter.stream_id for letter in letters] == [bad_json_id, junk_id]  # newest first
    assert all(letter.group == "g" and letter.consumer == "c1" for letter in letters)
    assert all(letter.reason.startswith("malformed entry") for letter in letters)
    assert letters[0].raw == "[1, 2]"
    assert letters[0].event is None
    assert json.loads(letters[1].raw) == {"not": "an event"}
    assert letters[0].time == "2025-03-01T12:00:00.000Z"


def test_restarted_consumer_gets_its_own_pending_entries_first(
        bus: EventBus, fake: fakeredis.FakeRedis) -> None:
    events = [bus.publish("job.step", {"i": i}) for i in range(5)]
    crashed = bus.consumer("g", "worker-1")
    assert len(crashed.read(count=3, block_ms=0)) == 3  # never acked: the process "died"
    restarted = bus.consumer("g", "worker-1")
    resumed = restarted.read(count=10, block_ms=0)
    assert [d.event for d in resumed] == events[:3]
    assert [d.deliveries for d in resumed] == [2, 2, 2]
    fresh = restarted.read(count=10, block_ms=0)
    assert [d.event for d in fresh] == events[3:]
    assert [d.deliveries for d in fresh] == [1, 1]


def test_consumer_arguments_are_validated(bus: EventBus) -> None:
    with pytest.raises(ValidationError):
        bus.consumer(max_deliveries=0)
    with pytest.raises(ValidationError):
        bus.consumer(claim_idle_ms=-1)
    with pytest.raises(ValidationError):
        bus.consumer("g").read(count=0)
    assert bus.consumer("g").name != bus.consumer("g").name


# --- Redis down --------------------------------------------------------------------------------
def test_redis_down_is_redis_unavailable_naming_host_port_but_not_password() -> None:
    port = free_port()  # nothing listens there
    password = "pw-Zq81-secret"
    client = redis.Redis.from_url(f"redis://:{password}@127.0.0.1:{port}/0",
                                  socket_connect_timeout=0.5)
    bus = EventBus(client)
    attempts: list[Callable[[], object]] = [
        lambda: bus.publish("x.y"),
        lambda: bus.subscribe("**"),
        lambda: list(bus.replay()),
        bus.stream_length,
        lambda: bus.consumer("g").read(block_ms=0),
        lambda: bus.consumer("g").reclaim(),
        bus.dead_letters,
    ]
    for attempt in attempts:
        with pytest.raises(RedisUnavailable) as caught:
            attempt()
        message = str(caught.value)
        assert f"127.0.0.1:{port}" in message
        assert password not in message
        assert caught.value.exit_code == 3


class _DroppedConnection:
    """A pooled connection the server has silently dropped: it fails on first use."""

    def __init__(self) -> None:
        self.disconnected = False

    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None:
        raise redis.ConnectionError("Connection reset by peer")

    def disconnect(self) -> None:
        self.disconnected = True


def test_publish_retries_once_on_a_dropped_pooled_connection(
        bus: EventBus, fake: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = fake.connection_pool
    dropped = _DroppedConnection()
    real_get = pool.get_connection
    handed_out: list[object] = []

    def get_connection() -> object:
        connection = dropped if not handed_out else real_get()
        handed_out.append(connection)
        return connection

    monkeypatch.setattr(pool, "get_connection", get_connection)
    monkeypatch.setattr(pool, "release", lambda connection: None)
    event = bus.publish("after.blip")
    assert dropped.disconnected
    assert len(handed_out) == 2
    assert _stored(fake) == [event]


def test_publish_gives_up_after_the_retry(bus: EventBus, fake: fakeredis.FakeRedis,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pool = fake.connection_pool
    monkeypatch.setattr(pool, "get_connection", _DroppedConnection)
    monkeypatch.setattr(pool, "release", lambda connection: None)
    with pytest.raises(RedisUnavailable, match="Connection reset by peer"):
        bus.publish("during.outage")


def test_interrupted_batch_acks_what_was_handled(bus: EventBus,
                                                 fake: fakeredis.FakeRedis) -> None:
    events = [bus.publish("job.step", {"i": i}) for i in range(5)]
    handled: list[Event] = []

    def handler(event: Event) -> None:
        if event == events[2]:
            raise KeyboardInterrupt
        handled.append(event)

    consumer = bus.consumer("g", "c1")
    with pytest.raises(KeyboardInterrupt):
        consumer.process(handler, block_ms=0, max_batches=1)
    assert handled == events[:2]
    pending = fake.xpending_range(EVENT_STREAM, "g", "-", "+", 10)
    assert len(pending) == 3  # the interrupted one and the two never reached
