"""One embedded server per data directory, even when it does not answer: a stopped (or hung)
server is still the server; starting a second one over its files would split the data."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from pitstop.connection.server import RedisServer
from pitstop.fleet.supervisor import EmbeddedRedisKeeper
from pitstop.kernel.errors import RedisUnavailable
from tests.support import pid_alive, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process ``pid`` stopped (SIGSTOP) for the duration."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "redis"
    yield path
    for _ in range(3):  # whatever a test left running there
        if not RedisServer(path).stop():
            break


def test_a_stopped_server_is_not_replaced_and_is_reported(data_dir: Path) -> None:
    info = RedisServer(data_dir).start(daemonize=True)
    recorded = (data_dir / "server.json").read_text()
    with stopped(info.pid):
        again = RedisServer(data_dir).start(daemonize=True, timeout=5)
        assert again.pid == info.pid  # the same server, not a second one
        assert (data_dir / "server.json").read_text() == recorded
        running = RedisServer(data_dir).running_info()
        assert running is not None and running.pid == info.pid
        with pytest.raises(RedisUnavailable, match=f"pid {info.pid}.* does not answer"):
            RedisServer(data_dir).ensure_answering(running, timeout=0.3)
    RedisServer(data_dir).ensure_answering(info)  # answers again once resumed


def test_stop_stops_a_stopped_server(data_dir: Path) -> None:
    info = RedisServer(data_dir).start(daemonize=True)
    os.kill(info.pid, signal.SIGSTOP)
    try:
        assert RedisServer(data_dir).stop(timeout=5)
        wait_for(lambda: not pid_alive(info.pid), 10, message="the stopped server to exit")
    finally:
        if pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
    assert not (data_dir / "server.json").exists()


def test_the_keeper_adopts_a_server_another_process_restarted_instead_of_starting_a_second(
        data_dir: Path) -> None:
    said: list[str] = []
    keeper = EmbeddedRedisKeeper(data_dir, say=said.append)
    url = keeper.start()
    first = keeper.info
    assert first is not None
    redis.Redis.from_url(url).set("kept", "1")
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(first.pid), 10, message="the killed server to die")
    # Before the keeper notices, another pitstop command (`pitstop emit`, say) starts the
    # server again: on the dead one's port and password, so clients holding its URL reconnect.
    other = RedisServer(data_dir).start(daemonize=True)
    assert (other.port, other.password) == (first.port, first.password)
    assert keeper.keep_alive() is None  # same URL: nobody needs telling
    current = keeper.info
    assert current is not None and current.pid == other.pid
    recorded = json.loads((data_dir / "server.json").read_text())
    assert recorded["pid"] == other.pid  # the keeper neither deleted nor replaced its record
    assert redis.Redis.from_url(url).get("kept") == b"1"
    keeper.stop()
    wait_for(lambda: not pid_alive(other.pid), 10, message="the server to stop")

