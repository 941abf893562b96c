"""The alerting decisions, pure: routing, grouping, throttling, silences, inhibition, storms,
resolution, escalation and the timing functions, driven by an explicit ``now``."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from pitstop.alerts.config import parse_alerts_config
from pitstop.alerts.engine import AlertEngine, Silence
from pitstop.alerts.labels import event_labels, subject_of
from pitstop.alerts.model import Alert
from pitstop.alerts.timing import backoff_delay, next_flush_at, percentile, storm_admits
from pitstop.bus.events import Event, make_event

T0 = 1_800_000_000.0
CONFIG = """
channels:
  slack: {type: slack, webhook_url: "${URL}"}
  pager: {type: slack, webhook_url: "${URL}/pager"}
receivers:
  team: {channels: [slack], storm: {max_messages: 2, window: 60s}}
  oncall: {channels: [pager]}
  bosses: {channels: [slack]}
route:
  receiver: team
  group_wait: 10s
  group_interval: 60s
  repeat_interval: 1h
  throttle_window: 5m
  routes:
    - match: {type: "deploy.prod.**", severity: [critical]}
      receiver: oncall
      continue: true
      escalate_after: 15m
      escalate_to: bosses
    - match: {type: "deploy.**"}
      receiver: team
      group_by: [subject, data.branch]
inhibit_rules:
  - source: {severity: critical}
    target: {severity: [warning, error, failed]}
    equal: [subject]
