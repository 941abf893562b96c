"""RedisOutage: retrying through a short Redis outage, within a bound (fake time, no Redis)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from pitstop.connection.outage import RedisOutage, is_transient
from pitstop.kernel.errors import RedisUnavailable


class FakeTime:
    """A monotonic clock that moves only when slept on (or told to)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int, error: Exception, clock: FakeTime, *,
            takes: float = 0.0) -> Callable[[], str]:
    """An operation failing ``times`` times with ``error`` (each attempt taking ``takes``)."""
    attempts: list[int] = []

    def operation() -> str:
        attempts.append(1)
        clock.now += takes
        if len(attempts) <= times:
            raise error
        return f"ok after {len(attempts)}"

    return operation


def outage(patience: float, clock: FakeTime, *, what: str = "Redis is unreachable",
           give_up_by: float | None = None,
           on_down: Callable[[BaseException], None] | None = None,
           on_up: Callable[[], None] | None = None) -> RedisOutage:
    return RedisOutage(patience, what=what, give_up_by=give_up_by, on_down=on_down, on_up=on_up,
                       monotonic=clock.monotonic, sleep=clock.sleep)


def test_transient_failures_are_retried_with_growing_pauses_and_told_once() -> None:
    clock = FakeTime()
    told: list[str] = []
    watcher = outage(60, clock, on_down=lambda exc: told.append(f"down: {exc}"),
                     on_up=lambda: told.append("up"))
    result = watcher.call(failing(6, redis.ConnectionError("refused"), clock))
    assert result == "ok after 7"
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]  # doubling, capped at 2 s
    assert told == ["down: refused", "up"]
    assert not watcher.down


def test_gives_up_after_patience_counted_from_the_first_failed_attempt() -> None:
    clock = FakeTime()
    watcher = outage(10, clock, what="following run r1")
    start = clock.now
    # each attempt blocks 5 s, as a read does on a stopped server
    with pytest.raises(RedisUnavailable, match=r"following run r1: unreachable for 1\ds "
                                               r"\(Timeout reading from socket\)"):
        watcher.call(failing(100, redis.TimeoutError("Timeout reading from socket"), clock,
                             takes=5))
    assert 10 <= clock.now - start <= 16
    assert watcher.down


def test_the_last_attempt_is_made_at_the_bound() -> None:
    clock = FakeTime()
    watcher = outage(1.0, clock)
    # 0.1 + 0.2 + 0.4 = 0.7, then a pause cut to 0.3 lands on the bound: one more attempt there
    assert watcher.call(failing(4, redis.ConnectionError("x"), clock)) == "ok after 5"
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.3])


def test_no_patience_fails_at_once_with_the_error() -> None:
    clock = FakeTime()
    with pytest.raises(RedisUnavailable, match=r"^lost Redis: Connection closed by server\.$"):
        outage(0, clock, what="lost Redis").call(
            failing(1, redis.ConnectionError("Connection closed by server."), clock))
    assert clock.sleeps == []


def test_give_up_by_cuts_patience_short() -> None:
    clock = FakeTime()
    watcher = outage(60, clock, give_up_by=clock.now + 3)
    with pytest.raises(RedisUnavailable):
        watcher.call(failing(100, redis.ConnectionError("x"), clock))
    assert clock.now == pytest.approx(1003)


def test_after_giving_up_later_calls_try_once_until_redis_is_back() -> None:
    clock = FakeTime()
    watcher = outage(1, clock)
    with pytest.raises(RedisUnavailable):
        watcher.call(failing(100, redis.ConnectionError("x"), clock))
    pauses = len(clock.sleeps)
    with pytest.raises(RedisUnavailable):
        watcher.call(failing(100, redis.ConnectionError("x"), clock))
    assert len(clock.sleeps) == pauses  # no second wait
    assert watcher.call(lambda: "fine") == "fine"
    assert not watcher.down


@pytest.mark.parametrize("error", [redis.ResponseError("WRONGTYPE"), ValueError("bug"),
                                   redis.AuthenticationError("invalid password")])
def test_other_errors_are_not_retried(error: Exception) -> None:
    clock = FakeTime()
    with pytest.raises(type(error)):
        outage(60, clock).call(failing(1, error, clock))
    assert clock.sleeps == []


def test_what_counts_as_transient() -> None:
    assert is_transient(redis.ConnectionError("reset"))
    assert is_transient(redis.TimeoutError("timeout"))
    assert is_transient(redis.BusyLoadingError("loading"))
    wrapped = RedisUnavailable("runs: unreachable")
    wrapped.__cause__ = redis.TimeoutError("timeout")
    assert is_transient(wrapped)
    refused = RedisUnavailable("runs: auth")
    refused.__cause__ = redis.AuthenticationError("invalid password")
    assert not is_transient(refused)
    assert not is_transient(redis.ResponseError("ERR"))
    assert not is_transient(KeyError("x"))


def test_patience_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="patience"):
        RedisOutage(-1)
