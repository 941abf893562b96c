"""redis-server processes the fault tests start, kill and restart themselves: a plain server with a
chosen ``appendfsync``, a primary with a replica, and sentinels (the same binary run with
``--sentinel``). Everything binds 127.0.0.1; every process is killed by its own pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from pitstop.connection.server import find_redis_server, free_port
from tests.support import wait_for

PASSWORD = "fault-test-password"  # a private loopback server of the test's own
SERVICE = "pitstop-primary"


@dataclass
class Node:
    """One redis-server (or sentinel) process with its config file and log under ``directory``."""

    name: str
    directory: Path
    port: int
    config: list[str]
    sentinel: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        auth = "" if self.sentinel else f":{PASSWORD}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5,
                                    **kwargs)  # type: ignore[arg-type]

    def start(self, timeout: float = 15) -> Node:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / ("sentinel.conf" if self.sentinel else "redis.conf")
        if not (self.sentinel and conf.exists()):  # a sentinel keeps what it learnt
            conf.write_text("\n".join([
                "bind 127.0.0.1", f"port {self.port}", f"dir {self.directory}",
                f"logfile {self.directory / 'redis.log'}", "daemonize no", *self.config]) + "\n")
        argv = [find_redis_server(), str(conf), *(["--sentinel"] if self.sentinel else [])]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_for(self.answers, timeout, interval=0.05, message=f"{self.name} to answer")
        return self

    def answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log_tail()}")
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.BusyLoadingError:
            return False
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL, by pid; waits for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = (self.directory / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.splitlines()[-lines:])


def data_node(directory: Path, name: str, *, appendfsync: str | None = None,
              replica_of: int | None = None, port: int | None = None) -> Node:
    """A password-protected server; ``appendfsync``: AOF on with that policy (else no AOF)."""
    config = [f"requirepass {PASSWORD}", f"masterauth {PASSWORD}", 'save ""']
    if appendfsync is None:
        config.append("appendonly no")
    else:
        config += ["appendonly yes", f"appendfsync {appendfsync}"]
    if replica_of is not None:
        config.append(f"replicaof 127.0.0.1 {replica_of}")
    return Node(name, directory / name, port or free_port(), config)


def sentinel_node(directory: Path, name: str, primary_port: int, *, quorum: int = 2,
                  down_after_ms: int = 1000) -> Node:
    config = [
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}",
        f"sentinel auth-pass {SERVICE} {PASSWORD}",
        f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
        f"sentinel failover-timeout {SERVICE} 10000",
        f"sentinel parallel-syncs {SERVICE} 1",
    ]
    return Node(name, directory / name, free_port(), config, sentinel=True)


@dataclass
class SentinelSet:
    """A primary, one replica and three sentinels watching them."""

    primary: Node
    replica: Node
    sentinels: list[Node]

    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"

    def master_port(self) -> int | None:
        """The primary's port as a majority of the sentinels report it (None: no majority)."""
        ports: list[int] = []
        for node in self.sentinels:
            with contextlib.suppress(redis.RedisError), node.client() as client:
                address = client.sentinel_get_master_addr_by_name(SERVICE)
                if address:
                    ports.append(int(address[1]))
        for port in set(ports):
            if ports.count(port) >= 2:
                return port
        return None

    def ready(self) -> bool:
        """Every sentinel knows the replica and both other sentinels; the replica is in sync."""
        for node in self.sentinels:
            try:
                with node.client(decode_responses=True) as client:
                    info = client.sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            if int(info.get("num-slaves", 0)) < 1 or int(info.get("num-other-sentinels", 0)) < 2:
                return False
        with self.replica.client(decode_responses=True) as client:
            replication = client.info("replication")
        return replication.get("master_link_status") == "up"

    def nodes(self) -> list[Node]:
        return [self.primary, self.replica, *self.sentinels]


@contextlib.contextmanager
def sentinel_set(directory: Path, *, down_after_ms: int = 1000) -> Iterator[SentinelSet]:
    primary = data_node(directory, "primary")
    replica = data_node(directory, "replica", replica_of=primary.port)
    started: list[Node] = []
    try:
        started.append(primary.start())
        started.append(replica.start())
        sentinels = [sentinel_node(directory, f"sentinel{i}", primary.port,
                                   down_after_ms=down_after_ms) for i in range(3)]
        for node in sentinels:
            started.append(node.start())
        cluster = SentinelSet(primary, replica, sentinels)
        wait_for(cluster.ready, 30, interval=0.2, message="the sentinels to find each other")
        yield cluster
    finally:
        for node in reversed(started):
            node.stop()


def monotonic_ms() -> float:
    return time.monotonic() * 1000
