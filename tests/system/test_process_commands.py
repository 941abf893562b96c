"""``pitstop worker``, ``beat``, ``serve``, ``flower`` and ``redis`` as a service manager and a
user see them: exit codes, fast failures, help that matches behaviour."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pitstop.connection.server import RedisServer
from tests.support import ROOT, Proc, pid_alive, run_cli

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "config").mkdir()
    yield tmp_path
    RedisServer(tmp_path / ".state" / "redis").stop()


@pytest.fixture
def fresh_env() -> dict[str, str]:
    """No PITSTOP_* at all: the embedded Redis of the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _with_password(url: str, password: str) -> str:
    return re.sub(r"//:[^@]*@", f"//:{password}@", url)


def test_worker_exits_non_zero_after_an_unrecoverable_error(
        pitstop_env: dict[str, str], tmp_path: Path) -> None:
    # A message kombu cannot even parse stops Celery's consumer ("Unrecoverable error"); Celery
    # then stops the worker with exit code 1, which `pitstop worker` used to turn into 0.
    queue = f"junk-{uuid.uuid4().hex[:8]}"
    worker = Proc(["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"], pitstop_env,
                  tmp_path / "worker.log")
    try:
        worker.wait_for_output("ready.", 60)
        redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"]).lpush(queue, b"{not json")
        code = worker.popen.wait(60)
    finally:
        worker.stop()
    assert "Unrecoverable error" in worker.output()
    assert code == 1, worker.output()[-3000:]
    assert "pitstop worker: the Celery worker stopped with exit code 1" in worker.output()


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_wrong_redis_password_fails_fast_with_exit_3(
        pitstop_env: dict[str, str], command: str) -> None:
    env = {**pitstop_env,
           "PITSTOP_REDIS_URL": _with_password(pitstop_env["PITSTOP_REDIS_URL"], "wrong")}
    done = run_cli([command], env, timeout=60)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "refused the password" in done.stderr
    assert "Trying again" not in done.stderr + done.stdout
    assert "wrong" not in done.stderr  # the password is not printed


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_bad_secret_key_is_refused_before_starting_with_exit_2(
        pitstop_env: dict[str, str], command: str) -> None:
    env = {**pitstop_env, "PITSTOP_SECRET_KEY": "not-a-fernet-key"}
    done = run_cli([command], env, timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "secret key is not a valid key" in done.stderr
    assert "ready." not in done.stderr + done.stdout


def test_a_worker_always_consumes_the_housekeeping_queue_and_is_named_as_its_help_says(
        pitstop_env: dict[str, str], tmp_path: Path) -> None:
    queue = f"only-{uuid.uuid4().hex[:8]}"
    worker = Proc(["worker", "-Q", queue, "-c", "1"], pitstop_env, tmp_path / "worker.log")
    try:
        worker.wait_for_output("ready.", 60)
        output = worker.output()
    finally:
        worker.stop()
    assert f".> {queue} " in output
    assert ".> default " in output  # where Beat sends the reaper of lost runs
    assert f"pitstop-{queue}-default-{worker.pid}@{socket.gethostname()} ready." in output
    helped = run_cli(["worker", "--help"], pitstop_env)
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    assert "pitstop-<queues>-<pid>@<host>" in text
    assert "housekeeping queue 'default'" in text and "always consumed too" in text


def test_bad_or_busy_ports_are_one_clear_line_with_exit_2(
        pitstop_env: dict[str, str]) -> None:
    for args in (["serve", "--port", "99999"], ["serve", "--port", "0"],
                 ["flower", "--port", "70000"]):
        done = run_cli(args, {**pitstop_env, "PITSTOP_FLOWER_BASIC_AUTH": "admin:s3cret-pass"})
        assert done.returncode == 2, (args, done.stderr)
        assert "not in the range 1<=x<=65535" in done.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        served = run_cli(["serve", "--port", str(port)], pitstop_env, timeout=60)
        flowered = run_cli(["flower", "--port", str(port)],
                           {**pitstop_env, "PITSTOP_FLOWER_BASIC_AUTH": "admin:s3cret-pass"},
                           timeout=60)
    for done in (served, flowered):
        assert done.returncode == 2, done.stderr[-3000:]
        assert f"127.0.0.1:{port} is already in use" in done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_pitstop_and_pitstop_redis_without_a_subcommand_print_help_and_succeed(
        fresh_env: dict[str, str], home: Path) -> None:
    for args in ([], ["redis"]):
        done = run_cli(args, fresh_env, cwd=home)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout.startswith("Usage: pitstop")
    assert "status" in run_cli(["redis"], fresh_env, cwd=home).stdout


def test_a_stopped_embedded_redis_is_reported_and_never_doubled(
        fresh_env: dict[str, str], home: Path) -> None:
    started = run_cli(["redis", "start"], fresh_env, cwd=home)
    assert started.returncode == 0, started.stderr
    info_path = home / ".state" / "redis" / "server.json"
    recorded = info_path.read_text()
    pid = json.loads(recorded)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        for args in (["emit", "still.here"], ["runs"], ["redis", "status"]):
            done = run_cli(args, fresh_env, cwd=home, timeout=60)
            assert done.returncode == 3, (args, done.stderr)
            assert f"pid {pid}" in done.stderr and "does not answer" in done.stderr, done.stderr
        assert info_path.read_text() == recorded  # no second server took its place
        assert _redis_servers_in(home) == {pid}
    finally:
        os.kill(pid, signal.SIGCONT)
    os.kill(pid, signal.SIGSTOP)  # `pitstop redis stop` stops even a stopped server
    stopped = run_cli(["redis", "stop"], fresh_env, cwd=home, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert "embedded redis stopped" in stopped.stdout
    assert not pid_alive(pid)


def _redis_servers_in(home: Path) -> set[int]:
    """Pids of redis-server processes whose working data is under ``home``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"redis-server" in cmdline and cwd.startswith(str(home)):
            found.add(int(entry.name))
    return found


def test_serve_in_a_fresh_project_starts_the_embedded_redis_it_publishes_to(
        home: Path, fresh_env: dict[str, str]) -> None:
    import httpx

    from pitstop.connection.server import free_port
    from tests.support import wait_for

    port = free_port()
    server = Proc(["serve", "--port", str(port)], fresh_env, home / "serve.log", cwd=home)
    try:
        def health() -> object:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
            except httpx.TransportError:
                return None

        assert wait_for(health, 60, interval=0.2, message="serve to answer") == {
            "status": "ok", "redis": True}
    finally:
        server.stop()
    assert RedisServer(home / ".state" / "redis").running_info() is not None
