"""Delivery without Celery, on a real Redis: the ledger's states, the shared rate limit, retries
and fallbacks against a Slack stand-in, header injection against a real SMTP server, the ack
endpoint, the ``alert`` step kind, and the manager's leadership and redelivery."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pitstop import components
from pitstop.alerts.config import parse_alerts_config
from pitstop.alerts.delivery import Deliverer
from pitstop.alerts.ledger import DeliveryLedger
from pitstop.alerts.manager import AlertManager
from pitstop.alerts.steps import AlertParams, AlertStep
from pitstop.alerts.store import AlertStore
from pitstop.alerts.web import ack_routes
from pitstop.bus.eventbus import EventBus
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog
from pitstop.workstreams.steps import StepContext
from tests.integration.test_alerts_support import SMTP_PASSWORD, SlackStandIn, smtp_server
from tests.support import wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
              pytest.mark.filterwarnings("ignore:'imghdr' is deprecated")]

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()
    yield stand_in
    stand_in.close()


def _notify(ledger: DeliveryLedger, client: redis.Redis, channels: list[str],
            notification_id: str = "n1", now: float = T0) -> list[str]:
    with client.pipeline(transaction=True) as pipe:
        ids = ledger.queue_notification(pipe, {
            "id": notification_id, "kind": "firing", "receiver": "team", "created_at": now,
            "alert_ids": ["a1"], "more_alerts": 0, "more_events": 0,
            "alerts": [{"id": "a1", "status": "firing", "severity": "failed",
                        "subject": "build.linux", "count": 1, "examples": [],
                        "top_types": [], "source": "ci"}]}, channels, now=now,
            requeue_after=30)
        pipe.execute()
    return ids


def test_ledger_claims_once_and_judges_a_dead_sender_by_its_phase(redis_client: redis.Redis
                                                                  ) -> None:
    ledger = DeliveryLedger(redis_client)
    a, b = _notify(ledger, redis_client, ["slack", "mail"])
    assert _notify(ledger, redis_client, ["slack"]) == [a]            # redone flush: same id
    assert ledger.claim(a, "t1", now=T0, lease=10).outcome == "claimed"
    assert ledger.claim(a, "t2", now=T0 + 1, lease=10).outcome == "busy"
    # Died before sending (phase claimed): taken again, attempt 2.
    again = ledger.claim(a, "t2", now=T0 + 11, lease=10)
    assert (again.outcome, again.attempt) == ("claimed", 2)
    assert not ledger.mark_posting(a, "t1")                            # the old token is void
    assert ledger.mark_posting(a, "t2")
    # Died after the first byte went out (phase posting): in doubt, never sent again.
    assert ledger.claim(a, "t3", now=T0 + 22, lease=10).outcome == "now_in_doubt"
    assert ledger.claim(a, "t4", now=T0 + 99, lease=10).outcome == "in_doubt"
    assert ledger.get(a)["state"] == "in_doubt"
    # A late success is still recorded.
    assert ledger.finish(a, "t2", "delivered", now=T0 + 23)
    assert ledger.claim(a, "t5", now=T0 + 30, lease=10).outcome == "delivered"
    # Retrying waits for its time; the sweeper sees it after requeue_after.
    assert ledger.claim(b, "u1", now=T0, lease=10).outcome == "claimed"
    assert ledger.finish(b, "u1", "retrying", now=T0, next_at=T0 + 5, requeue_after=30)
    assert ledger.claim(b, "u2", now=T0 + 1, lease=10).outcome == "early"
    assert b not in ledger.overdue(T0 + 34) and b in ledger.overdue(T0 + 35)
    assert ledger.claim(b, "u2", now=T0 + 5, lease=10).outcome == "claimed"


def test_rate_limit_is_shared_and_a_429_blocks_everyone(redis_client: redis.Redis) -> None:
    first, second = DeliveryLedger(redis_client), DeliveryLedger(redis_client)  # two workers
    url = "https://hooks.example/T/B/x"
    waits = [ledger.rate_wait(url, per_second=1, burst=2, now=T0) for ledger in
             (first, second, first)]
    assert waits[:2] == [0.0, 0.0] and waits[2] == pytest.approx(1.0)
    assert second.rate_wait(url, per_second=1, burst=2, now=T0 + 1) == 0.0
    first.block(url, until=T0 + 10, now=T0 + 1)
    assert second.rate_wait(url, per_second=1, burst=2, now=T0 + 4) == pytest.approx(6.0)
    assert second.rate_wait(url, per_second=None, burst=1, now=T0 + 4) == pytest.approx(6.0)
    assert not any(url.encode() in key for key in redis_client.scan_iter())


CONFIG = """
delivery: {max_attempts: 3, backoff_base: 1s, backoff_max: 10s, lease: 10s}
channels:
  slack: {type: slack, webhook_url: "${BASE}/services/T/B/sekrit", fallback: backup}
  backup: {type: webhook, url: "${BASE}/backup", headers: {Authorization: "Bearer ${TOKEN}"}}
  mail:
    type: email
    host: 127.0.0.1
    port: ${SMTP_PORT}
    security: plain
    username: pitstop
    password: ${SMTP_PASSWORD}
    allow_plain_auth: true
    from: pitstop@example.com
    to: [oncall@example.com]
    title: "{{ alerts[0].subject }}"
    fallback: backup
