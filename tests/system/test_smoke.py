"""``pitstop smoke`` against a real fleet (a worker with its router, and Beat, on a private
Redis): it passes, and fails naming the reason when the router's group has a stuck backlog, when
Beat is stopped and when the worker is stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.connection.server import RedisServer
from pitstop.kernel.constants import EVENT_STREAM, ROUTER_GROUP
from pitstop.kernel.serverinfo import ServerInfo
from tests.support import FIXTURE_SCRIPTS, ROOT, Proc, run_cli, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]


def smoke(env: dict[str, str]) -> tuple[int, dict[str, dict[str, object]]]:
    done = run_cli(["smoke", "--timeout", "1", "--stuck-after", "1", "--json"], env)
    assert done.stdout, done.stderr
    return done.returncode, {check["name"]: check for check in json.loads(done.stdout)}


def test_smoke_passes_on_a_running_fleet_and_names_what_broke(
        tmp_path: Path, own_redis: tuple[RedisServer, ServerInfo]) -> None:
    _, info = own_redis
    (tmp_path / "config").mkdir()
    (tmp_path / "scripts").mkdir()
    # The router must not reclaim the stuck entry below while the test looks at it.
    (tmp_path / "config" / "pitstop.yaml").write_text("bus:\n  claim_idle_ms: 600000\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update({"PITSTOP_HOME": str(tmp_path), "PITSTOP_REDIS_URL": info.url,
                "PITSTOP_ALLOWED_ROOTS": str(FIXTURE_SCRIPTS), "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1", "PITSTOP_BEAT_LOCK_TTL": "2"})
    client = redis.Redis.from_url(info.url)

    # Nothing runs: the broker is fine, everything else is named.
    code, checks = smoke(env)
    assert code == 1
    assert checks["broker"]["ok"] and "authenticated" in str(checks["broker"]["detail"])
    assert "no worker answered" in str(checks["workers"]["detail"])
    assert "no Beat heartbeat" in str(checks["beat"]["detail"])

    # A consumer of the router's group took an event and died holding it: a stuck backlog.
    EventBus(client).publish("ci.build.done", {"n": 1})
    client.xgroup_create(EVENT_STREAM, ROUTER_GROUP, id="0", mkstream=True)
    client.xreadgroup(ROUTER_GROUP, "ghost", {EVENT_STREAM: ">"}, count=10)

    worker = Proc(["worker", "-Q", "default,linux", "-c", "1", "-n", "smoke@%h"], env,
                  tmp_path / "worker.log")
    beat = Proc(["beat"], env, tmp_path / "beat.log")
    try:
        worker.wait_for_output("ready.", 60)
        beat.wait_for_output("acquired the singleton lock", 30)
        code, checks = smoke(env)
        assert code == 1
        failed = sorted(name for name, check in checks.items() if not check["ok"])
        assert failed == ["router"], checks
        detail = str(checks["router"]["detail"])
        assert "stuck backlog" in detail and "not acknowledged" in detail
        assert "consumer ghost" in detail

        # The entry is handled: everything passes.
        for entry in client.xpending_range(EVENT_STREAM, ROUTER_GROUP, "-", "+", 10):
            client.xack(EVENT_STREAM, ROUTER_GROUP, entry["message_id"])
        done = wait_for(lambda: _passing(env), 30, interval=0.5, message="smoke to pass")
        assert "ok   canary" in done and "via smoke@" in done
        assert "ok   beat" in done and "ok   router" in done
        assert "skip alerts" in done

        # Beat stops: only Beat fails, with its reason.
        beat.stop()
        code, checks = wait_for(lambda: _failing(env, "beat"), 30, interval=0.5,
                                message="smoke to see Beat down")
        assert code == 1
        beat_detail = str(checks["beat"]["detail"])
        assert beat_detail.startswith(("Beat is down: its last heartbeat",
                                       "no Beat heartbeat: no Beat has led",
                                       "Beat's singleton lock is not held")), beat_detail
        assert checks["workers"]["ok"] and checks["canary"]["ok"] and checks["router"]["ok"]

        # The worker stops: no worker for either queue, no canary sent.
        worker.stop()
        code, checks = smoke(env)
        assert code == 1
        assert str(checks["workers"]["detail"]) == (
            "no worker answered within 1s (required queues: default, linux)")
        assert checks["canary"]["skipped"] and not checks["canary"]["ok"]
    finally:
        beat.stop()
        worker.stop()

    # Redis with a wrong password: exit 3, said plainly.
    wrong = {**env, "PITSTOP_REDIS_URL": info.url.replace(info.password, "wrong-password")}
    done = run_cli(["smoke"], wrong)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "wrong-password" not in done.stdout + done.stderr


def _passing(env: dict[str, str]) -> str | None:
    done = run_cli(["smoke", "--timeout", "1", "--stuck-after", "1"], env)
    return done.stdout if done.returncode == 0 else None


def _failing(env: dict[str, str], name: str) -> tuple[int, dict[str, dict[str, object]]] | None:
    code, checks = smoke(env)
    return (code, checks) if not checks[name]["ok"] else None
