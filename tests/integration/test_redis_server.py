"""The embedded redis-server: one per data directory, however many processes ask at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from pitstop.connection.server import RedisServer
from pitstop.kernel.serverinfo import ServerInfo
from tests.support import pid_alive, wait_for

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
        assert info.admin_url is not None
        admin = redis.Redis.from_url(info.admin_url)
        assert admin.config_get("bind")["bind"] == "127.0.0.1"
        assert admin.config_get("appendonly")["appendonly"] == "yes"
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


ADMIN_COMMANDS = [
    ("CONFIG", "SET", "dir", "/tmp"),
    ("CONFIG", "GET", "dir"),
    ("CONFIG", "REWRITE"),
    ("MODULE", "LOAD", "/tmp/evil.so"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("MONITOR",),
    ("SAVE",),
    ("BGSAVE",),
    ("BGREWRITEAOF",),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("SLAVEOF", "127.0.0.1", "1"),
    ("ACL", "SETUSER", "default", "+@all"),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("MIGRATE", "127.0.0.1", "1", "k", "0", "1000"),
    ("KEYS", "*"),
]


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_client_with_the_password_cannot_run_admin_commands(
        redis_server: ServerInfo, command: tuple[str, ...]) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("canary", "still here")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)
    # nor through a Lua script, which runs with the caller's rights
    with pytest.raises(redis.ResponseError):
        client.eval("return redis.call('flushall')", 0)
    assert client.get("canary") == b"still here"
    assert client.ping()


def test_clients_keep_what_they_use(redis_server: ServerInfo) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.info("server")["redis_version"]  # pitstop doctor
    client.client_setname("pitstop-test")
    assert client.client_getname() == "pitstop-test"
    assert client.eval("return redis.call('set', KEYS[1], ARGV[1])", 1, "lua-k", "v") == b"OK"
    stream = client.xadd("acl-stream", {"f": "v"})
    assert client.xrange("acl-stream") == [(stream, {b"f": b"v"})]
    assert client.publish("acl-channel", "x") == 0
    client.delete("lua-k", "acl-stream")


def test_rdb_snapshots_are_configured_and_files_are_private(tmp_path: Path) -> None:
    state = tmp_path / "project" / ".state"
    data = state / "redis"
    server = RedisServer(data)
    info = server.start()
    try:
        assert info.admin_url is not None
        admin = redis.Redis.from_url(info.admin_url)
        # "900 1" as two arguments: as one, Redis 6.2 ignored it and never snapshotted
        assert admin.config_get("save")["save"] == "900 1"
        redis.Redis.from_url(info.url).set("k", "v")
        admin.bgsave()
        wait_for((data / "dump.rdb").exists, 10, message="an RDB snapshot")
        admin.bgrewriteaof()
        wait_for(lambda: admin.info("persistence")["aof_rewrite_in_progress"] == 0, 10,
                 message="the AOF rewrite")
    finally:
        server.stop()
    for directory in (state, data):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    assert {"appendonly.aof", "dump.rdb", "redis.log"} <= {path.name for path in data.iterdir()}
    for path in data.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is {oct(path.stat().st_mode)}"


def test_files_an_older_server_left_readable_become_private(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    (data / "appendonly.aof").write_text("")
    (data / "redis.log").write_text("old log\n")
    for path in data.iterdir():
        path.chmod(0o644)
    server = RedisServer(data)
    server.start()
    try:
        for path in data.iterdir():
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is {oct(path.stat().st_mode)}"
    finally:
        server.stop()


def test_a_restarted_server_keeps_both_passwords(tmp_path: Path) -> None:
    first = RedisServer(tmp_path / "redis")
    info = first.start()
    first.kill()
    second = RedisServer(tmp_path / "redis")
    again = second.start()
    try:
        assert (again.password, again.admin_password) == (info.password, info.admin_password)
        assert again.admin_url is not None
        assert redis.Redis.from_url(again.admin_url).config_get("save")
    finally:
        second.stop()
