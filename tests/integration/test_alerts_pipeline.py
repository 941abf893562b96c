"""Alerting end to end: real Redis, a real worker (alert manager thread + send_alert tasks), a
local HTTP server as Slack and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pitstop import components
from pitstop.alerts.ledger import DeliveryLedger
from pitstop.alerts.store import AlertStore
from pitstop.bus.eventbus import EventBus
from pitstop.kernel.settings import Settings
from tests.integration.test_alerts_support import SMTP_PASSWORD, AlertsProject, alerts_project
from tests.support import run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")]

SLACK_PATH = "/services/T0001/B0001/hushhushsecrettoken"

ALERTS_YAML = f"""
leader_ttl: 2s
delivery: {{max_attempts: 5, backoff_base: 0.2s, backoff_max: 1s, lease: 4s, requeue_after: 3s}}
channels:
  slack:
    type: slack
    webhook_url: ${{TEST_SLACK_BASE}}{SLACK_PATH}
    rate_limit: {{per_second: 50, burst: 50}}
  email:
    type: email
    host: 127.0.0.1
    port: ${{TEST_SMTP_PORT}}
    security: plain
    username: pitstop
    password: ${{TEST_SMTP_PASSWORD}}
    allow_plain_auth: true
    from: pitstop@example.com
    to: [oncall@example.com]
  storm:
    type: slack
    webhook_url: ${{TEST_SLACK_BASE}}/storm
    rate_limit: null
  flaky:
    type: slack
    webhook_url: ${{TEST_SLACK_BASE}}/flaky
  first:
    type: slack
    webhook_url: ${{TEST_SLACK_BASE}}/first
  managers:
    type: slack
    webhook_url: ${{TEST_SLACK_BASE}}/managers
receivers:
  team: {{channels: [slack, email]}}
  storm-team:
    channels: [storm]
    storm: {{max_messages: 3, window: 4s}}
  flaky-team: {{channels: [flaky]}}
  first-line: {{channels: [first]}}
  managers: {{channels: [managers]}}
route:
  receiver: team
  group_wait: 0.3s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - match: {{type: "storm.**"}}
      receiver: storm-team
      group_wait: 1s
      group_interval: 30s
    - match: {{type: "flaky.**"}}
      receiver: flaky-team
    - match: {{type: "esc.**"}}
      receiver: first-line
      escalate_after: 3s
      escalate_to: managers
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertsProject]:
    with alerts_project(tmp_path_factory.mktemp("alerts"), ALERTS_YAML) as proj:
        proj.slack.script("/flaky", [(429, {"Retry-After": "2"}), (500, {}), (500, {}),
                                     (200, {})])
        proj.start_worker()
        yield proj


@pytest.fixture(scope="module")
def client(project: AlertsProject) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(project.redis.url)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def bus(client: redis.Redis) -> EventBus:
    return components.event_bus(client, Settings(), source="test")


def _alert_lines(project: AlertsProject, prefix: str) -> list[dict]:
    return [line for line in project.log_lines()
            if line.get("kind") == "alert" and line["event"]["type"].startswith(prefix)]


def test_failure_reaches_slack_email_and_log_once_and_resolves(project: AlertsProject,
                                                                bus: EventBus) -> None:
    result = run_cli(["emit", "build.linux.failed", "--data",
                      json.dumps({"summary": "make: *** [all] Error 2", "run_id": "r-42",
                                  "run_url": "https://ci.example.com/runs/42"})], project.env)
    assert result.returncode == 0, result.stderr
    posts = wait_for(lambda: project.slack.to(SLACK_PATH), 15, message="the Slack post")
    mails = wait_for(lambda: project.mailbox.messages, 15, message="the e-mail")
    lines = wait_for(lambda: _alert_lines(project, "build.linux"), 5, message="the log line")
    assert len(lines) == 1
    assert lines[0]["event"]["data"]["run_id"] == "r-42"
    assert lines[0]["decisions"][0]["outcome"] == "new"
    assert lines[0]["decisions"][0]["channels"] == ["slack", "email"]
    alert_id = lines[0]["decisions"][0]["alert"]

    body = posts[0].body
    assert "[FAILED] build.linux" in body["blocks"][0]["text"]["text"]
    section = body["blocks"][1]["text"]["text"]
    assert "make: *** [all] Error 2" in section
    assert "https://ci.example.com/runs/42" in section
    assert alert_id in section and "/alerts/ack/" in section
    mail = mails[0]
    assert mail["to"] == ["oncall@example.com"]
    assert "Subject: [FAILED] build.linux" in mail["data"]
    assert "make: *** [all] Error 2" in mail["data"]

    # An info event alerts nobody: a sentinel failure emitted after it arrives, it does not.
    bus.publish("deploy.staging.info", {"note": "all fine"})
    bus.publish("sentinel.one.failed", {})
    wait_for(lambda: any("sentinel.one" in p.body["text"] for p in project.slack.to(SLACK_PATH)),
             15, message="the sentinel")
    assert not any("deploy.staging" in json.dumps(p.body) for p in project.slack.posts)
    assert not _alert_lines(project, "deploy.")
    assert len([p for p in project.slack.to(SLACK_PATH) if "build.linux" in p.body["text"]]) == 1
    wait_for(lambda: len(project.mailbox.messages) >= 2, 10, message="the sentinel's e-mail")
    assert len(project.mailbox.messages) == 2  # build.linux and the sentinel, once each

    bus.publish("build.linux.succeeded", {})
    resolved = wait_for(lambda: [p for p in project.slack.to(SLACK_PATH)
                                 if p.body["text"].startswith("[RESOLVED]")], 15,
                        message="the resolved message")
    assert "build.linux" in resolved[0].body["text"]
    assert any(line.get("kind") == "resolved" and line["alert"] == alert_id
               for line in project.log_lines())


