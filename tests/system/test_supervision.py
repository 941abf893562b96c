"""``pitstop up`` keeps its processes running, and stops them without leaving runs ``running``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pitstop.connection.server import RedisServer
from pitstop.kernel.constants import RUN_OUTPUT_PREFIX
from pitstop.runs.store import RunStore
from tests.support import FIXTURE_SCRIPTS, ROOT, Proc, gate, pid_alive, run_cli, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

FOREVER = """\
import signal
import subprocess
print("started", flush=True)
while True:
    signal.pause()
"""


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A project directory with no Redis configured (the embedded one is used)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "forever.py").write_text(FOREVER)
    (tmp_path / "scripts" / "hello.py").write_text("print('hello from the fleet')\n")
    yield tmp_path
    RedisServer(tmp_path / ".state" / "redis").stop()  # if a test failed half-way


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env["PITSTOP_ALLOWED_ROOTS"] = os.pathsep.join([str(home / "scripts"), str(FIXTURE_SCRIPTS)])
    return env


def start_up(home: Path, env: dict[str, str], *args: str) -> Proc:
    up = Proc(["up", *args], env, home / "up.log", cwd=home)
    up.wait_for_output("Ctrl-C stops everything", 90)
    up.wait_for_output("ready.", 90)
    return up


def stop_up(up: Proc) -> int:
    if up.popen.poll() is None:
        up.popen.send_signal(signal.SIGINT)
    code = up.popen.wait(90)
    up.stop()
    return code


def child_pid(up: Proc, name: str) -> int:
    match = re.search(rf"\b{name} pid (\d+)", up.output())
    assert match, up.output()[-2000:]
    return int(match.group(1))


def run_id_of(runner: Proc) -> str:
    runner.wait_for_output("queued on", 30)
    match = re.search(r"run (\S+) queued on", runner.output())
    assert match, runner.output()
    return match.group(1)


def redis_client(home: Path) -> redis.Redis:
    info = RedisServer(home / ".state" / "redis").running_info()
    assert info is not None
    return redis.Redis.from_url(info.url)


def test_up_restarts_a_worker_that_dies_and_work_goes_on(home: Path, env: dict[str, str]) -> None:
    up = start_up(home, env, "-c", "1")
    try:
        worker = child_pid(up, "worker")
        os.killpg(worker, signal.SIGKILL)  # the worker and its pool
        up.wait_for_output(f"worker (pid {worker}) was killed by SIGKILL", 30)
        assert "restarting it in 1s" in up.output()
        done = run_cli(["run", "scripts/hello.py", "--wait", "--timeout", "60"], env, cwd=home,
                       timeout=120)
        assert done.returncode == 0, done.stderr
        assert "hello from the fleet" in done.stdout
        assert up.popen.poll() is None  # still up
        assert "stopping" not in up.output()
    finally:
        code = stop_up(up)
    assert code == 0, up.output()[-3000:]


def test_a_redis_restart_while_a_script_runs_does_not_kill_the_worker(
        home: Path, env: dict[str, str]) -> None:
    # With a free pool process the worker has a BRPOP in flight when Redis goes: kombu's
    # transport then raised AttributeError on closing the connection, and Celery stopped.
    up = start_up(home, env, "-c", "2")
    sock = Path(tempfile.mkdtemp(prefix="gate")) / "g.sock"  # unix socket paths are short
    try:
        with gate(sock) as open_gate:
            runner = Proc(["run", str(FIXTURE_SCRIPTS / "wait_for_gate.py"), "--wait", "--",
                           str(sock)], env, home / "runner.log", cwd=home)
            runner.wait_for_output("first", 60)
            first = json.loads((home / ".state" / "redis" / "server.json").read_text())
            os.kill(first["pid"], signal.SIGKILL)
            up.wait_for_output("restarting it on port", 30)
            up.wait_for_output("Connection to broker lost", 30)
            wait_for(lambda: _reconnected(up), 60, interval=0.2,
                     message="the worker reconnecting")
            assert "Unrecoverable error" not in up.output(), up.output()[-4000:]
            open_gate()
            assert runner.popen.wait(90) == 0, runner.output()[-2000:]
            assert "second" in runner.output()
        done = run_cli(["run", "scripts/hello.py", "--wait", "--timeout", "60"], env, cwd=home,
                       timeout=120)
        assert done.returncode == 0, done.stderr
        output = up.output()
        assert "Unrecoverable error" not in output, output[-4000:]
        assert "worker (pid" not in output  # no restart was needed
    finally:
        code = stop_up(up)
    assert code == 0, up.output()[-3000:]


def _reconnected(up: Proc) -> bool:
    output = up.output()
    lost = output.rfind("Connection to broker lost")
    return "Connected to redis://" in output[lost:]


def test_ctrl_c_lets_scripts_finish_and_a_second_ctrl_c_stops_at_once_marking_them_lost(
        home: Path, env: dict[str, str]) -> None:
    up = start_up(home, env, "-c", "1")
    runner = Proc(["run", "scripts/forever.py", "--wait"], env, home / "runner.log", cwd=home)
    try:
        run_id = run_id_of(runner)
        runner.wait_for_output("started", 60)
        worker = child_pid(up, "worker")
        up.popen.send_signal(signal.SIGINT)
        up.wait_for_output("waiting up to 15s for running scripts to finish; press Ctrl-C "
                           "again to stop at once", 30)
        assert pid_alive(worker) and runner.popen.poll() is None
        up.popen.send_signal(signal.SIGINT)
        code = up.popen.wait(30)
        output = up.output()
        assert code == 0, output[-3000:]
        assert "worker stopping at once: killing it" in output
        assert f"run {run_id} was still running: marked lost" in output
        assert "did not stop in" not in output
        # Its follower learnt it at once: the worker died (exit 75), no waiting for a reaper.
        assert runner.popen.wait(30) == 75, runner.output()[-2000:]
    finally:
        up.stop()
        runner.stop()
    assert_lost(home, run_id)


def test_a_worker_that_outlasts_the_stop_timeout_is_killed_and_its_runs_marked_lost(
        home: Path, env: dict[str, str]) -> None:
    up = start_up(home, env, "-c", "1", "--stop-timeout", "1")
    runner = Proc(["run", "scripts/forever.py", "--wait"], env, home / "runner.log", cwd=home)
    try:
        run_id = run_id_of(runner)
        runner.wait_for_output("started", 60)
        up.popen.send_signal(signal.SIGINT)
        code = up.popen.wait(60)
        output = up.output()
        assert code == 0, output[-3000:]
        assert "waiting up to 1s for running scripts" in output
        assert "worker did not stop in 1s: killing it" in output
        assert f"run {run_id} was still running: marked lost" in output
        assert runner.popen.wait(30) == 75, runner.output()[-2000:]
    finally:
        up.stop()
        runner.stop()
    assert_lost(home, run_id)


def assert_lost(home: Path, run_id: str) -> None:
    server = RedisServer(home / ".state" / "redis")
    server.start()  # `pitstop up` stopped it; its data is on disk
    try:
        client = redis_client(home)
        run = RunStore(client).get_run(run_id)
        assert run.status == "lost"
        assert run.error == "pitstop up stopped while it ran"
        end = client.xrevrange(f"{RUN_OUTPUT_PREFIX}{run_id}", count=1)
        assert end and end[0][1][b"end"] == b"lost"  # its output stream is closed
    finally:
        server.stop()


def test_up_prints_a_second_worker_command_that_works_as_is_from_another_shell(
        home: Path, env: dict[str, str], tmp_path: Path) -> None:
    up = start_up(home, env, "-c", "1")
    second: subprocess.Popen[bytes] | None = None
    try:
        match = re.search(r"another worker, from any shell of this user: (.+)", up.output())
        assert match, up.output()[-2000:]
        command = match.group(1).strip()
        assert "password" not in command.lower() and "redis://" not in command
        # Another shell: somewhere else, no pitstop variables, not even the venv activated.
        shell_env = {k: v for k, v in os.environ.items()
                     if not k.startswith(("PITSTOP_", "VIRTUAL_ENV"))}
        elsewhere = Path(tempfile.mkdtemp(dir=tmp_path))
        log = (tmp_path / "second-worker.log").open("wb")
        second = subprocess.Popen(["bash", "-c", command], env=shell_env, cwd=elsewhere,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: "ready." in (tmp_path / "second-worker.log").read_text()
                 or second.poll() is not None, 90, message="the second worker to be ready")
        assert second.poll() is None, (tmp_path / "second-worker.log").read_text()[-3000:]
        doctor = run_cli(["doctor", "--json"], env, cwd=home)
        workers = next(c for c in json.loads(doctor.stdout) if c["name"] == "workers")
        assert workers["detail"].startswith("2 answering"), workers
        # One worker each (-c 1): a run that blocks one of them sends the next to the other, so
        # the command's worker runs one of the two, its script path relative to the project.
        sent = run_cli(["run", "scripts/forever.py", "--json"], env, cwd=home)
        assert sent.returncode == 0, sent.stderr
        blocking = json.loads(sent.stdout.splitlines()[-1])["run_id"]
        store = RunStore(redis_client(home))
        wait_for(lambda: store.get_run(blocking).status != "queued", 60,
                 message="a worker to take the blocking run")
        assert store.get_run(blocking).status == "running", store.get_run(blocking)
        done = run_cli(["run", "scripts/hello.py", "--wait"], env, cwd=home, timeout=120)
        assert done.returncode == 0, done.stderr
        assert run_cli(["cancel", blocking, "--wait"], env, cwd=home).returncode == 0
    finally:
        if second is not None:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGTERM)  # bash and the worker it runs
            second.wait(60)
            log.close()
        code = stop_up(up)
    assert code == 0, up.output()[-3000:]
    # Everything pitstop wrote under .state (logs, key, Redis's AOF, RDB, log) is its user's only.
    for path in [home / ".state", *(home / ".state").rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {oct(mode)}"
