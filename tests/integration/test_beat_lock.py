"""Beat's singleton lock and heartbeat against a real Redis, without a Beat process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.cli.doctor import beat_status
from pitstop.fleet.beatlock import lock_lifetime
from pitstop.kernel.constants import BEAT_HEARTBEAT_KEY, BEAT_LOCK_KEY
from pitstop.kernel.errors import ValidationError
from pitstop.kernel.settings import load_settings
from workers.app import create_app
from workers.beat import LockedScheduler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def scheduler(pitstop_env: dict[str, str], pitstop_home: Path) -> Iterator[LockedScheduler]:
    settings = load_settings(pitstop_home / "config", environ=pitstop_env)
    app = create_app(settings, pitstop_env["PITSTOP_REDIS_URL"])
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    client.delete(BEAT_LOCK_KEY, BEAT_HEARTBEAT_KEY)
    sched = LockedScheduler(app=app, lazy=True)
    try:
        yield sched
    finally:
        client.delete(BEAT_LOCK_KEY, BEAT_HEARTBEAT_KEY)
        app.close()


def test_closing_never_deletes_a_lock_that_has_passed_to_another_beat(
        scheduler: LockedScheduler, pitstop_env: dict[str, str]) -> None:
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    scheduler.tick()
    assert client.get(BEAT_LOCK_KEY) == scheduler._token.encode()
    # Our lock expired (a long pause) and a standby took it; then we shut down.
    client.set(BEAT_LOCK_KEY, "standby/1/abc")
    scheduler.close()
    assert client.get(BEAT_LOCK_KEY) == b"standby/1/abc"


def test_closing_releases_our_own_lock_at_once(
        scheduler: LockedScheduler, pitstop_env: dict[str, str]) -> None:
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    scheduler.tick()
    scheduler.close()
    assert client.get(BEAT_LOCK_KEY) is None  # a standby need not wait for the TTL


def test_an_unreachable_redis_is_reported_as_such_not_as_another_beat(
        pitstop_env: dict[str, str], pitstop_home: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from pitstop.connection.server import free_port

    settings = load_settings(pitstop_home / "config", environ=pitstop_env)
    app = create_app(settings, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        sched = LockedScheduler(app=app, lazy=True)
        with caplog.at_level("INFO"):
            assert sched.tick() == settings.celery.beat_lock_ttl / 3
            sched.tick()
        messages = [r.getMessage() for r in caplog.records]
        assert sum("cannot reach Redis" in m for m in messages) == 1  # once per outage
        assert not any("standing by" in m for m in messages)
    finally:
        app.close()


@pytest.fixture
def short_ttl_app(pitstop_env: dict[str, str], pitstop_home: Path) -> Iterator[Any]:
    env = {**pitstop_env, "PITSTOP_BEAT_LOCK_TTL": "2"}
    settings = load_settings(pitstop_home / "config", environ=env)
    app = create_app(settings, env["PITSTOP_REDIS_URL"])
    client = redis.Redis.from_url(env["PITSTOP_REDIS_URL"])
    client.delete(BEAT_LOCK_KEY, BEAT_HEARTBEAT_KEY)
    try:
        yield app
    finally:
        client.delete(BEAT_LOCK_KEY, BEAT_HEARTBEAT_KEY)
        app.close()


def test_a_standby_takes_over_within_the_lock_ttl_of_the_leaders_death(
        short_ttl_app: Any, pitstop_env: dict[str, str]) -> None:
    ttl = 2.0  # celery.beat_lock_ttl: the documented take-over figure
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    leader = LockedScheduler(app=short_ttl_app, lazy=True)
    standby = LockedScheduler(app=short_ttl_app, lazy=True)
    leader.tick()
    delay = standby.tick()  # stands by, then sleeps what tick() returned, as Beat's loop does
    looked = time.monotonic()
    assert not standby._is_leader
    # The leader's last renewal comes a moment after the standby looked (the phase between
    # their ticks, which made polling every TTL/3 take up to TTL + TTL/3), and right after
    # renewing, the worst moment, it dies.
    time.sleep(0.2)
    leader.tick()
    died = time.monotonic()
    while not standby._is_leader:
        time.sleep(max(0.0, looked + delay - time.monotonic()))  # Beat's own loop
        delay = standby.tick()
        looked = time.monotonic()
        assert looked - died < ttl + 1, "the standby is still waiting"
    took = time.monotonic() - died
    assert client.get(BEAT_LOCK_KEY) == standby._token.encode()
    # Polling every TTL/3 took up to TTL + TTL/3; sleeping until the lock runs out takes the
    # lock's lifetime (TTL minus a slack) and a few milliseconds.
    assert took <= ttl, f"took over {took:.2f}s after the leader died (TTL {ttl:g}s)"
    assert took >= lock_lifetime(ttl) - 0.1  # it did wait for the lock to run out


def test_doctor_reports_beat_down_once_a_standby_would_have_taken_over(
        short_ttl_app: Any, pitstop_env: dict[str, str]) -> None:
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    leader = LockedScheduler(app=short_ttl_app, lazy=True)
    leader.tick()
    assert beat_status(client, default_ttl=30).startswith("alive")
    # The same heartbeat, as if its leader died a little more than TTL (2 s) ago: doctor
    # judges it by the leader's TTL (stamped with it), not by its own config's 30 s.
    stamp, holder, ttl = client.get(BEAT_HEARTBEAT_KEY).decode().split(" ")
    assert ttl == "2"
    client.set(BEAT_HEARTBEAT_KEY, f"{float(stamp) - 2.5} {holder} {ttl}")
    with pytest.raises(ValidationError, match="over its lock TTL of 2s"):
        beat_status(client, default_ttl=30)
    client.set(BEAT_HEARTBEAT_KEY, f"{float(stamp) - 1.5} {holder} {ttl}")
    assert beat_status(client, default_ttl=30).startswith("alive")