def test_storm_of_500_failures_becomes_a_handful_of_messages(project: AlertsProject,
                                                             bus: EventBus) -> None:
    for n in range(500):
        bus.publish(f"storm.svc{n % 25}.failed", {"n": n, "summary": f"failure {n}"})
    wait_for(lambda: len(_alert_lines(project, "storm.")) >= 500, 20,
             message="500 lines in alerts.jsonl")

    def events_told() -> int:
        total = 0
        for post in project.slack.to("/storm"):
            numbers = re.findall(r"(\d+) events", post.body["text"])
            total += int(numbers[-1]) if numbers else 1
        return total

    wait_for(lambda: events_told() >= 500, 20, message="every failure told")
    posts = project.slack.to("/storm")
    assert 2 <= len(posts) <= 6, [p.body["text"] for p in posts]
    assert events_told() == 500
    for post in posts:
        assert len(post.body["blocks"]) <= 50
        assert len(post.body["blocks"][0]["text"]["text"]) <= 150
        assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in post.body["blocks"])
        assert len(json.dumps(post.body)) < 40_000
    assert len(_alert_lines(project, "storm.")) == 500


def test_429_then_500s_delivers_exactly_once_after_the_wait(project: AlertsProject,
                                                           bus: EventBus,
                                                           client: redis.Redis) -> None:
    bus.publish("flaky.job.failed", {})
    wait_for(lambda: project.slack.to("/flaky", ok_only=True), 20, message="the flaky post")
    requests = project.slack.to("/flaky")
    assert [p.status for p in requests] == [429, 500, 500, 200]
    assert requests[1].at - requests[0].at >= 1.9  # Retry-After: 2 honoured
    ledger = DeliveryLedger(client)
    notification = requests[-1].body["blocks"][1]["text"]["text"]
    assert "flaky.job" in requests[-1].body["text"] and notification
    records = [ledger.get(k.decode().split("delivery:", 1)[1])
               for k in client.scan_iter("pitstop:alerts:delivery:*")]
    flaky = [r for r in records if r.get("channel") == "flaky"]
    assert len(flaky) == 1 and flaky[0]["state"] == "delivered" and flaky[0]["attempts"] == "4"


def test_unacknowledged_alert_escalates_and_acknowledged_one_does_not(
        project: AlertsProject, bus: EventBus, client: redis.Redis) -> None:
    bus.publish("esc.acked.failed", {})
    bus.publish("esc.ignored.failed", {})
    lines = wait_for(lambda: len(_alert_lines(project, "esc.")) == 2 and
                     _alert_lines(project, "esc."), 10, message="both alerts")
    acked = next(line for line in lines if line["event"]["type"] == "esc.acked.failed")
    store = AlertStore(client)
    assert store.ack(acked["decisions"][0]["alert"], by="test", now=client.time()[0])[0]
    escalated = wait_for(lambda: project.slack.to("/managers"), 15, message="the escalation")
    assert "[ESCALATED]" in escalated[0].body["text"]
    assert "esc.ignored" in escalated[0].body["text"]
    assert len(project.slack.to("/first")) == 2
    # The acked one would have escalated at the same moment as the other: it did not.
    assert not any("esc.acked" in p.body["text"] for p in project.slack.to("/managers"))


