"""Shared fixtures: a private real redis-server per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, settings

from pitstop.connection.server import RedisServer
from pitstop.kernel.serverinfo import ServerInfo
from tests.support import FIXTURE_SCRIPTS, ROOT, redis_running, running, worker_args
from tests.trigger_project import TICK_TRIGGERS, TICK_WORKSTREAMS, own_project

# Shared CI machines stall at random: judge properties, not the speed of one example.
settings.register_profile("pitstop", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pitstop")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A real redis-server on a free loopback port, private to this test session."""
    with redis_running(tmp_path_factory.mktemp("redis")) as (_, info):
        yield info


@pytest.fixture
def redis_client(redis_server: ServerInfo) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    # Clients may not FLUSHDB (the embedded server's ACL): the admin user may.
    with redis.Redis.from_url(redis_server.admin_url or redis_server.url) as admin:
        admin.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, ServerInfo]]:
    """A redis-server of the test's own, for it to pause, kill or restart."""
    with redis_running(tmp_path / "own-redis") as running:
        yield running


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[ServerInfo]:
    """A redis-server of the test's own that nothing else uses (its workers must not take other
    tests' tasks, or it counts every key)."""
    with redis_running(tmp_path / "redis") as (_, info):
        yield info


@pytest.fixture
def tick_project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], redis.Redis]]:
    """A trigger project on a redis-server of its own whose one rule fires every second
    (``tests.trigger_project.TICK_TRIGGERS``): its home, environment and a client."""
    with own_project(tmp_path / "home", tmp_path / "redis", triggers=TICK_TRIGGERS,
                     workstreams=TICK_WORKSTREAMS) as project:
        yield project


@pytest.fixture(scope="session")
def celery_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A second private redis-server for Celery tests: never flushed while workers run."""
    with redis_running(tmp_path_factory.mktemp("celery-redis")) as (_, info):
        yield info


@pytest.fixture(scope="session")
def pitstop_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project directory for pitstop processes: config/, .state/ and allowed scripts/."""
    home = tmp_path_factory.mktemp("home")
    (home / "config").mkdir()
    (home / "scripts").mkdir()
    return home


@pytest.fixture(scope="session")
def pitstop_env(celery_redis: ServerInfo, pitstop_home: Path) -> dict[str, str]:
    """Environment for pitstop subprocesses talking to ``celery_redis``."""
    from pitstop.kernel.sealing import generate_key

    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update({
        "PITSTOP_REDIS_URL": celery_redis.url,
        "PITSTOP_STATE_DIR": str(pitstop_home / ".state"),
        "PITSTOP_CONFIG_DIR": str(pitstop_home / "config"),
        "PITSTOP_ALLOWED_ROOTS": os.pathsep.join([str(pitstop_home / "scripts"),
                                                  str(FIXTURE_SCRIPTS)]),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "PITSTOP_SECRET_KEY": generate_key(),
    })
    return env


@pytest.fixture(scope="session")
def session_worker(pitstop_env: dict[str, str], pitstop_home: Path) -> Iterator[object]:
    """One real Celery worker (prefork, 2 processes) shared by integration tests."""
    with running(worker_args("session", "default,linux", 2), pitstop_env,
                 pitstop_home / "session-worker.log", ready="ready.", timeout=60) as proc:
        yield proc
