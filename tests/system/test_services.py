"""Long-running services: Beat as a singleton with fail-over, Flower behind basic auth, serve."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis

from pitstop.connection.server import free_port
from pitstop.kernel.constants import BEAT_LOCK_KEY
from tests.support import Proc, run_cli, running, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]


def test_second_beat_stands_by_and_takes_over_when_the_leader_dies(
        pitstop_env: dict[str, str], tmp_path: Path) -> None:
    env = {**pitstop_env, "PITSTOP_BEAT_LOCK_TTL": "2", "PITSTOP_LOST_AFTER_SECONDS": "2"}
    client = redis.Redis.from_url(env["PITSTOP_REDIS_URL"])
    client.delete(BEAT_LOCK_KEY)
    leader = Proc(["beat"], env, tmp_path / "leader.log")
    standby: Proc | None = None
    try:
        leader.wait_for_output("acquired the singleton lock", 30)
        standby = Proc(["beat"], env, tmp_path / "standby.log")
        standby.wait_for_output("standing by", 30)
        holder = client.get(BEAT_LOCK_KEY)
        assert holder is not None and f"/{leader.pid}/".encode() in holder
        # Only the leader fires schedules.
        leader.wait_for_output("Sending due task reap-lost-runs", 30)
        assert "Sending due task" not in standby.output()

        leader.kill()
        killed = time.monotonic()
        standby.wait_for_output("acquired the singleton lock", 30)
        # The documented figure is the TTL (2 s here); a second of slack for two loaded cores.
        assert time.monotonic() - killed < 2 + 1
        standby.wait_for_output("Sending due task reap-lost-runs", 30)
        assert f"/{standby.pid}/".encode() in (client.get(BEAT_LOCK_KEY) or b"")
    finally:
        leader.stop()
        if standby is not None:
            standby.stop()


def test_flower_refuses_to_start_without_auth(pitstop_env: dict[str, str]) -> None:
    done = run_cli(["flower"], pitstop_env)
    assert done.returncode == 2
    assert "basic auth" in done.stderr


def test_flower_refuses_a_basic_auth_that_flower_would_split_into_two_logins(
        pitstop_env: dict[str, str]) -> None:
    # Flower splits FLOWER_BASIC_AUTH on ",": this would also let in a user "2".
    env = {**pitstop_env, "PITSTOP_FLOWER_BASIC_AUTH": "admin:hunter,2"}
    done = run_cli(["flower", "--port", str(free_port())], env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "PITSTOP_FLOWER_BASIC_AUTH" in done.stderr
    assert "hunter" not in done.stderr + done.stdout


def test_up_with_flower_refuses_before_starting_anything_without_auth(
        pitstop_env: dict[str, str]) -> None:
    done = run_cli(["up", "--flower", "-c", "1"], pitstop_env, timeout=90)
    assert done.returncode == 2, done.stderr
    assert "PITSTOP_FLOWER_BASIC_AUTH" in done.stderr
    assert "worker pid" not in done.stderr  # nothing was started


def test_flower_requires_basic_auth(pitstop_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**pitstop_env, "PITSTOP_FLOWER_BASIC_AUTH": "admin:s3cret-pass"}
    with running(["flower", "--port", str(port)], env, tmp_path / "flower.log"):
        url = f"http://127.0.0.1:{port}/"

        def answering() -> int | None:
            try:
                return httpx.get(url, timeout=2).status_code
            except httpx.TransportError:
                return None

        assert wait_for(answering, 60, interval=0.2, message="Flower to listen") == 401
        assert httpx.get(url, auth=("admin", "wrong"), timeout=5).status_code == 401
        assert httpx.get(url, auth=("admin", "s3cret-pass"), timeout=5).status_code == 200
        # Prometheus metrics (worker and task names) need the same login.
        metrics = f"{url}metrics"
        assert httpx.get(metrics, timeout=5).status_code == 401
        assert httpx.get(metrics, auth=("admin", "wrong"), timeout=5).status_code == 401
        scraped = httpx.get(metrics, auth=("admin", "s3cret-pass"), timeout=5)
        assert scraped.status_code == 200
        assert "flower_" in scraped.text
        assert httpx.get(f"{url}healthcheck", timeout=5).text == "OK"  # stays open


def test_serve_accepts_bearer_events_and_refuses_others(
        pitstop_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**pitstop_env, "PITSTOP_API_TOKEN": "tok-system-test"}
    with running(["serve", "--port", str(port)], env, tmp_path / "serve.log"):
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 30, interval=0.1, message="pitstop serve to answer")
        refused = httpx.post(f"{base}/events", json={"type": "ci.build.done"}, timeout=5)
        assert refused.status_code == 401
        accepted = httpx.post(f"{base}/events", timeout=5,
                              headers={"Authorization": "Bearer tok-system-test"},
                              json={"type": "ci.build.done", "data": {"sha": "abc"}})
        assert accepted.status_code == 201
        event_id = accepted.json()["id"]
        # Webhooks are off without a secret: a clear 503, not a silent accept.
        assert httpx.post(f"{base}/webhooks/github", content=b"{}", timeout=5).status_code == 503
    listed = run_cli(["events", "ci.build.*", "--json"], pitstop_env)
    assert event_id in listed.stdout