def test_summary_mttr_matches_recorded_times(project: AlertsProject,
                                             client: redis.Redis) -> None:
    result = run_cli(["alerts", "summary", "--json"], project.env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    store = AlertStore(client)
    alerts = store.recent(since=0)
    delivered = store.delivered([a.id for a in alerts])
    by_severity: dict[str, list[float]] = {}
    for alert in alerts:
        if alert.id in delivered:
            by_severity.setdefault(alert.severity, []).append(
                delivered[alert.id] - alert.first_event_at)
    assert summary["alerts"] == len(alerts)
    for severity, values in by_severity.items():
        values.sort()
        spread = summary["time_to_deliver"][severity]
        assert spread["n"] == len(values)
        assert spread["p50"] == pytest.approx(values[(len(values) + 1) // 2 - 1], abs=0.002)
        assert spread["p95"] == pytest.approx(values[-(-95 * len(values) // 100) - 1], abs=0.002)
    assert summary["time_to_ack"]["failed"]["n"] == 1


def test_secrets_never_reach_logs_state_or_events(project: AlertsProject, bus: EventBus,
                                                  client: redis.Redis) -> None:
    # An event published by code (not redacted on its way in) carrying a secret.
    bus.publish("leak.job.failed", {"summary": "connect failed: DB_PASSWORD=Sup3rSecretValue"})
    (post,) = wait_for(lambda: [p for p in project.slack.to(SLACK_PATH)
                                if "leak.job" in p.body["text"]], 15, message="the leak alert")
    assert "DB_PASSWORD=***" in json.dumps(post.body)
    wait_for(lambda: any("leak.job" in m["data"] for m in project.mailbox.messages), 10,
             message="the leak e-mail")
    assert not any("Sup3rSecretValue" in m["data"] for m in project.mailbox.messages)
    assert not any("Sup3rSecretValue" in json.dumps(p.body) for p in project.slack.posts)
    leaks = []
    for path in [*project.state.rglob("*.jsonl"), *Path(project.home).glob("*.log")]:
        text = path.read_text(errors="replace")
        for secret in (SLACK_PATH, "hushhushsecrettoken", SMTP_PASSWORD, "Sup3rSecretValue"):
            if secret in text:
                leaks.append((path.name, secret))
    for _, fields in client.xrange("pitstop:events"):
        text = json.dumps({k.decode(): v.decode() for k, v in fields.items()})
        assert "hushhushsecrettoken" not in text and SMTP_PASSWORD not in text
    assert not leaks


@pytest.fixture
def kill_project(tmp_path: Path) -> Iterator[tuple[AlertsProject, threading.Event]]:
    yaml = """
leader_ttl: 1s
delivery: {lease: 3s, requeue_after: 2s}
channels:
  hold:
    type: slack
    webhook_url: ${TEST_SLACK_BASE}/hold
receivers:
  team: {channels: [hold]}
route: {receiver: team, group_wait: 0s}
"""
    with alerts_project(tmp_path, yaml) as proj:
        release = threading.Event()
        proj.slack.script("/hold", [(200, {})], hold=release)
        try:
            yield proj, release
        finally:
            release.set()


def test_worker_killed_mid_send_posts_exactly_once(
        kill_project: tuple[AlertsProject, threading.Event]) -> None:
    project, _release = kill_project
    worker = project.start_worker("first")
    client = redis.Redis.from_url(project.redis.url)
    bus = components.event_bus(client, Settings(), source="test")
    bus.publish("hold.one.failed", {})
    wait_for(lambda: project.slack.to("/hold"), 15, message="the post reaching Slack")
    worker.kill()  # SIGKILL while Slack holds the request: it was received, the reply never read
    project.start_worker("second")
    ledger = DeliveryLedger(client)

    def states() -> list[str]:
        return [ledger.get(k.decode().split("delivery:", 1)[1]).get("state", "")
                for k in client.scan_iter("pitstop:alerts:delivery:*")]

    wait_for(lambda: states() == ["in_doubt"], 20, message="the delivery judged in doubt")
    bus.publish("hold.two.failed", {})  # the restarted worker delivers the next one normally
    wait_for(lambda: len(project.slack.to("/hold")) == 2, 15, message="the next alert")
    posts = project.slack.to("/hold")
    assert ["hold.one" in p.body["text"] for p in posts] == [True, False]
    wait_for(lambda: sorted(states()) == ["delivered", "in_doubt"], 10, message="ledger")
    client.close()
