"""The embedded redis-server: one per data directory, however many processes ask at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from pitstop.connection.server import RedisServer
from tests.support import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

STARTER = """
import sys
from pathlib import Path
from pitstop.connection.server import RedisServer
print(RedisServer(Path(sys.argv[1])).start(daemonize=True).pid)
"""


def test_concurrent_starts_share_one_server(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, str(data)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    pids = {int(proc.communicate(timeout=30)[0]) for proc in procs}
    server = RedisServer(data)
    try:
        assert len(pids) == 1
        info = server.running_info()
        assert info is not None and info.pid in pids
    finally:
        server.stop()
    assert not any(pid_alive(pid) for pid in pids)


def test_password_required_and_loopback_only(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    info = server.start()
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=info.port).ping()
        client = redis.Redis.from_url(info.url)
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        # The password is not on the command line for other users to read in ps.
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes()
        assert info.password.encode() not in cmdline
        assert (tmp_path / "redis" / "server.json").stat().st_mode & 0o077 == 0
    finally:
        server.stop()


def test_reuses_a_running_server_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    first = RedisServer(tmp_path / "redis")
    info = first.start()
    redis.Redis.from_url(info.url).set("k", "v")
    assert RedisServer(tmp_path / "redis").start().pid == info.pid
    assert first.stop()
    second = RedisServer(tmp_path / "redis")
    info2 = second.start()
    try:
        assert redis.Redis.from_url(info2.url).get("k") == b"v"
    finally:
        second.stop()
    assert second.stop() is False  # nothing left to stop
