"""doctor's consuming check, as pure logic: who answers but takes nothing."""

from __future__ import annotations

import fakeredis

from pitstop.fleet.consumption import QueueSample, WorkerView, not_consuming, sample_queues

IDLE = WorkerView("w1@h", ("default",), busy=0, slots=2)
BUSY = WorkerView("w2@h", ("default",), busy=2, slots=2)
DEAF = WorkerView("w3@h", (), busy=0, slots=2)


def test_a_moving_or_empty_queue_is_fine() -> None:
    before = {"default": QueueSample(3, b"m1"), "linux": QueueSample(0, None)}
    after = {"default": QueueSample(3, b"m2"), "linux": QueueSample(0, None)}
    assert not_consuming([IDLE], before, after, 2.0) == []


def test_a_stuck_queue_with_an_idle_consumer_is_named() -> None:
    before = after = {"default": QueueSample(4, b"m1")}
    [problem] = not_consuming([IDLE, BUSY], before, after, 2.0)
    assert "queue default: 4 waiting, none taken in 2.0s" in problem
    assert "w1@h (2/2 free)" in problem and "w2@h" not in problem


def test_busy_consumers_are_not_blamed() -> None:
    before = after = {"default": QueueSample(4, b"m1")}
    assert not_consuming([BUSY], before, after, 2.0) == []


def test_a_worker_consuming_nothing_and_an_orphan_queue_are_named() -> None:
    before = after = {"default": QueueSample(1, b"m1")}
    assert not_consuming([DEAF], before, after, 2.0) == [
        "w3@h answers but consumes no queue",
        "queue default: 1 waiting and no answering worker consumes it"]


def test_samples_count_every_priority_list_and_read_the_next_message() -> None:
    client = fakeredis.FakeRedis()
    client.lpush("default", b"old", b"new")
    client.lpush("default\x06\x163", b"p3")
    samples = sample_queues(client, ["default", "empty"])
    assert samples["default"] == QueueSample(3, b"old")
    assert samples["empty"] == QueueSample(0, None)
