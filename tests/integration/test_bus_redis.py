"""The event bus on a real redis-server: delivery guarantees, live patterns, replay, outages."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitstop.bus.consumer import GroupConsumer
from pitstop.bus.eventbus import EVENT_FIELD, EventBus
from pitstop.bus.events import Event
from pitstop.bus.tail import StreamTail
from pitstop.connection.server import RedisServer
from pitstop.kernel.constants import EVENT_STREAM
from pitstop.kernel.errors import HopLimitExceeded, InvalidEventType, PayloadTooLarge, RedisUnavailable
from pitstop.kernel.serverinfo import ServerInfo
from tests.support import RestartableRedis, wait_for

pytestmark = pytest.mark.integration

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=25,
)


@pytest.fixture
def bus(redis_client: redis.Redis) -> EventBus:
    return EventBus(redis_client, source="itest/1")


def drain(consumer: GroupConsumer, seen: list[Event], expected: int, *,
          handler_error: type[Exception] | None = None, timeout: float = 10.0) -> None:
    """Run ``process`` in short batches until ``seen`` holds ``expected`` events."""
    def handle(event: Event) -> None:
        seen.append(event)

    def step() -> bool:
        consumer.process(handle, block_ms=20, max_batches=1)
        return len(seen) >= expected

    wait_for(step, timeout=timeout, interval=0, message=f"{expected} events")


def pending_count(client: redis.Redis, group: str, stream: str = EVENT_STREAM) -> int:
    return int(client.xpending(stream, group)["pending"])


# --- group delivery ----------------------------------------------------------------------------
def test_events_published_before_any_consumer_are_all_delivered(
        bus: EventBus, redis_client: redis.Redis) -> None:
    published = [bus.publish("build.step.completed", {"i": i}) for i in range(250)]
    consumer = bus.consumer()  # the router group, created only now
    seen: list[Event] = []
    drain(consumer, seen, len(published))
    assert seen == published
    assert pending_count(redis_client, "router") == 0


def test_killed_consumer_loses_nothing_and_nothing_is_processed_twice(
        bus: EventBus, redis_client: redis.Redis) -> None:
    published = [bus.publish("job.step", {"i": i}) for i in range(30)]
    doomed = bus.consumer("router", "doomed", claim_idle_ms=50)
    taken = doomed.read(count=12, block_ms=0)
    assert [d.event for d in taken] == published[:12]
    # ...and it dies here: no ack, never seen again.

    survivor = bus.consumer("router", "survivor", claim_idle_ms=50)
    seen: list[Event] = []
    drain(survivor, seen, len(published))
    assert Counter(e.id for e in seen) == Counter(e.id for e in published)
    assert pending_count(redis_client, "router") == 0

    # The dead consumer coming back finds nothing left to redo: its entries were reclaimed.
    assert doomed.read(count=100, block_ms=0) == []
    assert GroupConsumer(bus, "router", "doomed", max_deliveries=5,
                         claim_idle_ms=50).read(count=100, block_ms=0) == []


def test_concurrent_consumers_split_the_work_without_overlap(
        bus: EventBus, redis_client: redis.Redis) -> None:
    published = [bus.publish("fanout.item", {"i": i}) for i in range(400)]
    seen: list[Event] = []
    lock = threading.Lock()
    stop = threading.Event()

    def handle(event: Event) -> None:
        with lock:
            seen.append(event)
            if len(seen) >= len(published):
                stop.set()

    consumers = [bus.consumer("router", f"c{i}") for i in range(3)]
    threads = [threading.Thread(target=c.process, args=(handle,),
                                kwargs={"count": 10, "block_ms": 20, "stop": stop})
               for c in consumers]
    for thread in threads:
        thread.start()
    assert stop.wait(20)
    for thread in threads:
        thread.join(5)
    assert sorted(e.id for e in seen) == sorted(e.id for e in published)
    assert pending_count(redis_client, "router") == 0


@pytest.mark.timeout(60)
def test_a_slow_batch_is_never_handled_twice(bus: EventBus, redis_client: redis.Redis) -> None:
    """Handlers of 0.3 s, ten to a batch, a 1 s claim window and two consumers: each event is
    handled once (a batch stops starting handlers past half the window)."""
    published = [bus.publish("slow.job", {"i": i}) for i in range(10)]
    handled: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def handle(event: Event) -> None:
        with lock:
            handled[event.id] += 1
            if sum(handled.values()) >= len(published):
                stop.set()
        time.sleep(0.3)  # the handler's work, not synchronization

    consumers = [bus.consumer("router", f"slow{i}", claim_idle_ms=1000) for i in range(2)]
    threads = [threading.Thread(target=c.process, args=(handle,),
                                kwargs={"count": 10, "block_ms": 50, "stop": stop})
               for c in consumers]
    for thread in threads:
        thread.start()
    assert stop.wait(40)
    for thread in threads:
        thread.join(10)
    # Give a would-be duplicate its chance: the claim window passes once more.
    wait_for(lambda: pending_count(redis_client, "router") == 0, 10, message="all acked")
    assert handled == dict.fromkeys((e.id for e in published), 1)


def test_poison_entry_goes_to_dead_letters_after_max_deliveries(
        bus: EventBus, redis_client: redis.Redis) -> None:
    poison = bus.publish("poison.pill", {"boom": True})
    bus.publish("good.event")
    attempts: Counter[str] = Counter()

    def handle(event: Event) -> None:
        attempts[event.type] += 1
        if event.type == "poison.pill":
            raise RuntimeError("handler cannot cope")

    consumer = bus.consumer("router", "r1", max_deliveries=3, claim_idle_ms=0)
    wait_for(lambda: consumer.process(handle, block_ms=20, max_batches=1) >= 0
             and bus.dead_letters(), timeout=10, interval=0, message="a dead letter")
    assert attempts == {"poison.pill": 3, "good.event": 1}
    [letter] = bus.dead_letters()
    assert letter.event == poison
    assert letter.group == "router"
    assert letter.consumer == "r1"
    assert letter.deliveries == 4
    assert "3 deliveries" in letter.reason
    assert redis_client.xrange(EVENT_STREAM, letter.stream_id, letter.stream_id)
    assert pending_count(redis_client, "router") == 0
    # The loop keeps going after dead-lettering.
    later = bus.publish("good.event")
    seen: list[Event] = []
    drain(consumer, seen, 1)
    assert seen == [later]


def test_malformed_and_trimmed_entries_never_stall_the_loop(
        bus: EventBus, redis_client: redis.Redis) -> None:
    redis_client.xadd(EVENT_STREAM, {"garbage": "yes"})
    redis_client.xadd(EVENT_STREAM, {EVENT_FIELD: b"\xff\xfe not json"})
    lost = bus.publish("will.be.trimmed")
    kept = bus.publish("will.survive")
    holder = bus.consumer("router", "holder", claim_idle_ms=0)
    taken = holder.read(count=10, block_ms=0)  # dead-letters the two malformed entries
    assert [d.event for d in taken] == [lost, kept]
    redis_client.xdel(EVENT_STREAM, taken[0].stream_id)  # as MAXLEN trimming would

    other = bus.consumer("router", "other", claim_idle_ms=0)
    reclaimed = other.reclaim()
    assert [d.event for d in reclaimed] == [kept]
    assert reclaimed[0].deliveries == 2
    other.ack(*reclaimed)
    assert pending_count(redis_client, "router") == 0
    letters = bus.dead_letters()
    assert sorted(letter.reason.split(":")[0] for letter in letters) == [
        "malformed entry", "malformed entry",
        "trimmed from the stream (MAXLEN) before it was handled"]
    [trimmed] = [letter for letter in letters if letter.reason.startswith("trimmed")]
    assert trimmed.stream_id == taken[0].stream_id  # nobody loses an event without a trace


def test_restarted_consumer_drops_its_trimmed_pending_entries(
        bus: EventBus, redis_client: redis.Redis) -> None:
    events = [bus.publish("job.step", {"i": i}) for i in range(3)]
    first = bus.consumer("router", "stable-name")
    taken = first.read(count=3, block_ms=0)
    redis_client.xdel(EVENT_STREAM, taken[1].stream_id)
    restarted = bus.consumer("router", "stable-name")
    resumed = restarted.read(count=10, block_ms=0)
    assert [d.event for d in resumed] == [events[0], events[2]]
    assert [d.deliveries for d in resumed] == [2, 2]
    restarted.ack(*resumed)
    assert pending_count(redis_client, "router") == 0
    assert [letter.stream_id for letter in bus.dead_letters()] == [taken[1].stream_id]


_GOOD = '{"id":"p","type":"x.y","time":"t"}'
UNDECODABLE = {
    "infinite hops": {EVENT_FIELD: '{"id":"p","type":"x.y","time":"t","hops":1e400}'},
    "missing fields": {EVENT_FIELD: '{"type":"x.y"}'},
    "not JSON": {EVENT_FIELD: b"\xff not json"},
    "wrong types": {EVENT_FIELD: '{"id":"p","type":"x.y","time":"t","data":[[1,2]],"hops":"2"}'},
    "a newline in the type": {EVENT_FIELD: '{"id":"p","type":"deploy\\n.failed","time":"t"}'},
    "NaN": {EVENT_FIELD: _GOOD[:-1] + ',"data":{"x":NaN}}'},
    "no event field": {"garbage": "yes"},
}


@pytest.mark.parametrize("kind", sorted(UNDECODABLE))
def test_an_undecodable_entry_is_dead_lettered_and_its_neighbours_delivered(
        bus: EventBus, redis_client: redis.Redis, kind: str) -> None:
    before = bus.publish("good.before")
    bad_id = _text(redis_client.xadd(EVENT_STREAM, UNDECODABLE[kind]))  # type: ignore[arg-type]
    after = bus.publish("good.after")
    consumer = bus.consumer("router", "r1", claim_idle_ms=0)
    seen: list[Event] = []
    drain(consumer, seen, 2)
    assert seen == [before, after]
    assert pending_count(redis_client, "router") == 0  # the bad one is acked too
    [letter] = bus.dead_letters()
    assert letter.stream_id == bad_id
    assert letter.reason.startswith("malformed entry: ")
    assert letter.event is None
    skipped: list[str] = []
    assert list(bus.replay(on_skip=lambda sid, exc: skipped.append(sid))) == [before, after]
    assert skipped == [bad_id]


# --- live subscriptions ------------------------------------------------------------------------
def test_single_star_matches_exactly_one_segment(bus: EventBus) -> None:
    with bus.subscribe("phase.*.completed") as watcher:
        bus.publish("phase.1.tests.completed")
        bus.publish("phase.completed")
        bus.publish("phasex.1.completed")
        wanted = bus.publish("phase.1.completed")
        # Pub/sub keeps order: getting `wanted` first proves the earlier ones were filtered out.
        assert watcher.get(timeout=5) == wanted
        assert watcher.get(timeout=0.05) is None


def test_double_star_catches_every_failure(bus: EventBus) -> None:
    with bus.subscribe("**.failed") as watcher:
        bus.publish("deploy.prod.succeeded")
        deploy = bus.publish("deploy.prod.failed")
        bus.publish("failed.not.last")
        tool = bus.publish("tool.failed")
        bare = bus.publish("failed")
        assert [watcher.get(timeout=5) for _ in range(3)] == [deploy, tool, bare]


def test_subscription_sees_only_events_after_it_started(bus: EventBus) -> None:
    bus.publish("tool.invoked", {"when": "before"})
    with bus.subscribe() as watcher:
        after = bus.publish("tool.invoked", {"when": "after"})
        assert watcher.get(timeout=5) == after


def test_literal_pattern_and_iteration_until_close(bus: EventBus) -> None:
    watcher = bus.subscribe("deploy.prod.failed")
    received: list[Event] = []

    def consume() -> None:
        received.extend(watcher)

    reader = threading.Thread(target=consume)
    reader.start()
    bus.publish("deploy.prod.failed.again")
    wanted = [bus.publish("deploy.prod.failed", {"n": n}) for n in range(3)]
    wait_for(lambda: len(received) >= 3, timeout=5, message="three live events")
    watcher.close()
    reader.join(5)
    assert not reader.is_alive()
    assert received == wanted
    assert watcher.get(timeout=0) is None


def test_invalid_events_publish_nothing(bus: EventBus, redis_client: redis.Redis) -> None:
    small = EventBus(redis_client, max_data_bytes=100, max_hops=1)
    with small.subscribe() as watcher:
        with pytest.raises(InvalidEventType):
            small.publish("Bad Type!")
        with pytest.raises(PayloadTooLarge):
            small.publish("too.big", {"blob": "x" * 200})
        root = small.publish("chain.start")
        child = small.publish("chain.next", parent=root)
        with pytest.raises(HopLimitExceeded):
            small.publish("chain.loop", parent=child)
        assert [watcher.get(timeout=5), watcher.get(timeout=5)] == [root, child]
        assert watcher.get(timeout=0.05) is None
    assert [e.type for e in small.replay()] == ["chain.start", "chain.next"]


# --- history -----------------------------------------------------------------------------------
def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _server_now(client: redis.Redis) -> datetime:
    seconds, micros = client.time()
    return datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)


def test_replay_since_pattern_limit_and_reverse(redis_client: redis.Redis) -> None:
    early = [EventBus(redis_client).publish(t) for t in ("a.failed", "a.ok")]
    [(last_id, _)] = redis_client.xrevrange(EVENT_STREAM, count=1) or []
    last_ms = int(_text(last_id).split("-")[0])
    # Stream ids are server milliseconds: wait for the server clock to move past the boundary.
    wait_for(lambda: _server_now(redis_client).timestamp() * 1000 > last_ms + 1, timeout=2,
             interval=0.001, message="the next millisecond")
    boundary = datetime.fromtimestamp((last_ms + 1) / 1000, tz=UTC)
    ten_minutes_later = boundary + timedelta(minutes=10)
    bus = EventBus(redis_client, clock=lambda: ten_minutes_later)
    late = [bus.publish(t) for t in ("b.failed", "b.ok", "c.x.failed", "c.ok")]

    assert list(bus.replay()) == early + late
    assert list(bus.replay(since=boundary)) == late
    assert list(bus.replay(since=boundary.isoformat())) == late
    assert list(bus.replay(since="10m")) == late  # the bus clock is boundary + 10 minutes
    assert list(bus.replay(since="1d")) == early + late
    assert list(bus.replay(pattern="**.failed")) == [early[0], late[0], late[2]]
    assert list(bus.replay(since=boundary, pattern="**.failed", limit=1)) == [late[0]]
    assert list(bus.replay(pattern="**.failed", limit=2, reverse=True)) == [late[2], late[0]]
    assert list(bus.replay(since=boundary, reverse=True)) == late[::-1]


def test_maxlen_keeps_the_stream_bounded(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client, maxlen=100)
    published = [bus.publish("flood.item", {"i": i}) for i in range(1500)]
    length = bus.stream_length()
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): near, never far above.
    assert 100 <= length <= 200
    kept = list(bus.replay())
    assert kept == published[-length:]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(st.text(), json_values, max_size=6),
       event_type=st.from_regex(r"[a-zA-Z0-9_-]{1,6}(\.[a-zA-Z0-9_-]{1,6}){0,3}", fullmatch=True))
def test_event_json_round_trips_through_stream_group_and_pubsub(
        redis_client: redis.Redis, data: dict[str, Any], event_type: str) -> None:
    bus = EventBus(redis_client, stream="roundtrip:events")
    consumer = bus.consumer("rt", "rt-1")
    consumer.ensure_group()
    with bus.subscribe() as watcher:
        sent = bus.publish(event_type, data)
        assert watcher.get(timeout=5) == sent
    assert list(bus.replay(reverse=True, limit=1)) == [sent]
    [delivery] = consumer.read(count=10, block_ms=0)
    assert delivery.event == sent
    assert delivery.event.data == data
    consumer.ack(delivery)


# --- outages -----------------------------------------------------------------------------------
def test_redis_going_down_and_coming_back(own_redis: tuple[RedisServer, ServerInfo]) -> None:
    server, info = own_redis
    client = redis.Redis.from_url(info.url, socket_connect_timeout=1, socket_timeout=2)
    bus = EventBus(client)
    before = bus.publish("before.outage")
    server.kill()
    with pytest.raises(RedisUnavailable) as caught:
        bus.publish("during.outage")
    message = str(caught.value)
    assert f"127.0.0.1:{info.port}" in message
    assert info.password not in message
    with pytest.raises(RedisUnavailable):
        bus.consumer().read(block_ms=0)

    # Same port and password again: the pooled (now stale) connections must not matter.
    second = RedisServer(server.data_dir, port=info.port, password=info.password,
                         appendonly=False)
    try:
        assert second.start().port == info.port
        after = bus.publish("after.outage")
        assert [e.type for e in bus.replay()] == ["after.outage"]  # nothing was persisted
        assert after.id != before.id
    finally:
        client.close()
        second.stop()


def test_failed_publish_never_leaves_a_half_read_connection(
        bus: EventBus, redis_client: redis.Redis) -> None:
    redis_client.set(EVENT_STREAM, "not a stream")
    with bus.subscribe("x.kept") as watcher:
        with pytest.raises(RedisUnavailable, match="WRONGTYPE") as caught:
            bus.publish("x.lost")
        assert "failed to publish x.lost" in str(caught.value)
        redis_client.delete(EVENT_STREAM)
        # A reused connection with the unread PUBLISH reply would misread these replies.
        sent = [bus.publish("x.kept", {"n": n}) for n in range(3)]
        assert [watcher.get(timeout=5) for _ in range(3)] == sent
    assert list(bus.replay()) == sent


# --- following the stream live (pitstop watch) -------------------------------------------------
def test_a_tail_delivers_what_is_published_after_it_started_in_order(
        bus: EventBus, redis_client: redis.Redis) -> None:
    bus.publish("before.start")
    notes: list[str] = []
    tail = StreamTail(bus, "job.*", patience=5, notify=notes.append)
    tail.start()
    sent = [bus.publish("job.started"), bus.publish("job.x.skipped"), bus.publish("job.done")]
    bad_id = _text(redis_client.xadd(EVENT_STREAM, UNDECODABLE["infinite hops"]))  # type: ignore[arg-type]
    last = bus.publish("job.last")
    got: list[Event] = []

    def three() -> bool:
        got.extend(tail.poll(0.2))
        return len(got) >= 3

    wait_for(three, 10, interval=0, message="three events")
    assert got == [sent[0], sent[2], last]
    assert notes == [f"skipped stream entry {bad_id}: event is not valid JSON: number 1e400 is "
                     "out of range"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("persistent", [True, False])
def test_a_tail_rides_out_a_redis_restart_and_misses_nothing(tmp_path: Path,
                                                             persistent: bool) -> None:
    own = RestartableRedis(tmp_path / "redis", appendonly=persistent)
    client = redis.Redis.from_url(own.info.url, socket_connect_timeout=1)
    publisher = redis.Redis.from_url(own.info.url, socket_connect_timeout=1)
    try:
        notes: list[str] = []
        tail = StreamTail(EventBus(client), patience=30, notify=notes.append)
        tail.start()
        first = EventBus(publisher).publish("before.restart")
        got: list[Event] = []
        stop = threading.Event()

        def follow() -> None:
            while not stop.is_set():
                got.extend(tail.poll(0.2))

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        wait_for(lambda: got == [first], 10, message="the first event")
        own.server.kill()
        wait_for(lambda: any("Redis unreachable" in note for note in notes), 10,
                 message="the tail to notice the outage")
        own.restart()
        # Published before the tail is back: a pub/sub watcher would never see these.
        during = [EventBus(publisher).publish("after.restart", {"n": n}) for n in range(3)]
        wait_for(lambda: len(got) == 4, 20, message="the events published meanwhile")
        stop.set()
        reader.join(10)
        assert got == [first, *during]
        assert "Redis is back; reading the events published meanwhile" in notes
        lost_note = [note for note in notes if "no longer holds entry" in note]
        # Without AOF the restart lost the stream, and the entry last read with it: say so.
        assert bool(lost_note) is not persistent
    finally:
        client.close()
        publisher.close()
        own.server.stop()
