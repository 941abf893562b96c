"""Messages: Slack Block Kit within limits and escaped, e-mail headers refused on CR/LF, the
sandbox, ack link signatures, the summary."""

from __future__ import annotations

import json

import pytest

from pitstop.alerts.ack import AckLinks
from pitstop.alerts.channels import HeaderRefused, build_email, compose, retry_after_seconds
from pitstop.alerts.config import parse_alerts_config
from pitstop.alerts.model import Alert
from pitstop.alerts.summary import due_day, format_summary, summarize
from pitstop.alerts.templates import render

CONFIG = """
channels:
  slack: {type: slack, webhook_url: "${URL}"}
  mail:
    type: email
    host: smtp.example.com
    security: ssl
    from: pitstop@example.com
    to: [a@example.com, b@example.com]
  custom:
    type: email
    host: smtp.example.com
    security: ssl
    from: pitstop@example.com
    to: [a@example.com]
    title: "{{ alerts[0].examples[0].raw }}"
"""


def config():  # type: ignore[no-untyped-def]
    return parse_alerts_config(CONFIG, file="alerts.yaml", environ={"URL": "https://h/x"})


def alert_snapshot(n: int, **extra: object) -> dict:
    return {"id": f"id{n}", "status": "firing", "severity": "failed", "subject": f"svc{n}.job",
            "group": {}, "route": "root", "source": "ci<!channel>", "count": 20,
            "top_types": [[f"svc{n}.job.failed", 20]], "ack_url": f"https://pit/ack/{n}",
            "first_at": "t", "last_at": "t", "resolved_at": "",
            "examples": [{"id": "e", "type": f"svc{n}.job.failed", "source": "ci",
                          "time": "t", "summary": "x" * 2000, **extra}]}


def notification(alerts: int, **extra: object) -> dict:
    return {"id": "n1", "kind": "digest", "receiver": "team", "created_at": 0.0,
            "alerts": [alert_snapshot(n, **extra) for n in range(alerts)], "alert_ids": [],
            "more_alerts": 7, "more_events": 70}


def test_slack_message_stays_within_limits_and_escapes_event_text() -> None:
    payload = compose(config().file.channels["slack"], notification(40))
    blocks = payload["blocks"]
    assert len(blocks) <= 50
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if "text" in b)
    assert len(json.dumps(payload)) < 40_000
    assert "<!channel>" not in json.dumps(payload) and "&lt;!channel&gt;" in json.dumps(payload)
    assert payload["text"] == "47 alerts, 870 events"
    assert "27 more alert(s)" in json.dumps(blocks[-1])   # 20 shown of 40, plus 7 untold


def test_slack_fallback_text_escapes_event_data_in_the_title() -> None:
    # Slack reads the top-level text as mrkdwn (notifications, clients without blocks): a
    # subject made of event data (group_by: [data.branch]) must not mention or link there.
    note = {**notification(1), "more_alerts": 0, "more_events": 0}
    note["alerts"][0]["subject"] = "data.branch=<!channel> <https://evil.example|click>"
    payload = compose(config().file.channels["slack"], note)
    assert "<!channel>" not in payload["text"] and "<https://" not in payload["text"]
    assert "&lt;!channel&gt;" in payload["text"]
    header = payload["blocks"][0]["text"]
    assert header["type"] == "plain_text" and "<!channel>" in header["text"]  # shown as typed


def test_slack_templates_escape_event_data_inside_lists_and_dicts() -> None:
    context = {"alerts": [{"group": {"data.branch": "<!channel>"},
                           "examples": [{"summary": "<https://evil.example|x>"}]}]}
    text = render("{{ alerts[0].group }} {{ alerts[0].examples }} {{ alerts[0].count }}",
                  "fallback", context, slack=True)
    assert "<!channel>" not in text and "<https://" not in text
    assert "&lt;!channel&gt;" in text and "&lt;https://evil.example|x&gt;" in text
    assert render("{{ a }}<!here>", "fallback", {"a": 1}, slack=True) == "1<!here>"


def test_email_has_checked_headers_and_a_plain_body() -> None:
    message = build_email(config().file.channels["mail"], notification(1))
    assert message["To"] == "a@example.com, b@example.com"
    assert message["Subject"] == "8 alerts, 90 events"
    assert "https://pit/ack/0" in message.get_content()