"""


def _deliverer(redis_client: redis.Redis, base: str, clock: Clock, smtp_port: int = 25
               ) -> tuple[Deliverer, None, EventBus]:
    env = {"BASE": base, "TOKEN": "tok-123456", "SMTP_PORT": str(smtp_port),
           "SMTP_PASSWORD": SMTP_PASSWORD}
    config = parse_alerts_config(CONFIG, file="alerts.yaml", environ=env)
    bus = components.event_bus(redis_client, Settings(), source="test")
    return Deliverer(config, AlertStore(redis_client), clock=clock, redactor=Redactor(),
                     bus=bus, rng=lambda: 0.5, monotonic=lambda: 0.0), None, bus


def test_429_then_500s_retries_after_the_wait_and_posts_once(redis_client: redis.Redis,
                                                             slack: SlackStandIn) -> None:
    slack.script("/services/T/B/sekrit", [(429, {"Retry-After": "2"}), (500, {}), (500, {}),
                                          (200, {})])
    clock = Clock()
    deliverer, _, _ = _deliverer(redis_client, slack.url(), clock)
    deliverer.config.file.channels["slack"].__dict__["max_attempts"] = 5
    (did,) = _notify(deliverer.ledger, redis_client, ["slack"])
    waits = []
    while True:
        outcome = deliverer.attempt(did)
        if outcome.state != "retry":
            break
        assert outcome.retry_in is not None
        waits.append(outcome.retry_in)
        clock.now += outcome.retry_in
    assert outcome.state == "delivered"
    assert waits == [2.0, 1.5, 3.0]                     # Retry-After, then 1s*2^(n-1) jittered
    assert [p.status for p in slack.to("/services/T/B/sekrit")] == [429, 500, 500, 200]
    assert deliverer.attempt(did).state == "skipped"   # a redelivered task sends nothing
    assert len(slack.to("/services/T/B/sekrit")) == 4
    assert AlertStore(redis_client).delivered(["a1"]) == {"a1": T0 + 6.5}


def test_a_channel_that_keeps_failing_falls_back_and_says_so(redis_client: redis.Redis,
                                                              slack: SlackStandIn) -> None:
    slack.script("/services/T/B/sekrit", [(503, {})])
    clock = Clock()
    deliverer, _, bus = _deliverer(redis_client, slack.url(), clock)
    (did,) = _notify(deliverer.ledger, redis_client, ["slack"])
    outcomes = []
    for _ in range(3):
        outcome = deliverer.attempt(did)
        outcomes.append(outcome.state)
        clock.now += outcome.retry_in or 0
    assert outcomes == ["retry", "retry", "failed"]
    (fallback,) = outcome.enqueue
    assert deliverer.attempt(fallback).state == "delivered"
    (post,) = slack.to("/backup")
    assert post.body["notification"]["id"] == "n1" and "build.linux" in post.body["title"]
    (degraded,) = list(bus.replay(pattern="alerting.degraded"))
    assert degraded.data["channel"] == "slack" and degraded.data["fallback"] == "backup"
    assert "sekrit" not in degraded.to_json()


def test_crlf_in_event_data_never_reaches_smtp_as_a_header(redis_client: redis.Redis,
                                                           slack: SlackStandIn) -> None:
    with smtp_server() as (port, mailbox):
        deliverer, _, _ = _deliverer(redis_client, slack.url(), Clock(), port)
        ledger = deliverer.ledger
        with redis_client.pipeline(transaction=True) as pipe:
            (did,) = ledger.queue_notification(pipe, {
                "id": "inj", "kind": "firing", "receiver": "team", "created_at": T0,
                "alert_ids": [], "alerts": [{"subject": "x\r\nBcc: victim@example.com"}]},
                ["mail"], now=T0, requeue_after=30)
            pipe.execute()
        # Delivered with the subject folded onto one line: refusing it would let the sender of
        # the event silence the e-mail (a real failure joining its group included).
        assert deliverer.attempt(did).state == "delivered"
        (mail,) = mailbox.messages
        assert mail["to"] == ["oncall@example.com"]
        headers = mail["data"].split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
        assert "victim@example.com" in headers  # inside the folded Subject, never a header
        assert not any(line.lower().startswith("bcc:") for line in headers.splitlines())


def test_ack_link_shows_on_get_and_acknowledges_on_post(redis_client: redis.Redis) -> None:
    from pitstop.alerts.ack import AckLinks, signing_key
    from pitstop.alerts.model import Alert

    store = AlertStore(redis_client)
    alert = Alert(id="alert-1", group_key="k", route_id="root", receiver="team",
                  group={"subject": "build.<b>linux</b>"}, labels={}, severity="failed",
                  source="ci", created_at=T0, first_event_at=T0, last_event_at=T0, count=2)
    redis_client.set("pitstop:alerts:alert:alert-1", alert.to_json())
    now = float(redis_client.time()[0])
    url = AckLinks(signing_key(redis_client), "http://x", 600).url("alert-1", now=now)
    path = url.removeprefix("http://x")
    web = TestClient(Starlette(routes=ack_routes(redis_client)))
    shown = web.get(path)
    assert shown.status_code == 200 and "<form" in shown.text
    assert "build.&lt;b&gt;linux" in shown.text
    assert store.acks(["alert-1"]) == {}                              # GET never acks
    assert web.get(path.replace("sig=", "sig=x")).status_code == 403
    query = dict(part.split("=", 1) for part in path.split("?", 1)[1].split("&"))
    done = web.post("/alerts/ack/alert-1", data={**query, "by": "ann"})
    assert done.status_code == 200 and "Acknowledged by ann" in done.text
    assert store.acks(["alert-1"])["alert-1"][1].startswith("ann")
    forged = web.post("/alerts/ack/alert-2", data={**query, "by": "eve"})
    assert forged.status_code == 403
    # pitstop serve's app mounts the same routes.
    from pitstop.server.app import create_app

    app = create_app(bus=components.event_bus(redis_client, Settings()), client=redis_client,
                     webhook_secret=None, api_token=None)
    served = TestClient(app).get(path)
    assert served.status_code == 200 and "Acknowledged by ann" in served.text


def test_alert_step_publishes_once_per_attempt(redis_client: redis.Redis) -> None:
    bus = components.event_bus(redis_client, Settings(), source="test")
    ctx = StepContext(run_id="run-1", workstream_id="Nightly Build", step_id="notify",
                      attempt=1, params=AlertParams(severity="critical", summary="tests broke"),
                      event=None, trace_id="trace-1", hops=0, timeout=None, settings=Settings(),
                      redis=redis_client, bus=bus, redactor=Redactor())
    first = AlertStep().execute(ctx)
    again = AlertStep().execute(ctx)
    assert first.status == again.status == "succeeded"
    assert first.outputs["event_id"] == again.outputs["event_id"]
    (event,) = list(bus.replay(pattern="alert.**"))
    assert event.type == "alert.nightly-build.critical" and event.severity == "critical"
    assert event.data["summary"] == "tests broke" and event.trace_id == "trace-1"


MANAGER_CONFIG = """
leader_ttl: 5s
channels:
  slack: {type: slack, webhook_url: "https://hooks.example/x"}
