"""Beat's singleton lock and heartbeat against a real Redis, without a Beat process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pitstop.kernel.constants import BEAT_HEARTBEAT_KEY, BEAT_LOCK_KEY
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