@pytest.mark.parametrize(("raw", "folded"), [("x\r\nBcc: evil@example.com", "x Bcc: evil@example.com"),
                                             ("x\nX-Injected: 1", "x X-Injected: 1"),
                                             ("x\rY", "x Y"), ("x\x00Y", "x Y")])
def test_crlf_in_event_data_is_folded_out_of_the_subject(raw: str, folded: str) -> None:
    # Folded, not refused: a refusal would let the event's sender silence the group's e-mail.
    message = build_email(config().file.channels["custom"], notification(1, raw=raw))
    assert folded in message["Subject"]
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert "\r" not in message.as_string().split("\n\n", 1)[0].replace("\r\n", "\n")


@pytest.mark.parametrize("sender", ["pitstop@example.com\r\nBcc: evil@example.com", "a\nb", "a\x00b"])
def test_crlf_in_a_configured_header_value_is_refused(sender: str) -> None:
    channel = config().file.channels["custom"].model_copy(update={"sender": sender})
    with pytest.raises(HeaderRefused, match="CR, LF"):
        build_email(channel, notification(1))


def test_templates_are_sandboxed_and_fall_back_on_errors() -> None:
    context = {"alerts": [], "kind": "firing"}
    assert render("{{ ''.__class__.__mro__ }}", "fallback", context) == "fallback"
    assert render("{% for", "fallback", context) == "fallback"
    assert render("{{ kind | upper }}", "fallback", context) == "FIRING"


def test_ack_links_verify_and_expire() -> None:
    links = AckLinks(b"k" * 32, "http://127.0.0.1:8787/", 60)
    url = links.url("abc", now=1000.0)
    assert url.startswith("http://127.0.0.1:8787/alerts/ack/abc?exp=1060&sig=")
    sig = url.rsplit("sig=", 1)[1]
    assert links.verify("abc", "1060", sig, now=1000.0) is None
    assert "expired" in (links.verify("abc", "1060", sig, now=1061.0) or "")
    assert "signature" in (links.verify("abd", "1060", sig, now=1000.0) or "")
    assert "signature" in (links.verify("abc", "9999", sig, now=1000.0) or "")


@pytest.mark.parametrize(("header", "seconds"), [
    ("2", 2.0), ("0.5", 0.5), (None, None), ("soon", None), ("999999", 3600.0)])
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


def _alert(n: int, severity: str, first: float, count: int) -> Alert:
    return Alert(id=f"a{n}", group_key=f"k{n}", route_id="root", receiver="team",
                 group={"subject": f"s{n}"}, labels={}, severity=severity, source=f"host{n % 2}",
                 created_at=first + 1, first_event_at=first, last_event_at=first, count=count)


def test_summary_figures_are_nearest_rank_percentiles_of_recorded_times() -> None:
    alerts = [_alert(n, "failed" if n < 4 else "critical", 1000.0 + n, n + 1) for n in range(6)]
    delivered = {"a0": 1002.0, "a1": 1005.0, "a2": 1012.0, "a3": 1043.0, "a4": 1010.0}
    acks = {"a0": (1060.0, "ann"), "a4": (1304.0, "bob")}
    summary = summarize(alerts, acks=acks, delivered=delivered,
                        stats={"retries": 3, "fallbacks": 1}, dead_letters=2,
                        start=0.0, end=2000.0)
    assert summary["time_to_deliver"]["failed"] == {"n": 4, "p50": 4.0, "p95": 40.0}
    assert summary["time_to_deliver"]["critical"] == {"n": 1, "p50": 6.0, "p95": 6.0}
    assert summary["time_to_ack"]["critical"] == {"n": 1, "p50": 300.0, "p95": 300.0}
    assert summary["noisiest"][0]["events"] == 6
    assert summary["by_severity"] == {"failed": 4, "critical": 2}
    assert summary["pipeline"]["retries"] == 3 and summary["pipeline"]["dead_letters"] == 2
    assert summary["unacknowledged"] == 4
    text = format_summary(summary)
    assert "event -> delivered [failed]: p50 4.0s, p95 40.0s (n=4)" in text


@pytest.mark.parametrize(("now", "at", "day"), [
    (1_800_000_000.0, "08:00", "2027-01-14"),     # 2027-01-15 08:00:00 UTC
    (1_800_000_000.0 - 1, "08:00", None), (1_800_000_000.0, "09:30", None)])
def test_summary_is_due_after_its_time_of_day(now: float, at: str, day: str | None) -> None:
    assert due_day(now, at) == day