receivers:
  team: {channels: [slack]}
route: {receiver: team, group_wait: 0s}
"""


def test_one_manager_leads_and_redelivered_events_are_not_counted_twice(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    config = parse_alerts_config(MANAGER_CONFIG.replace('"https://hooks.example/x"', '"${U}"'),
                                 file="alerts.yaml", environ={"U": "https://hooks.example/x"})
    bus = components.event_bus(redis_client, Settings(bus={"claim_idle_ms": 100}),
                               source="test")
    queued: list[str] = []
    clock = itertools.count(T0, 0.5)

    def manager(name: str) -> AlertManager:
        return AlertManager(config, bus, AlertStore(redis_client), enqueue=queued.append,
                            clock=lambda: next(clock), name=name,
                            alert_log=StateLog("alerts", tmp_path / name))

    first, second = manager("m1"), manager("m2")
    bus.publish("build.linux.failed", {})
    first.consumer.ack = lambda *deliveries: None  # type: ignore[method-assign]
    assert first.step(block_ms=10) and not second.step(block_ms=10)
    (alert,) = first.engine.open.values()
    assert queued == [f"{alert.id}.1:slack"]
    # m1 dies after committing, before acknowledging the event; m2 takes over with the open
    # alert, gets the event again (reclaimed) and does not count it twice.
    redis_client.delete("pitstop:alerts:leader")
    assert second.step(block_ms=10)
    assert second.engine.open[alert.group_key].count == 1
    wait_for(lambda: second.step(block_ms=10) and not redis_client.xpending(
        "pitstop:events", "alerts")["pending"], 5, message="the event reclaimed and acked")
    assert second.engine.open[alert.group_key].count == 1
    bus.publish("build.linux.failed", {"n": 2})
    second.step(block_ms=10)
    assert second.engine.open[alert.group_key].count == 2
    quiet = bus.publish("phase.1.info", {})  # not for alerting: acked, never remembered
    second.step(block_ms=10)
    assert redis_client.zscore("pitstop:alerts:seen", quiet.id) is None
    assert not redis_client.xpending("pitstop:events", "alerts")["pending"]
    assert (tmp_path / "m1" / "alerts.jsonl").read_text().count("build.linux.failed") == 1
    assert (tmp_path / "m2" / "alerts.jsonl").read_text().count("build.linux.failed") == 1


def test_apprise_channel_reaches_its_service(redis_client: redis.Redis,
                                             slack: SlackStandIn) -> None:
    pytest.importorskip("apprise")
    config = parse_alerts_config(
        'channels:\n  teams: {type: apprise, urls: ["${APPRISE_URL}"]}\n', file="alerts.yaml",
        environ={"APPRISE_URL": slack.url("/apprise").replace("http://", "json://")})
    deliverer = Deliverer(config, AlertStore(redis_client), clock=Clock(), redactor=Redactor())
    (did,) = _notify(deliverer.ledger, redis_client, ["teams"])
    assert deliverer.attempt(did).state == "delivered"
    (post,) = slack.to("/apprise")
    assert "build.linux" in post.body["title"]


def test_daily_summary_is_sent_once_after_its_time(redis_client: redis.Redis, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from pitstop.alerts.runtime import AlertsRuntime
    from pitstop.alerts.summary import send_daily_summary

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "alerts.yaml").write_text(
        "channels:\n  hook: {type: webhook, url: '${SUMMARY_HOOK_URL}'}\n"
        "receivers:\n  team: {channels: [hook]}\nsummary: {receiver: team, at: '08:00'}\n")
    monkeypatch.setenv("SUMMARY_HOOK_URL", "http://127.0.0.1:9/x")
    settings = Settings(config_dir=tmp_path / "config", state_dir=tmp_path / ".state")
    clock = Clock()  # 2027-01-15 08:00:00 UTC
    runtime = AlertsRuntime(settings, redis_client,
                            components.event_bus(redis_client, settings), Redactor(),
                            clock=clock)
    config = runtime.config()
    assert config is not None
    queued: list[str] = []
    assert send_daily_summary(runtime, config, enqueue=queued.append,
                              now=T0 - 60) == "not yet"
    assert send_daily_summary(runtime, config, enqueue=queued.append) == "sent to team"
    assert send_daily_summary(runtime, config, enqueue=queued.append) == "already sent"
    assert queued == ["summary.2027-01-14:hook"]
    note = runtime.store.ledger.notification("summary.2027-01-14")
    assert note is not None and note["kind"] == "summary"
    assert "0 alerts (0 events)" in note["summary_text"]
    assert "summary" in (tmp_path / ".state" / "alert_activity.jsonl").read_text()


def test_a_group_closed_and_opened_again_in_one_commit_stays_open(redis_client: redis.Redis
                                                                  ) -> None:
    from pitstop.alerts.engine import AlertEngine
    from pitstop.bus.events import make_event

    config = parse_alerts_config("route: {group_wait: 1s}\n", file="alerts.yaml")
    engine = AlertEngine(config)
    engine.evaluate(make_event("build.linux.failed"), now=T0)
    engine.resolve(make_event("build.linux.succeeded"), now=T0 + 0.1)   # closes, never told
    engine.evaluate(make_event("build.linux.failed"), now=T0 + 0.2)     # the same group again
    changed, closed, storm, outbox = engine.take_changes()
    assert [a.group_key for a in changed] == list(closed)
    store = AlertStore(redis_client)
    assert store.acquire("me", 5)
    store.commit("me", changed=changed, closed=closed, storm=storm, outbox=outbox, seen=[],
                 now=T0, requeue_after=30)
    reopened, _ = store.load_open()
    assert [a.id for a in reopened.values()] == [changed[0].id]


def test_alerts_yaml_is_reread_when_it_changes_and_applied_between_steps(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    from pitstop.alerts.runtime import AlertsRuntime

    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "alerts.yaml"
    path.write_text("route: {group_wait: 0s}\n")
    settings = Settings(config_dir=tmp_path / "config", state_dir=tmp_path / ".state")
    bus = components.event_bus(redis_client, settings)
    runtime = AlertsRuntime(settings, redis_client, bus, Redactor(), clock=Clock())
    manager = runtime.manager(enqueue=lambda did: None)
    assert manager is not None and runtime.config() is manager.config  # unchanged: same
    path.write_text("min_severity: critical\nroute: {group_wait: 0s}\n  bad: [\n")
    assert runtime.config() is manager.config          # a bad edit keeps the config in force
    path.write_text("min_severity: critical\nroute: {group_wait: 0s}\n")
    latest = runtime.config()
    assert latest is not None and latest.file.min_severity == "critical"
    manager.reconfigure(latest)
    bus.publish("build.linux.failed", {})
    assert manager.step(block_ms=10)
    assert manager.config is latest
    assert not (tmp_path / ".state" / "alerts.jsonl").exists()   # failed < critical now
