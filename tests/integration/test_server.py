"""The HTTP front door against a real Redis: in-process (TestClient) and through real uvicorn."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import Event
from pitstop.connection.server import free_port
from pitstop.kernel.constants import LOG_WEBHOOKS, WEBHOOK_BODY_PREFIX, WEBHOOK_DELIVERY_PREFIX
from pitstop.kernel.errors import RedisUnavailable
from pitstop.kernel.statelog import StateLog
from pitstop.server.app import create_app
from tests.support import GITHUB_PUSH_HEAD, github_signature, wait_for

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0f9a8b7c6d5e"
TOKEN = "api-token-3c2b1a0f9e8d"

PUSH: dict[str, Any] = {
    **GITHUB_PUSH_HEAD,
    "commits": [
        {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Fix router",
         "added": ["pitstop/router.py"], "removed": [], "modified": ["README.md"]},
    ],
    "repository": {"full_name": "octo-org/pitstop"},
    "pusher": {"name": "octocat"},
}


def sign(body: bytes, secret: str = SECRET, algo: str = "sha256") -> str:
    return github_signature(body, secret, algo)


def github_headers(body: bytes, *, event: str = "push", delivery: str | None = None,
                   signature: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature if signature is not None else sign(body),
        "User-Agent": "GitHub-Hookshot/test",
    }


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def events_of(bus: EventBus) -> list[Event]:
    return list(bus.replay())


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def bus(redis_client: redis.Redis) -> EventBus:
    return EventBus(redis_client)


@pytest.fixture
def state_log(tmp_path: Path) -> StateLog:
    return StateLog(LOG_WEBHOOKS, tmp_path)


@pytest.fixture
def make_client(bus: EventBus, redis_client: redis.Redis, state_log: StateLog
                ) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        options: dict[str, Any] = {"bus": bus, "client": redis_client, "webhook_secret": SECRET,
                                   "api_token": TOKEN, "state_log": state_log}
        options.update(overrides)
        client = TestClient(create_app(**options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def http(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def read_log(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / f"{LOG_WEBHOOKS}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- health ----------------------------------------------------------------------------------


def test_healthz_reports_redis(http: TestClient) -> None:
    reply = http.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "redis": True}


def test_healthz_is_503_when_redis_is_down(make_client: Callable[..., TestClient]) -> None:
    # No retries: redis-py's default back-off would spend ~4 s on a refused connection.
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0))
    reply = make_client(client=dead).get("/healthz")
    assert reply.status_code == 503
    assert reply.json()["redis"] is False


# --- GitHub webhooks -------------------------------------------------------------------------


def test_signed_push_is_published(http: TestClient, bus: EventBus, tmp_path: Path) -> None:
    body = encode(PUSH)
    reply = http.post("/webhooks/github", content=body,
                      headers=github_headers(body, delivery="d-push-1"))
    assert reply.status_code == 202
    assert reply.json()["status"] == "accepted"
    [event_id] = reply.json()["events"]
    [event] = events_of(bus)
    assert event.id == event_id
    assert event.type == "github.push"
    assert event.source == "github"
    assert event.data["branch"] == "main"
    assert event.data["delivery_id"] == "d-push-1"
    assert event.data["changed_files"] == ["README.md", "pitstop/router.py"]
    [line] = read_log(tmp_path)
    assert line["delivery_id"] == "d-push-1"
    assert line["github_event"] == "push"
    assert line["result"] == "accepted"
    assert line["events"] == [event_id]
    assert SECRET not in json.dumps(line)


def test_form_encoded_delivery_is_accepted(http: TestClient, bus: EventBus) -> None:
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps(PUSH)}).encode()
    headers = github_headers(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    reply = http.post("/webhooks/github", content=body, headers=headers)
    assert reply.status_code == 202
    assert [e.type for e in events_of(bus)] == ["github.push"]


BODY = encode(PUSH)


def _unsigned(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}


def _sha1_only(headers: dict[str, str]) -> dict[str, str]:
    return _unsigned(headers) | {"X-Hub-Signature": sign(BODY, algo="sha1")}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(BODY.replace(b"main", b"prod"), github_headers(BODY, delivery="d-bad"),
                     id="tampered-body"),
        pytest.param(BODY, github_headers(BODY, delivery="d-bad",
                                          signature=sign(BODY, secret="not-the-secret")),
                     id="wrong-secret"),
        pytest.param(BODY, _unsigned(github_headers(BODY, delivery="d-bad")),
                     id="missing-header"),
        pytest.param(BODY, _sha1_only(github_headers(BODY, delivery="d-bad")), id="sha1-only"),
        pytest.param(BODY, github_headers(BODY, delivery="d-bad",
                                          signature=sign(BODY, algo="sha1")),
                     id="sha1-in-sha256-header"),
        pytest.param(BODY, github_headers(BODY, delivery="d-bad", signature="sha256=not-hex"),
                     id="malformed"),
    ],
)
def test_bad_signature_is_401_and_publishes_nothing(
    http: TestClient, bus: EventBus, tmp_path: Path, body: bytes, headers: dict[str, str],
) -> None:
    reply = http.post("/webhooks/github", content=body, headers=headers)
    assert reply.status_code == 401
    assert "error" in reply.json()
    assert SECRET not in reply.text
    assert events_of(bus) == []
    # An attacker must not be able to burn a delivery id.
    assert bus.client.exists(WEBHOOK_DELIVERY_PREFIX + "d-bad") == 0
    [line] = read_log(tmp_path)
    assert (line["result"], line["status"]) == ("rejected", 401)
    assert SECRET not in json.dumps(line)


def test_redelivery_is_acknowledged_once(http: TestClient, bus: EventBus,
                                         redis_client: redis.Redis) -> None:
    headers = github_headers(BODY, delivery="d-redeliver")
    first = http.post("/webhooks/github", content=BODY, headers=headers)
    second = http.post("/webhooks/github", content=BODY, headers=headers)
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "events": first.json()["events"]}
    assert len(events_of(bus)) == 1
    ttl = redis_client.ttl(WEBHOOK_DELIVERY_PREFIX + "d-redeliver")
    assert 0 < ttl <= 7 * 24 * 3600


def test_delivery_ttl_is_configurable(make_client: Callable[..., TestClient],
                                      redis_client: redis.Redis) -> None:
    from pitstop.server.app import PENDING_TTL_SECONDS

    http = make_client(delivery_ttl_seconds=3600)
    reply = http.post("/webhooks/github", content=BODY,
                      headers=github_headers(BODY, delivery="d-ttl"))
    assert reply.status_code == 202
    assert PENDING_TTL_SECONDS < redis_client.ttl(WEBHOOK_DELIVERY_PREFIX + "d-ttl") <= 3600
    assert json.loads(redis_client.get(WEBHOOK_DELIVERY_PREFIX + "d-ttl") or b"")["state"] == "done"


def test_ping_is_acknowledged_without_events(http: TestClient, bus: EventBus) -> None:
    body = encode({"zen": "Design for failure.", "hook_id": 1})
    reply = http.post("/webhooks/github", content=body, headers=github_headers(body, event="ping"))
    assert reply.status_code == 202
    assert reply.json() == {"status": "accepted", "events": []}
    assert events_of(bus) == []


@pytest.mark.parametrize(
    ("body", "drop"),
    [
        (BODY, "X-GitHub-Delivery"),
        (BODY, "X-GitHub-Event"),
        (b"not json", None),
        (b"[1, 2]", None),
        (b"\xff\xfe", None),
    ],
)
def test_malformed_deliveries_are_400(http: TestClient, bus: EventBus, redis_client: redis.Redis,
                                      body: bytes, drop: str | None) -> None:
    headers = github_headers(body, delivery="d-malformed")
    if drop:
        del headers[drop]
    reply = http.post("/webhooks/github", content=body, headers=headers)
    assert reply.status_code == 400
    assert reply.json()["error"]
    assert events_of(bus) == []
    # A refused body leaves the delivery id free for a corrected redelivery.
    assert redis_client.exists(WEBHOOK_DELIVERY_PREFIX + "d-malformed") == 0


def test_oversized_body_is_413(make_client: Callable[..., TestClient], bus: EventBus) -> None:
    http = make_client(max_body_bytes=1024)
    body = encode({**PUSH, "padding": "x" * 2048})
    reply = http.post("/webhooks/github", content=body, headers=github_headers(body))
    assert reply.status_code == 413
    assert events_of(bus) == []


def test_webhooks_without_a_secret_are_503(make_client: Callable[..., TestClient],
                                           bus: EventBus) -> None:
    reply = make_client(webhook_secret=None).post(
        "/webhooks/github", content=BODY, headers=github_headers(BODY))
    assert reply.status_code == 503
    assert "secret" in reply.json()["error"]
    assert events_of(bus) == []


def test_failed_publication_frees_the_delivery_for_a_retry(
    http: TestClient, bus: EventBus, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    real_publish = bus.publish

    def broken(*args: Any, **kwargs: Any) -> Event:
        raise RedisUnavailable("Redis went away")

    monkeypatch.setattr(bus, "publish", broken)
    headers = github_headers(BODY, delivery="d-retry")
    failed = http.post("/webhooks/github", content=BODY, headers=headers)
    assert failed.status_code == 503
    assert "went away" not in failed.text  # Redis details stay in the server log
    assert redis_client.exists(WEBHOOK_DELIVERY_PREFIX + "d-retry") == 0

    monkeypatch.setattr(bus, "publish", real_publish)
    retried = http.post("/webhooks/github", content=BODY, headers=headers)
    assert retried.status_code == 202
    assert [e.data["delivery_id"] for e in events_of(bus)] == ["d-retry"]
    assert [line["result"] for line in read_log(tmp_path)] == ["error", "accepted"]


def test_other_github_events_are_not_dropped(http: TestClient, bus: EventBus) -> None:
    body = encode({"action": "opened", "issue": {"number": 7},
                   "repository": {"full_name": "octo-org/pitstop"}})
    reply = http.post("/webhooks/github", content=body,
                      headers=github_headers(body, event="issues"))
    assert reply.status_code == 202
    [event] = events_of(bus)
    assert event.type == "github.issues.opened"
    assert event.data["repo"] == "octo-org/pitstop"


# --- POST /events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-token"), {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}x"}],
)
def test_events_need_the_bearer_token(http: TestClient, bus: EventBus,
                                      headers: dict[str, str]) -> None:
    reply = http.post("/events", json={"type": "deploy.prod.started"}, headers=headers)
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in reply.text
    assert events_of(bus) == []


def test_events_without_a_token_configured_are_503(make_client: Callable[..., TestClient]
                                                   ) -> None:
    reply = make_client(api_token=None).post("/events", json={"type": "a.b"}, headers=bearer())
    assert reply.status_code == 503


def test_event_is_published(http: TestClient, bus: EventBus) -> None:
    reply = http.post("/events", headers=bearer(), json={
        "type": "Release.Prod.Failed", "data": {"version": "1.4.0"}, "source": "ci/runner-7"})
    assert reply.status_code == 201
    body = reply.json()
    assert body["type"] == "release.prod.failed"
    assert body["data"] == {"version": "1.4.0"}
    assert body["source"] == "api:token/ci/runner-7"
    [event] = events_of(bus)
    assert event.to_dict() == body


@pytest.mark.parametrize("claimed", ["github", "worker@buildbox", "api:token"])
def test_an_api_event_cannot_pass_for_a_verified_source(http: TestClient, bus: EventBus,
                                                         claimed: str) -> None:
    reply = http.post("/events", headers=bearer(), json={"type": "ci.done", "source": claimed})
    assert reply.status_code == 201
    [event] = events_of(bus)
    assert event.source == f"api:token/{claimed}"


@pytest.mark.parametrize("event_type", [
    "tool.succeeded", "Tool.Failed", "github.push", "github.workflow_run.completed", "run.lost",
    "workstream.build.completed", "triage.classified", "patch.applied", "deploy.prod.failed",
    "alerting.sent"])
def test_types_pitstop_or_a_verified_webhook_emits_are_reserved(
        http: TestClient, bus: EventBus, event_type: str) -> None:
    reply = http.post("/events", headers=bearer(), json={"type": event_type, "data": {}})
    assert reply.status_code == 403
    assert "published by pitstop itself" in reply.json()["error"]
    assert events_of(bus) == []


def test_an_api_source_that_would_run_over_the_limit_is_400(http: TestClient,
                                                             bus: EventBus) -> None:
    reply = http.post("/events", headers=bearer(), json={"type": "a.b", "source": "s" * 199})
    assert reply.status_code == 400
    assert "over the limit" in reply.json()["error"]
    assert events_of(bus) == []


def test_event_defaults(http: TestClient, bus: EventBus) -> None:
    reply = http.post("/events", headers=bearer(), json={"type": "phase.1.completed"})
    assert reply.status_code == 201
    assert reply.json()["data"] == {}
    assert reply.json()["source"] == "api:token"


@pytest.mark.parametrize(
    ("body", "expected", "fragment"),
    [
        (b"not json", 400, "JSON"),
        (b"[]", 400, "object"),
        (encode({"data": {}}), 400, "type"),
        (encode({"type": "bad type!"}), 400, "segment"),
        (encode({"type": "a..b"}), 400, "empty segment"),
        (encode({"type": "a.b", "data": [1]}), 400, "data"),
        (encode({"type": "a.b", "source": 3}), 400, "source"),
        (encode({"type": "a.b", "payload": {}}), 400, "payload"),
        (encode({"type": "a.b", "data": {"blob": "x" * (70 * 1024)}}), 413, "bytes"),
    ],
)
def test_invalid_events_are_refused(http: TestClient, bus: EventBus, body: bytes, expected: int,
                                    fragment: str) -> None:
    reply = http.post("/events", content=body,
                      headers=bearer() | {"Content-Type": "application/json"})
    assert reply.status_code == expected
    assert fragment in reply.json()["error"]
    assert events_of(bus) == []


def test_events_body_cap_is_413(make_client: Callable[..., TestClient], bus: EventBus) -> None:
    http = make_client(max_body_bytes=512)
    reply = http.post("/events", headers=bearer(),
                      json={"type": "a.b", "data": {"x": "y" * 1024}})
    assert reply.status_code == 413
    assert events_of(bus) == []


def test_idempotency_key_publishes_once(http: TestClient, bus: EventBus) -> None:
    request = {"type": "build.42.completed", "data": {"ok": True}}
    headers = bearer() | {"Idempotency-Key": "build-42-done"}
    first = http.post("/events", headers=headers, json=request)
    second = http.post("/events", headers=headers, json=request)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(events_of(bus)) == 1
    other = http.post("/events", headers=bearer() | {"Idempotency-Key": "build-43-done"},
                      json=request)
    assert other.status_code == 201
    assert len(events_of(bus)) == 2


def test_idempotency_key_reused_for_another_request_is_422(http: TestClient,
                                                           bus: EventBus) -> None:
    headers = bearer() | {"Idempotency-Key": "k-1"}
    assert http.post("/events", headers=headers, json={"type": "a.b"}).status_code == 201
    reply = http.post("/events", headers=headers, json={"type": "a.c"})
    assert reply.status_code == 422
    assert len(events_of(bus)) == 1


def test_failed_publication_frees_the_idempotency_key(
    http: TestClient, bus: EventBus, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_publish = bus.publish

    def broken(*args: Any, **kwargs: Any) -> Event:
        raise RedisUnavailable("Redis went away")

    monkeypatch.setattr(bus, "publish", broken)
    headers = bearer() | {"Idempotency-Key": "k-retry"}
    assert http.post("/events", headers=headers, json={"type": "a.b"}).status_code == 503
    monkeypatch.setattr(bus, "publish", real_publish)
    assert http.post("/events", headers=headers, json={"type": "a.b"}).status_code == 201
    assert len(events_of(bus)) == 1


def test_invalid_event_does_not_burn_the_idempotency_key(http: TestClient,
                                                         bus: EventBus) -> None:
    headers = bearer() | {"Idempotency-Key": "k-fix"}
    assert http.post("/events", headers=headers, json={"type": "a..b"}).status_code == 400
    assert http.post("/events", headers=headers, json={"type": "a..b"}).status_code == 400
    assert http.post("/events", headers=headers, json={"type": "a.b"}).status_code == 201


# --- through a real uvicorn server -----------------------------------------------------------


@pytest.fixture
def live_url(bus: EventBus, redis_client: redis.Redis, state_log: StateLog) -> Iterator[str]:
    app: Starlette = create_app(bus=bus, client=redis_client, webhook_secret=SECRET,
                                api_token=TOKEN, state_log=state_log)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=10)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()


@pytest.mark.timeout(30)
def test_through_real_uvicorn(live_url: str, bus: EventBus, tmp_path: Path) -> None:
    with httpx.Client(base_url=live_url, timeout=5) as http:
        assert http.get("/healthz").json() == {"status": "ok", "redis": True}

        accepted = http.post("/webhooks/github", content=BODY,
                             headers=github_headers(BODY, delivery="live-1"))
        assert accepted.status_code == 202
        [pushed] = accepted.json()["events"]

        tampered = BODY.replace(b"octocat", b"mallory")
        for body, signature in [(tampered, sign(BODY)),
                                (BODY, sign(BODY, secret="guess")),
                                (BODY, sign(BODY, algo="sha1"))]:
            refused = http.post("/webhooks/github", content=body,
                                headers=github_headers(body, delivery="live-2",
                                                       signature=signature))
            assert refused.status_code == 401
        unsigned = github_headers(BODY, delivery="live-3")
        del unsigned["X-Hub-Signature-256"]
        assert http.post("/webhooks/github", content=BODY, headers=unsigned).status_code == 401

        again = http.post("/webhooks/github", content=BODY,
                          headers=github_headers(BODY, delivery="live-1"))
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate"

        denied = http.post("/events", json={"type": "lint.done"}, headers=bearer("nope"))
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
        created = http.post("/events", json={"type": "lint.done", "data": {"tool": "ruff"}},
                            headers=bearer())
        assert created.status_code == 201

    events = events_of(bus)
    assert [(e.id, e.type) for e in events] == [(pushed, "github.push"),
                                                (created.json()["id"], "lint.done")]
    results = [line["result"] for line in read_log(tmp_path)]
    assert results == ["accepted", "rejected", "rejected", "rejected", "rejected", "duplicate"]


def test_a_delivery_left_pending_by_a_crash_is_not_acknowledged_as_duplicate(
        http: TestClient, bus: EventBus, redis_client: redis.Redis) -> None:
    from pitstop.kernel.constants import WEBHOOK_DELIVERY_PREFIX
    from pitstop.server.app import PENDING_TTL_SECONDS

    delivery = str(uuid.uuid4())
    # A previous process claimed the delivery and died before publishing.
    redis_client.set(WEBHOOK_DELIVERY_PREFIX + delivery, "pending", ex=PENDING_TTL_SECONDS)
    reply = http.post("/webhooks/github", content=BODY,
                      headers=github_headers(BODY, delivery=delivery))
    assert reply.status_code == 409
    assert events_of(bus) == []
    # Once the short claim has expired, GitHub's redelivery goes through.
    assert 0 < redis_client.ttl(WEBHOOK_DELIVERY_PREFIX + delivery) <= PENDING_TTL_SECONDS
    redis_client.delete(WEBHOOK_DELIVERY_PREFIX + delivery)
    reply = http.post("/webhooks/github", content=BODY,
                      headers=github_headers(BODY, delivery=delivery))
    assert reply.status_code == 202
    assert redis_client.ttl(WEBHOOK_DELIVERY_PREFIX + delivery) > PENDING_TTL_SECONDS


def test_events_endpoint_redacts_secret_data(make_client: Callable[..., TestClient],
                                             bus: EventBus) -> None:
    from pitstop.kernel.redaction import Redactor

    http = make_client(redactor=Redactor(secrets=["canary-value-123"]))
    reply = http.post("/events", headers=bearer(), json={
        "type": "release.requested",
        "data": {"api_token": "tok-abc", "note": "uses canary-value-123"}})
    assert reply.status_code == 201
    stored = events_of(bus)[-1].data
    assert stored["api_token"] == "***"
    assert "canary-value-123" not in stored["note"]


def test_an_idempotency_key_still_pending_is_409_and_publishes_nothing(
        http: TestClient, bus: EventBus, redis_client: redis.Redis) -> None:
    import hashlib

    from pitstop.server.app import _idempotency_redis_key

    request = {"type": "build.done", "data": {}}
    fingerprint = hashlib.sha256(
        json.dumps(request, sort_keys=True,
                   separators=(",", ":")).encode()).hexdigest()
    redis_client.set(_idempotency_redis_key("k-pending"),
                     json.dumps({"state": "pending", "fingerprint": fingerprint}))
    reply = http.post("/events", headers=bearer() | {"Idempotency-Key": "k-pending"},
                      json=request)
    assert reply.status_code == 409
    assert events_of(bus) == []


# --- hostile bodies: huge sources, absurd nesting, replayed signed bodies -------------------------


def test_an_oversized_event_source_is_400(http: TestClient, bus: EventBus) -> None:
    reply = http.post("/events", headers=bearer(),
                      json={"type": "a.b", "source": "s" * (5 * 1024 * 1024 - 100)})
    assert reply.status_code == 400
    assert "over the limit of 200" in reply.json()["error"]
    assert len(reply.text) < 1000  # the source is not echoed back
    assert events_of(bus) == []


def test_an_unprintable_event_source_is_400_and_keeps_the_idempotency_key(
        http: TestClient, bus: EventBus) -> None:
    headers = bearer() | {"Idempotency-Key": "k-source"}
    refused = http.post("/events", headers=headers,
                        json={"type": "a.b", "source": "ci\nforged: log line"})
    assert refused.status_code == 400
    assert "printable" in refused.json()["error"]
    accepted = http.post("/events", headers=headers, json={"type": "a.b", "source": "ci"})
    assert accepted.status_code == 201
    assert [e.source for e in events_of(bus)] == ["api:token/ci"]


@pytest.mark.parametrize("depth", [100, 900, 100_000])
def test_deeply_nested_event_body_is_400(http: TestClient, bus: EventBus, depth: int) -> None:
    body = b'{"type": "a.b", "data": {"x": ' + b"[" * depth + b"]" * depth + b"}}"
    reply = http.post("/events", content=body,
                      headers=bearer() | {"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert "nested" in reply.json()["error"]
    assert events_of(bus) == []


def test_deeply_nested_bare_array_to_events_is_400(http: TestClient, bus: EventBus) -> None:
    body = b"[" * 100_000
    reply = http.post("/events", content=body,
                      headers=bearer() | {"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert events_of(bus) == []


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"ref": ' + b"[" * 100_000])
def test_deeply_nested_signed_webhook_is_400(http: TestClient, bus: EventBus,
                                             redis_client: redis.Redis, body: bytes) -> None:
    reply = http.post("/webhooks/github", content=body,
                      headers=github_headers(body, delivery="d-deep"))
    assert reply.status_code == 400
    assert "nested too deeply" in reply.json()["error"]
    assert events_of(bus) == []
    assert redis_client.exists(WEBHOOK_DELIVERY_PREFIX + "d-deep") == 0


@pytest.mark.parametrize("event_name", ["push", "issues", "check_run"])
def test_a_signed_body_replayed_under_a_new_delivery_id_publishes_nothing(
        http: TestClient, bus: EventBus, redis_client: redis.Redis, tmp_path: Path,
        event_name: str) -> None:
    first = http.post("/webhooks/github", content=BODY,
                      headers=github_headers(BODY, delivery="d-original"))
    assert first.status_code == 202
    replayed = http.post("/webhooks/github", content=BODY,
                         headers=github_headers(BODY, event=event_name, delivery="d-replayed"))
    assert replayed.status_code == 200
    assert replayed.json() == {"status": "duplicate", "events": first.json()["events"]}
    assert len(events_of(bus)) == 1
    # The body is remembered as long as delivery ids are.
    body_key = WEBHOOK_BODY_PREFIX + hashlib.sha256(BODY).hexdigest()
    assert 3600 < redis_client.ttl(body_key) <= 7 * 24 * 3600
    # The replay's own id is spent too: sending it again is still a duplicate.
    again = http.post("/webhooks/github", content=BODY,
                      headers=github_headers(BODY, delivery="d-replayed"))
    assert again.status_code == 200
    assert len(events_of(bus)) == 1
    assert [line["result"] for line in read_log(tmp_path)] == ["accepted", "duplicate",
                                                               "duplicate"]
    # Another body (another push) under a new id is a new delivery.
    other = encode({**PUSH, "after": "1" * 40})
    assert http.post("/webhooks/github", content=other,
                     headers=github_headers(other)).status_code == 202
    assert len(events_of(bus)) == 2


def test_a_body_still_being_processed_under_another_delivery_is_409(
        http: TestClient, bus: EventBus, redis_client: redis.Redis) -> None:
    from pitstop.server.app import PENDING_TTL_SECONDS

    body_key = WEBHOOK_BODY_PREFIX + hashlib.sha256(BODY).hexdigest()
    redis_client.set(body_key, json.dumps({"state": "pending", "delivery_id": "d-first"}),
                     ex=PENDING_TTL_SECONDS)
    reply = http.post("/webhooks/github", content=BODY,
                      headers=github_headers(BODY, delivery="d-second"))
    assert reply.status_code == 409
    assert events_of(bus) == []
    # The second delivery id is not burned: once the first is done, its retry is a duplicate.
    assert redis_client.exists(WEBHOOK_DELIVERY_PREFIX + "d-second") == 0


def test_a_failed_publication_frees_the_body_for_a_redelivery_under_a_new_id(
        http: TestClient, bus: EventBus, redis_client: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Event:
        raise RedisUnavailable("Redis went away")

    with monkeypatch.context() as patch:
        patch.setattr(bus, "publish", broken)
        failed = http.post("/webhooks/github", content=BODY,
                           headers=github_headers(BODY, delivery="d-fail"))
        assert failed.status_code == 503
    assert redis_client.exists(WEBHOOK_BODY_PREFIX + hashlib.sha256(BODY).hexdigest()) == 0
    retried = http.post("/webhooks/github", content=BODY,
                        headers=github_headers(BODY, delivery="d-fresh"))
    assert retried.status_code == 202
    # Published now: from here on the body is a duplicate under any id.
    replayed = http.post("/webhooks/github", content=BODY,
                         headers=github_headers(BODY, delivery="d-third"))
    assert replayed.json() == {"status": "duplicate", "events": retried.json()["events"]}
    assert len(events_of(bus)) == 1


@pytest.mark.parametrize(
    ("event_name", "missing"),
    [("release", "release"), ("workflow_run", "workflow_run"), ("pull_request", "pull_request")],
)
def test_a_body_under_an_event_name_it_does_not_fit_is_400(
        http: TestClient, bus: EventBus, redis_client: redis.Redis, event_name: str,
        missing: str) -> None:
    reply = http.post("/webhooks/github", content=BODY,
                      headers=github_headers(BODY, event=event_name, delivery="d-misfit"))
    assert reply.status_code == 400
    assert repr(missing) in reply.json()["error"]
    assert events_of(bus) == []
    assert redis_client.exists(WEBHOOK_DELIVERY_PREFIX + "d-misfit") == 0
    assert redis_client.exists(WEBHOOK_BODY_PREFIX + hashlib.sha256(BODY).hexdigest()) == 0


def test_a_push_without_a_ref_is_400(http: TestClient, bus: EventBus) -> None:
    body = encode({k: v for k, v in PUSH.items() if k != "ref"})
    reply = http.post("/webhooks/github", content=body, headers=github_headers(body))
    assert reply.status_code == 400
    assert "'ref'" in reply.json()["error"]
    assert events_of(bus) == []


def test_webhook_data_is_redacted_like_any_other_event(make_client: Callable[..., TestClient],
                                                       bus: EventBus) -> None:
    from pitstop.kernel.redaction import Redactor

    http = make_client(redactor=Redactor(secrets=["canary-value-456"]))
    body = json.dumps({"ref": "refs/heads/main", "commits": [],
                       "head_commit": {"message": "x"},
                       "pusher": {"name": "leaks canary-value-456"}}).encode()
    reply = http.post("/webhooks/github", content=body, headers=github_headers(body))
    assert reply.status_code == 202
    stored = events_of(bus)[-1]
    assert stored.type == "github.push"
    assert stored.data["pusher"] == "leaks ***"
