"""Runs across a Redis outage: a private redis-server per test, paused (SIGSTOP) or restarted.

The session's servers are never paused: every other test (and the session worker) uses them.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO

import pytest
import redis

from pitstop.kernel.constants import RUN_OUTPUT_PREFIX
from pitstop.runs.output import OutputWriter, RunOutput, reap_lost_runs
from pitstop.runs.store import RunStore, redis_clock
from tests.support import (
    RestartableRedis,
    gate,
    pitstop_cmd,
    restartable_redis,
    run_cli,
    running,
    wait_for,
    write_script,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A private redis-server (AOF on, so it can be killed and restarted with its data)."""
    with restartable_redis(tmp_path / "redis") as server:
        yield server


class Cli:
    """A pitstop command in the background, stdout and stderr each in a file we can poll."""

    def __init__(self, args: list[str], env: dict[str, str], where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self._out_path, self._err_path = where / "stdout", where / "stderr"
        self._files: list[IO[bytes]] = [self._out_path.open("wb"), self._err_path.open("wb")]
        self.popen = subprocess.Popen(pitstop_cmd(*args), env=env, stdout=self._files[0],
                                      stderr=self._files[1])

    def out(self) -> str:
        return self._out_path.read_text(errors="replace")

    def err(self) -> str:
        return self._err_path.read_text(errors="replace")

    def wait_for_text(self, text: str, *, err: bool = False, timeout: float = 30) -> None:
        read = self.err if err else self.out
        wait_for(lambda: text in read() or self.popen.poll() is not None, timeout,
                 message=f"{text!r} from pitstop")
        assert text in read(), f"exited {self.popen.returncode}:\n{self.out()}\n{self.err()}"

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            for handle in self._files:
                handle.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.wait()


def _ends(client: redis.Redis, run_id: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(f"{RUN_OUTPUT_PREFIX}{run_id}")
            if b"end" in fields]


@pytest.mark.parametrize("outage", ["pause", "restart"])
def test_a_follower_rides_out_a_short_outage(outage: str, own_redis: RestartableRedis,
                                             pitstop_env: dict[str, str],
                                             tmp_path: Path) -> None:
    """``pitstop show --follow`` keeps following through a 5 s+ pause or a kill and restart,
    prints every line once, and exits with the run's code. (This test plays the worker.)"""
    env = {**pitstop_env, "PITSTOP_REDIS_URL": own_redis.url, "PITSTOP_LOST_AFTER_SECONDS": "60"}

    def connect() -> tuple[redis.Redis, RunStore, RunOutput]:
        client = redis.Redis.from_url(own_redis.url)
        return client, RunStore(client, clock=redis_clock(client)), RunOutput(client)

    _, store, output = connect()
    run = store.create_run(kind="script", queue="linux")
    store.claim_run(run.run_id, host="here", worker_pid=os.getpid())
    writer = OutputWriter(output, run.run_id, patience=30)  # as the worker's
    writer.write("stdout", "before the outage")
    follower = Cli(["show", run.run_id, "--follow"], env, tmp_path / "follower")
    try:
        follower.wait_for_text("before the outage\n")
        if outage == "pause":
            with own_redis.paused():
                # a read blocks for the client's 5 s socket timeout, then the follower says so
                follower.wait_for_text("Redis unreachable, retrying", err=True)
        else:
            own_redis.kill()
            follower.wait_for_text("Redis unreachable, retrying", err=True)
            own_redis.restart()
            _, store, _ = connect()
        assert follower.popen.poll() is None, follower.err()
        store.heartbeat(run.run_id)
        writer.write("stdout", "after the outage")
        store.update_run(run.run_id, status="failed", exit_code=5)
        writer.close(status="failed", exit_code=5)
        assert follower.wait(30) == 5, follower.err()
    finally:
        follower.kill()
    assert follower.out() == "before the outage\nafter the outage\n"
    assert follower.err().count("Redis unreachable, retrying") == 1
    assert "Redis is back" in follower.err()


def _gated_script(home: Path, name: str, code: int) -> str:
    return write_script(home, name, f"""
        import socket, sys
        gate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        gate.settimeout(60)
        gate.connect(sys.argv[1])
        print("first", flush=True)
        gate.recv(1)
        print("second", flush=True)
        sys.exit({code})
    """)


@pytest.mark.timeout(180)
def test_a_result_is_recorded_when_redis_stalls_as_the_script_ends(
        own_redis: RestartableRedis, pitstop_env: dict[str, str], pitstop_home: Path,
        tmp_path: Path) -> None:
    """The script ends while Redis is paused: the worker retries the result until Redis is
    back, the output ends with the script's own status, and ``run --wait`` rides it out."""
    queue = f"stall-{uuid.uuid4().hex[:8]}"
    env = {**pitstop_env, "PITSTOP_REDIS_URL": own_redis.url, "PITSTOP_LOST_AFTER_SECONDS": "60"}
    path = _gated_script(pitstop_home, "stall_at_end.py", 6)
    socket_path = tmp_path / "gate.sock"
    worker_args = ["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"]
    with running(worker_args, env, tmp_path / "worker.log", ready="ready.",
                 timeout=60) as worker, gate(socket_path) as open_gate:
        waiter = Cli(["run", path, "--queue", queue, "--wait", "--json", "--", str(socket_path)],
                     env, tmp_path / "waiter")
        try:
            waiter.wait_for_text("first\n")
            with own_redis.paused():
                open_gate()  # the script ends now, with Redis unreachable
                # its first attempt to record the result has timed out
                wait_for(lambda: any(text in worker.output() for text in (
                    "Redis unreachable while recording its result",
                    "could not record the result")), 45, message="the worker to miss Redis")
            assert waiter.wait(60) == 6, waiter.err()
        finally:
            waiter.kill()
    final = json.loads(waiter.out().splitlines()[-1])
    assert waiter.out().splitlines()[:2] == ["first", "second"]
    assert "Redis unreachable, retrying" in waiter.err()
    client = redis.Redis.from_url(own_redis.url)
    run = RunStore(client).get_run(final["run_id"])
    assert (run.status, run.exit_code) == ("failed", 6)
    assert [e["exit_code"] for e in run.executions] == [6]
    assert _ends(client, run.run_id) == [{b"end": b"failed", b"exit_code": b"6", b"n": b"3"}]


@pytest.mark.timeout(180)
def test_a_result_the_worker_could_not_record_still_ends_the_output_with_its_status(
        own_redis: RestartableRedis, pitstop_env: dict[str, str], pitstop_home: Path,
        tmp_path: Path) -> None:
    """Redis stays away longer than the worker's patience (lost_after_seconds): the result is
    not recorded and the reaper marks the run lost, but the output's one end entry carries
    the script's status and exit code, and a follower exits with that code."""
    queue = f"gone-{uuid.uuid4().hex[:8]}"
    env = {**pitstop_env, "PITSTOP_REDIS_URL": own_redis.url, "PITSTOP_LOST_AFTER_SECONDS": "3"}
    path = _gated_script(pitstop_home, "gone_at_end.py", 4)
    socket_path = tmp_path / "gate.sock"
    client = redis.Redis.from_url(own_redis.url)
    store, output = RunStore(client, clock=redis_clock(client)), RunOutput(client)
    worker_args = ["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"]
    with running(worker_args, env, tmp_path / "worker.log", ready="ready.",
                 timeout=60) as worker, gate(socket_path) as open_gate:
        started = run_cli(["run", path, "--queue", queue, "--json", "--", str(socket_path)], env)
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["run_id"]
        wait_for(lambda: client.xlen(f"{RUN_OUTPUT_PREFIX}{run_id}"), 30,
                 message="the script's first line")
        with own_redis.paused():
            open_gate()
            worker.wait_for_output(f"could not record the result of run {run_id}", 60)
        # Redis is back while the worker still tries to end the output.
        wait_for(lambda: _ends(client, run_id), 30, message="the end of the output")
        worker.wait_for_output("ScriptFailed", 30)
    assert _ends(client, run_id) == [{b"end": b"failed", b"exit_code": b"4", b"n": b"3"}]
    assert store.get_run(run_id).status == "running"  # the record never heard of the result

    follower = run_cli(["show", run_id, "--follow"], env)
    assert follower.returncode == 4, follower.stderr
    assert follower.stdout.startswith("first\n")
    assert ("second" in follower.stdout
            or "[pitstop] 1 line of output was dropped" in follower.stderr)
    assert "its worker reported it failed (exit code 4)" in follower.stderr

    # As Beat's reaper would: the silent run is lost, and its output keeps its one end entry.
    assert [r.run_id for r in reap_lost_runs(store, output, stale_after=store_lost_after(env),
                                             run_ids=[run_id])] == [run_id]
    assert store.get_run(run_id).status == "lost"
    assert _ends(client, run_id) == [{b"end": b"failed", b"exit_code": b"4", b"n": b"3"}]
    again = run_cli(["show", run_id, "--follow"], env)
    assert again.returncode == 4, again.stderr
    assert "is recorded lost, but its worker reported it failed" in again.stderr


def store_lost_after(env: dict[str, str]) -> timedelta:
    return timedelta(seconds=float(env["PITSTOP_LOST_AFTER_SECONDS"]))
