"""Redis restarted again and again (SIGKILLed, then started again on its data, port and password as
``pitstop up``'s keeper does): after each restart a canary task sent through the broker completes
within 10 s. Then ``pitstop doctor`` is shown a worker that is connected (it answers ping) but
consumes nothing, and must say so.

Short mode: 3 restarts; ``PITSTOP_FAULTS_LONG=1``: 10.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.connection.server import RedisServer
from pitstop.kernel.constants import CANARY_TASK
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.settings import load_settings
from tests.faults.harness import Project
from tests.faults.report import long_mode, record, scale
from tests.support import redis_running, run_cli, wait_for
from workers.app import create_app

pytestmark = [pytest.mark.faults, pytest.mark.integration,
              pytest.mark.timeout(600 if long_mode() else 180)]

CANARY_WITHIN = 10.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[RedisServer, ServerInfo]]:
    with redis_running(tmp_path / "redis", appendonly=True) as running:
        yield running


def _workers_check(env: dict[str, str]) -> dict[str, object]:
    done = run_cli(["doctor", "--json", "--timeout", "2"], env, timeout=60)
    [check] = [c for c in json.loads(done.stdout) if c["name"] == "workers"]
    return check


def test_a_canary_completes_after_each_redis_restart_and_doctor_sees_an_idle_consumer(
        server: tuple[RedisServer, ServerInfo], tmp_path: Path) -> None:
    redis_server, info = server
    project = Project.create(tmp_path / "home", info.url)
    app = create_app(load_settings(environ=project.env), info.url)
    name = "canary@" + socket.gethostname()
    timings: list[float] = []
    try:
        project.start_worker("canary", concurrency=1)
        for _ in range(scale(3, 10)):
            redis_server.kill()
            restarted = redis_server.start()
            assert restarted.port == info.port  # the same URL: clients reconnect to it
            began = time.monotonic()
            nonce = secrets.token_hex(8)
            result = app.send_task(CANARY_TASK, args=[nonce], queue="default")
            answer = result.get(timeout=CANARY_WITHIN + 20)
            timings.append(round(time.monotonic() - began, 3))
            assert answer["nonce"] == nonce

        healthy = _workers_check(project.env)
        assert healthy["ok"], healthy

        # Connected but not consuming: its consumer of the only queue is cancelled.
        replies = app.control.cancel_consumer("default", destination=[name], reply=True)
        assert replies, "the worker did not answer cancel_consumer"
        stuck = app.send_task(CANARY_TASK, args=["stuck"], queue="default")
        flagged = _workers_check(project.env)
        assert not flagged["ok"], flagged
        detail = str(flagged["detail"])
        assert f"{name} answers but consumes no queue" in detail
        assert "queue default: 1 waiting and no answering worker consumes it" in detail

        app.control.add_consumer("default", destination=[name], reply=True)
        assert stuck.get(timeout=30)["nonce"] == "stuck"
        wait_for(lambda: _workers_check(project.env)["ok"], 30, interval=0.5,
                 message="doctor to be content again")
    finally:
        project.stop()
        app.close()

    record("redis_restarts", {"restarts": len(timings), "canary_s": timings,
                              "canary_max_s": max(timings), "doctor_flags_idle_consumer": True})
    assert max(timings) < CANARY_WITHIN, timings