"""


def engine() -> AlertEngine:
    ids = (f"alert{n}" for n in itertools.count(1))
    return AlertEngine(parse_alerts_config(CONFIG, file="alerts.yaml",
                                           environ={"URL": "https://hooks.example/x"}),
                       id_factory=lambda: next(ids))


def event(kind: str, data: dict | None = None, *, at: float = T0, source: str = "ci") -> Event:
    return make_event(kind, data, source=source, now=datetime.fromtimestamp(at, tz=UTC))


@pytest.mark.parametrize(("kind", "data", "expected"), [
    ("build.linux.failed", None, "alert"),
    ("build.linux.error", None, "alert"),
    ("db.critical", None, "alert"),
    ("build.linux.failed", {"severity": "info"}, None),        # explicitly downgraded
    ("phase.1.completed", None, "resolve"),
    ("build.linux.succeeded", None, "resolve"),
    ("build.linux.info", None, None),
    ("deploy.staging.started", {"severity": "critical"}, None),  # not subscribed
    ("alerting.degraded", {"severity": "critical"}, None),     # never pages about itself
    ("alert.nightly.warning", {"severity": "warning"}, "alert"),
])
def test_which_events_alert(kind: str, data: dict | None, expected: str | None) -> None:
    assert engine().kind_of(event(kind, data)) == expected


@pytest.mark.parametrize(("kind", "subject"), [
    ("build.linux.failed", "build.linux"), ("build.linux.succeeded", "build.linux"),
    ("db.critical", "db"), ("deploy", "deploy"), ("a.b.c", "a.b.c")])
def test_subject(kind: str, subject: str) -> None:
    assert subject_of(kind) == subject


def test_routes_match_type_severity_and_data_and_continue_falls_through() -> None:
    eng = engine()
    crit = eng.evaluate(event("deploy.prod.failed", {"severity": "critical", "branch": "main"}),
                        now=T0)
    assert [(d.route, d.receiver, d.group) for d in crit] == [
        ("root.0", "oncall", {"subject": "deploy.prod"}),
        ("root.1", "bosses" if False else "team", {"subject": "deploy.prod",
                                                     "data.branch": "main"})]
    plain = eng.evaluate(event("build.linux.failed"), now=T0)
    assert [(d.route, d.receiver, d.channels) for d in plain] == [("root", "team", ("slack",))]


def test_grouping_waits_then_sends_one_message_for_the_group() -> None:
    eng = engine()
    first = eng.evaluate(event("build.linux.failed", source="a"), now=T0)
    assert first[0].outcome == "new"
    assert eng.evaluate(event("build.linux.failed", source="b"), now=T0 + 1)[0].outcome == \
        "grouped"
    eng.tick(T0 + 9.9)
    assert eng.take_changes()[3] == []                         # group_wait not over
    eng.tick(T0 + 10)
    outbox = eng.take_changes()[3]
    assert len(outbox) == 1
    assert outbox[0].notification["kind"] == "firing"
    assert outbox[0].notification["alerts"][0]["count"] == 2
    assert outbox[0].channels == ("slack",)


def test_throttle_counts_a_repeat_of_the_same_dedupe_key_without_telling() -> None:
    eng = engine()
    eng.evaluate(event("build.linux.failed"), now=T0)
    eng.tick(T0 + 10)
    eng.take_changes()
    again = eng.evaluate(event("build.linux.failed"), now=T0 + 20)
    assert again[0].outcome == "throttled"
    other = eng.evaluate(event("build.linux.failed", source="other"), now=T0 + 21)
    assert other[0].outcome == "grouped"
    eng.tick(T0 + 69.9)
    assert eng.take_changes()[3] == []
    eng.tick(T0 + 70)                                            # group_interval after the first
    (message,) = eng.take_changes()[3]
    assert message.notification["alerts"][0]["count"] == 3


def test_silence_and_inhibition_keep_alerts_quiet_but_decided() -> None:
    eng = engine()
    silence = Silence("s-1", "build.**", T0, T0 + 60, "maintenance")
    muted = eng.evaluate(event("build.linux.failed"), now=T0, silences=[silence])
    assert muted[0].outcome == "silenced" and "maintenance" in muted[0].detail
    assert eng.evaluate(event("build.linux.failed"), now=T0 + 61,
                        silences=[silence])[0].outcome == "new"
    eng.evaluate(event("db.primary.critical"), now=T0)
    inhibited = eng.evaluate(event("db.primary.failed"), now=T0 + 1)
    assert inhibited[0].outcome == "inhibited"
    assert eng.evaluate(event("db.replica.failed"), now=T0 + 1)[0].outcome == "new"


def test_a_storm_of_groups_becomes_a_few_messages_and_one_digest() -> None:
    eng = engine()
    for n in range(500):
        eng.evaluate(event(f"svc{n % 25}.job.failed", {"n": n}), now=T0 + n * 0.02)
    eng.tick(T0 + 20)
    changed, _, _, outbox = eng.take_changes()
    assert len(outbox) == 2                                      # max_messages 2 per window
    assert sum(a.count for a in changed) == 500
    eng.tick(T0 + 79.9)
    assert eng.take_changes()[3] == []
    eng.tick(T0 + 80)                                            # the window reopens
    (digest,) = eng.take_changes()[3]
    note = digest.notification
    assert note["kind"] == "digest"
    assert len(note["alerts"]) == 20 and note["more_alerts"] == 3
    shown = sum(a["count"] for a in note["alerts"]) + note["more_events"]
    assert shown == 500 - sum(m.notification["alerts"][0]["count"] for m in outbox)


def test_success_resolves_the_same_group_and_tells_once() -> None:
    eng = engine()
    eng.evaluate(event("build.linux.failed"), now=T0)
    eng.tick(T0 + 10)
    eng.take_changes()
    assert eng.resolve(event("build.windows.succeeded"), now=T0 + 20) == []
    (resolved,) = eng.resolve(event("build.linux.succeeded"), now=T0 + 20)
    eng.tick(T0 + 69)
    assert eng.take_changes()[3] == []
    eng.tick(T0 + 70)
    _, closed, _, outbox = eng.take_changes()
    assert [o.notification["kind"] for o in outbox] == ["resolved"]
    assert next(iter(closed.values())).id == resolved.id and not eng.open


def test_resolved_before_first_message_closes_quietly() -> None:
    eng = engine()
    eng.evaluate(event("build.linux.failed"), now=T0)
    eng.resolve(event("build.linux.succeeded"), now=T0 + 1)
    eng.tick(T0 + 100)
    assert eng.take_changes()[3] == [] and not eng.open


@pytest.mark.parametrize(("acked", "expected"), [(False, ["escalation"]), (True, [])])
def test_escalation_only_when_unacknowledged(acked: bool, expected: list[str]) -> None:
    eng = engine()
    decisions = eng.evaluate(event("deploy.prod.failed", {"severity": "critical"}), now=T0)
    eng.tick(T0 + 10)
    eng.take_changes()
    acks = {decisions[0].alert_id: (T0 + 60, "ann")} if acked else {}
    eng.tick(T0 + 899, acked=acks)
    assert eng.take_changes()[3] == []
    eng.tick(T0 + 900, acked=acks)
    outbox = eng.take_changes()[3]
    assert [o.notification["kind"] for o in outbox if o.notification["receiver"] == "bosses"] \
        == expected


def _alert(**fields: object) -> Alert:
    base = {"id": "a", "group_key": "k", "route_id": "root", "receiver": "team", "group": {},
            "labels": {}, "severity": "failed", "source": "s", "created_at": 100.0,
            "first_event_at": 100.0, "last_event_at": 100.0}
    return Alert(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "due"), [
    ({"pending": 1}, 110.0),                                     # group_wait
    ({"pending": 0}, None),                                      # nothing to tell
    ({"pending": 2, "notified": 1, "last_notified_at": 200.0}, 260.0),   # group_interval
    ({"notified": 1, "last_notified_at": 200.0}, 3800.0),        # repeat_interval
    ({"notified": 1, "last_notified_at": 200.0, "acked_at": 300.0}, None),  # acked: no repeat
    ({"status": "resolved", "resolved_at": 400.0, "notified": 1, "last_notified_at": 200.0},
     400.0),
    ({"status": "resolved", "resolved_at": 210.0, "notified": 1, "last_notified_at": 200.0},
     260.0),
    ({"status": "resolved", "resolved_at": 400.0, "notified": 1, "resolved_notified": True},
     None),
    ({"pending": 3, "in_digest": True}, None),
])
def test_next_flush_at(fields: dict, due: float | None) -> None:
    route = engine().config.root
    assert next_flush_at(_alert(**fields), route) == due


@pytest.mark.parametrize(("sent", "limit", "now", "admits"), [
    ([], 2, 100.0, True), ([90.0], 2, 100.0, True), ([90.0, 95.0], 2, 100.0, False),
    ([30.0, 95.0], 2, 100.0, True),                              # 30 fell out of the window
])
def test_storm_admits(sent: list[float], limit: int, now: float, admits: bool) -> None:
    assert storm_admits(sent, limit, 60.0, now) is admits


@pytest.mark.parametrize(("attempt", "rng", "delay"), [
    (1, 0.0, 1.0), (1, 1.0, 2.0), (2, 0.0, 2.0), (3, 0.5, 6.0), (10, 1.0, 30.0), (10, 0.0, 15.0)])
def test_backoff_is_exponential_with_jitter_and_capped(attempt: int, rng: float,
                                                      delay: float) -> None:
    assert backoff_delay(attempt, base=2.0, cap=30.0, rng=lambda: rng) == delay


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 50, None), ([5.0], 95, 5.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
    ([1.0, 2.0, 3.0, 4.0], 95, 4.0), ([float(n) for n in range(1, 101)], 95, 95.0)])
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_labels_keep_scalar_data_only() -> None:
    labels = event_labels(event("build.x.failed", {"branch": "main", "n": 3, "ok": True,
                                                   "nested": {"a": 1}}))
    assert labels["data.branch"] == "main" and labels["data.n"] == "3"
    assert labels["data.ok"] == "true" and "data.nested" not in labels
