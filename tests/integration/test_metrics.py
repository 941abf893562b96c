"""``GET /metrics`` of ``pitstop serve`` on a real Redis: behind the API token, and every family
computed from what the fleet keeps in Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from pitstop.bus.eventbus import EventBus
from pitstop.deploy.store import DeployStore
from pitstop.kernel.constants import (
    ALERT_DELIVERY_PREFIX,
    EVENT_STREAM,
    ROUTER_GROUP,
)
from pitstop.runs.store import RunStore
from pitstop.server.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

TOKEN = "metrics-token-1"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_need_the_token_and_report_the_fleet_from_redis(redis_client: redis.Redis) -> None:
    bus = EventBus(redis_client)
    for n in range(5):
        bus.publish("ci.build.done", {"n": n})
    redis_client.xgroup_create(EVENT_STREAM, ROUTER_GROUP, id="0")
    redis_client.xreadgroup(ROUTER_GROUP, "r1", {EVENT_STREAM: ">"}, count=3)  # 3 routed, 2 left
    clock = datetime.now(UTC)
    runs = RunStore(redis_client, clock=lambda: clock)
    done = runs.create_run(kind="workstream", workstream_id="WS-X")
    runs.update_run(done.run_id, status="running", started_at=clock - timedelta(seconds=42))
    runs.update_run(done.run_id, status="succeeded", finished_at=clock)
    runs.create_run(kind="script")
    redis_client.hset(f"{ALERT_DELIVERY_PREFIX}n1:slack", mapping={"channel": "slack",
                                                                    "state": "delivered"})
    redis_client.hset(f"{ALERT_DELIVERY_PREFIX}n2:slack", mapping={"channel": "slack",
                                                                    "state": "failed"})
    redis_client.sadd("_kombu.binding.linux", "linux\x06\x16\x06\x16linux")
    redis_client.rpush("linux", "m1", "m2")
    redis_client.rpush("linux\x06\x163", "m3")
    store = DeployStore(redis_client)
    store.save({"id": "d1", "env": "staging", "status": "succeeded",
                "finished_at": "2026-01-02T03:04:05Z"}, score=1.0)
    store.save({"id": "d2", "env": "staging", "status": "rolled_back"}, score=2.0)
    redis_client.hset("pitstop:deploy:env:staging", mapping={"current": "1.1", "previous": "1.0",
                                                              "status": "healthy"})

    app = create_app(bus=bus, client=redis_client, webhook_secret=None, api_token=TOKEN)
    with TestClient(app) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        response = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("pitstop_events_stream_length", ())] == 5
    assert got[("pitstop_consumer_group_lag", (("group", "router"),))] == 2
    assert got[("pitstop_consumer_group_pending", (("group", "router"),))] == 3
    assert got[("pitstop_consumer_group_consumers", (("group", "router"),))] == 1
    assert got[("pitstop_queue_depth", (("queue", "linux"),))] == 3
    assert got[("pitstop_runs", (("kind", "workstream"), ("status", "succeeded")))] == 1
    assert got[("pitstop_runs", (("kind", "script"), ("status", "queued")))] == 1
    workstream = (("kind", "workstream"), ("status", "succeeded"))
    assert got[("pitstop_run_duration_seconds_count", workstream)] == 1
    assert got[("pitstop_run_duration_seconds_sum", workstream)] == pytest.approx(42, abs=1)
    assert got[("pitstop_run_duration_seconds_bucket", (*workstream[:1], ("le", "15.0"),
                                                        workstream[1]))] == 0
    assert got[("pitstop_alert_deliveries", (("channel", "slack"), ("state", "failed")))] == 1
    assert got[("pitstop_deployments", (("env", "staging"), ("status", "rolled_back")))] == 1
    assert got[("pitstop_deploy_environment_info", (("current", "1.1"), ("env", "staging"),
                                                    ("previous", "1.0"),
                                                    ("status", "healthy")))] == 1
    assert got[("pitstop_deploy_last_finished_timestamp_seconds", (("env", "staging"),))] == \
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()

    off = create_app(bus=bus, client=redis_client, webhook_secret=None, api_token=None)
    with TestClient(off) as http:
        assert http.get("/metrics").status_code == 503
