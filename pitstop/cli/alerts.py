"""``pitstop alerts``: test channels, dry-run routing, list and acknowledge alerts, silences, the
summary, and a check of ``config/alerts.yaml``."""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pitstop.alerts.channels import SendResult, send
from pitstop.alerts.config import AlertsConfig, load_alerts_config, parse_duration
from pitstop.alerts.engine import AlertEngine, Silence
from pitstop.alerts.model import iso
from pitstop.alerts.runtime import AlertsRuntime
from pitstop.alerts.summary import day_window, format_summary, gather
from pitstop.bus.events import make_event
from pitstop.bus.patterns import compile_pattern
from pitstop.cli.common import Context, pass_context, print_json, whoami
from pitstop.cli.events import parse_data
from pitstop.kernel.constants import LOG_ALERT_ACTIVITY
from pitstop.kernel.errors import ConfigError, ValidationError
from pitstop.kernel.ids import new_id
from pitstop.kernel.timeparse import parse_since

__all__ = ["COMMANDS", "alerts"]


def _config(ctx: Context) -> AlertsConfig:
    config = load_alerts_config(ctx.settings.config_dir, missing_ok=False)
    if config is None:  # pragma: no cover - missing_ok=False raises instead
        raise ConfigError("file not found")
    for secret in config.secrets:
        ctx.redactor.add_secret(secret)
    return config


def _runtime(ctx: Context) -> AlertsRuntime:
    client = ctx.redis()
    return AlertsRuntime(ctx.settings, client, ctx.bus(), ctx.redactor)


def _table(columns: list[str], rows: list[list[str]]) -> None:
    table = Table(show_lines=False, expand=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: values are anyone's strings
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@click.group("alerts", invoke_without_command=True)
@click.pass_context
def alerts(click_ctx: click.Context) -> None:
    """Alerting: routes in config/alerts.yaml, channels, acks, silences, the daily summary."""
    if click_ctx.invoked_subcommand is None:
        click.echo(click_ctx.get_help())


@alerts.command("check")
@pass_context
def check(ctx: Context) -> None:
    """Validate config/alerts.yaml (exit 2 naming file, key and line when it is wrong)."""
    config = _config(ctx)
    click.echo(f"{config.path}: ok ({len(config.file.channels)} channels, "
               f"{len(config.file.receivers)} receivers, {len(config.routes)} routes)")


def _test_notification() -> dict[str, Any]:
    now = time.time()
    return {"id": f"test.{new_id()}", "kind": "test", "receiver": "test", "created_at": now,
            "alert_ids": [], "more_alerts": 0, "more_events": 0,
            "alerts": [{"id": "test", "status": "firing", "severity": "info",
                        "subject": "pitstop alerts test", "group": {}, "route": "-",
                        "source": f"cli@{socket.gethostname()}", "count": 1,
                        "top_types": [["alerts.test", 1]], "ack_url": None,
                        "first_at": iso(now), "last_at": iso(now), "resolved_at": "",
                        "examples": [{"id": "-", "type": "alerts.test", "source": "cli",
                                      "time": iso(now),
                                      "summary": "a test message from pitstop alerts test"}]}]}


@alerts.command("test")
@click.argument("channel", required=False)
@pass_context
def test_command(ctx: Context, channel: str | None) -> None:
    """Send a test message through each channel (or CHANNEL) now; report each result."""
    config = _config(ctx)
    names = [channel] if channel else list(config.file.channels)
    if channel is not None and channel not in config.file.channels:
        raise ValidationError(f"unknown channel {channel!r} (defined: "
                              f"{', '.join(config.file.channels) or 'none'})")
    if not names:
        click.echo("no channels configured: alerts go to .state/alerts.jsonl only")
        return
    failed = 0
    for name in names:
        try:
            result = send(config.file.channels[name], _test_notification(), lambda: True)
        except Exception as exc:  # one channel's bug must not hide the others' results
            result = SendResult(False, error=f"internal error: {type(exc).__name__}")
        if result.ok:
            click.echo(f"{name}: ok")
        else:
            failed += 1
            click.echo(f"{name}: FAILED: {ctx.redactor.redact_text(result.error)}")
    if failed:
        sys.exit(1)


@alerts.command("dry-run")
@click.argument("event_type")
@click.argument("pairs", nargs=-1)
@click.option("--data", "data_json", help="Event data as a JSON object.")
@click.option("--source", help="The event's source.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def dry_run(ctx: Context, event_type: str, pairs: tuple[str, ...], data_json: str | None,
            source: str | None, as_json: bool) -> None:
    """Which routes and channels an event would reach, or why not (not subscribed, silenced,
    inhibited, grouped, throttled). Reads the open alerts and silences; changes nothing."""
    config = _config(ctx)
    event = make_event(event_type, parse_data(data_json, pairs),
                       source=source or f"cli@{socket.gethostname()}")
    engine = AlertEngine(config)
    silences: list[Silence] = []
    now = time.time()
    try:
        rt = _runtime(ctx)
        engine.open, engine.storm = rt.store.load_open()
        now = rt.clock()
        silences = rt.store.silences(now=now)
    except Exception as exc:
        click.echo(f"(Redis not reachable, judging without open alerts and silences: {exc})",
                   err=True)
    kind = engine.kind_of(event)
    report: dict[str, Any] = {"type": event.type, "severity": event.severity, "kind": kind}
    if kind == "alert":
        report["decisions"] = [d.to_dict() for d in engine.evaluate(
            event, now=now, silences=silences, apply=False)]
    elif kind == "resolve":
        report["resolves"] = [a.id for a in engine.resolve(event, now=now, apply=False)]
    else:
        report["why"] = _why_not(config, event.type, event.severity)
    if as_json:
        print_json(report)
        return
    click.echo(f"{event.type} (severity {event.severity}): "
               + {"alert": "alerts", "resolve": "resolves"}.get(kind or "", "no alert"))
    for decision in report.get("decisions", []):
        channels = ", ".join(decision["channels"]) or "log only"
        click.echo(f"  route {decision['route']} -> {decision['receiver']} ({channels}): "
                   f"{decision['outcome']}" + (f": {decision['detail']}"
                                               if decision["detail"] else ""))
    for alert_id in report.get("resolves", []):
        click.echo(f"  resolves alert {alert_id}")
    if kind == "resolve" and not report["resolves"]:
        click.echo("  no open alert shares its group")
    if "why" in report:
        click.echo(f"  {report['why']}")


def _why_not(config: AlertsConfig, event_type: str, severity: str) -> str:
    if event_type.startswith("alerting."):
        return "the alerting pipeline's own events never alert"
    if any(compile_pattern(p).matches(event_type) for p in config.file.subscriptions):
        return f"severity {severity} is below min_severity {config.file.min_severity}"
    return ("not subscribed (subscriptions: " + ", ".join(config.file.subscriptions) + ")")


@alerts.command("list")
@click.option("--since", default="1d", show_default=True, help="10m, 2h, 1d or an ISO time.")
@click.option("--open", "only_open", is_flag=True, help="Only alerts not yet resolved.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def list_command(ctx: Context, since: str, only_open: bool, as_json: bool) -> None:
    """Recent alerts: id, status, severity, subject, events, delivered, acknowledged."""
    rt = _runtime(ctx)
    start = parse_since(since, now=datetime.now(UTC)).timestamp()
    found = rt.store.recent(since=start)
    if only_open:
        found = [a for a in found if a.status == "firing"]
    ids = [a.id for a in found]
    acks, delivered = rt.store.acks(ids), rt.store.delivered(ids)
    rows = []
    for alert in found:
        ack = acks.get(alert.id)
        rows.append({"id": alert.id, "status": alert.status, "severity": alert.severity,
                     "subject": alert.group.get("subject") or alert.labels.get("type", ""),
                     "events": alert.count, "route": alert.route_id,
                     "receiver": alert.receiver, "created": iso(alert.created_at),
                     "delivered": iso(delivered.get(alert.id)),
                     "acked": f"{iso(ack[0])} by {ack[1]}" if ack else "",
                     "escalated": iso(alert.escalated_at)})
    if as_json:
        for row in rows:
            print_json(row)
        return
    if not rows:
        click.echo("no alerts", err=True)
        return
    columns = ["id", "status", "severity", "subject", "events", "created", "delivered", "acked"]
    _table(columns, [[str(row[c]) for c in columns] for row in rows])


@alerts.command("show")
@click.argument("alert_id")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def show(ctx: Context, alert_id: str, as_json: bool) -> None:
    """One alert: its group, counts, examples, acknowledgement, and every delivery of its
    messages (state, attempts, last error: "in_doubt" when a sender died mid-send)."""
    rt = _runtime(ctx)
    full = rt.store.resolve_id(alert_id)
    alert = rt.store.get(full)
    if alert is None:
        raise ValidationError(f"alert {full} is no longer stored")
    ack_record = rt.store.acks([full]).get(full)
    delivered = rt.store.delivered([full]).get(full)
    deliveries = rt.store.deliveries_of(full)
    if as_json:
        print_json({"alert": alert.to_dict(), "delivered": delivered,
                    "acked": {"at": ack_record[0], "by": ack_record[1]} if ack_record else None,
                    "deliveries": deliveries})
        return
    subject = alert.group.get("subject") or alert.labels.get("type", "")
    click.echo(f"alert {alert.id}: {alert.severity} {subject} ({alert.status})")
    click.echo(f"  route {alert.route_id} -> {alert.receiver}; group {json.dumps(alert.group)}")
    click.echo(f"  {alert.count} event(s) from {iso(alert.first_event_at)} to "
               f"{iso(alert.last_event_at)}; {alert.throttled} throttled")
    for event_type, count in sorted(alert.counts_by_type.items(), key=lambda i: -i[1])[:10]:
        click.echo(f"    {count} x {event_type}")
    took = f" ({delivered - alert.first_event_at:.1f}s after the event)" if delivered else ""
    click.echo(f"  first delivered: {iso(delivered) or '-'}{took}")
    if ack_record:
        click.echo(f"  acknowledged: {iso(ack_record[0])} by {ack_record[1]} "
                   f"({ack_record[0] - alert.first_event_at:.0f}s after the event)")
    if alert.escalated_at:
        click.echo(f"  escalated: {iso(alert.escalated_at)}")
    if alert.resolved_at:
        click.echo(f"  resolved: {iso(alert.resolved_at)} by event {alert.resolved_by}")
    for record in deliveries:
        error = f": {record['error']}" if record.get("error") else ""
        click.echo(f"  delivery {record['delivery']}: {record.get('state', '?')}, "
                   f"{record.get('attempts', '0')} attempt(s){error}")


@alerts.command("ack")
@click.argument("alert_id")
@click.option("--by", help="Who acknowledges (default user@host).")
@pass_context
def ack(ctx: Context, alert_id: str, by: str | None) -> None:
    """Acknowledge an alert (a unique prefix or suffix of its id will do): no repeats, no
    escalation; the time to acknowledge is recorded."""
    rt = _runtime(ctx)
    full = rt.store.resolve_id(alert_id)
    now = rt.clock()
    alert = rt.store.get(full)
    created, record = rt.store.ack(full, by=by or whoami(), now=now)
    if not created:
        click.echo(f"alert {full} was already acknowledged by {record.get('by')} at "
                   f"{iso(float(record.get('at', 0)))}")
        return
    took = "" if alert is None else f" ({now - alert.first_event_at:.0f}s after the event)"
    rt.state_log(LOG_ALERT_ACTIVITY).append({"kind": "ack", "alert": full, "by": record["by"],
                                             "via": "cli"})
    click.echo(f"acknowledged alert {full}{took}")


@alerts.command("silence")
@click.argument("pattern")
@click.option("--for", "duration", default="2h", show_default=True, help="30m, 2h, 1d …")
@click.option("--reason", required=True, help="Why (shown in `silences` and dry-run).")
@click.option("--match", "matchers", multiple=True, metavar="LABEL=VALUE",
              help="Also require a label (source=…, severity=…, data.branch=main; * globs).")
@pass_context
def silence(ctx: Context, pattern: str, duration: str, reason: str,
            matchers: tuple[str, ...]) -> None:
    """Mute alerts whose type matches PATTERN ('build.**', '**.failed') for a while."""
    compile_pattern(pattern)
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise ValidationError(f"--for: {exc}") from None
    if seconds <= 0:
        raise ValidationError("--for must be longer than 0s")
    labels: dict[str, str] = {}
    for item in matchers:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValidationError(f"--match expects LABEL=VALUE, got {item!r}")
        labels[name] = value
    rt = _runtime(ctx)
    now = rt.clock()
    made = Silence(id=f"s-{secrets.token_hex(4)}", pattern=compile_pattern(pattern).text,
                   starts_at=now, ends_at=now + seconds, reason=reason, created_by=whoami(),
                   matchers=labels)
    rt.store.add_silence(made)
    rt.state_log(LOG_ALERT_ACTIVITY).append({"kind": "silence", **made.to_dict()})
    click.echo(f"silence {made.id}: {made.pattern} until {iso(made.ends_at)}")


@alerts.command("silences")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def silences(ctx: Context, as_json: bool) -> None:
    """Silences in force."""
    rt = _runtime(ctx)
    found = rt.store.silences(now=rt.clock())
    if as_json:
        for item in found:
            print_json(item.to_dict())
        return
    if not found:
        click.echo("no silences", err=True)
        return
    _table(["id", "pattern", "matchers", "until", "by", "reason"],
           [[s.id, s.pattern, json.dumps(s.matchers) if s.matchers else "", iso(s.ends_at),
             s.created_by, s.reason] for s in found])


@alerts.command("unsilence")
@click.argument("silence_id")
@pass_context
def unsilence(ctx: Context, silence_id: str) -> None:
    """End a silence now."""
    rt = _runtime(ctx)
    ended = rt.store.end_silence(silence_id, now=rt.clock())
    rt.state_log(LOG_ALERT_ACTIVITY).append({"kind": "unsilence", "silence": ended.id})
    click.echo(f"silence {ended.id} ended")


@alerts.command("summary")
@click.option("--date", "day", help="YYYY-MM-DD (UTC); default today so far.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def summary(ctx: Context, day: str | None, as_json: bool) -> None:
    """Counts, the noisiest alerts, time to deliver and to acknowledge (p50/p95 per severity),
    and the alerting pipeline's own health, for one UTC day."""
    rt = _runtime(ctx)
    now = rt.clock()
    chosen = day or datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d")
    try:
        start, end = day_window(chosen)
    except ValueError:
        raise ValidationError(f"--date {chosen!r} is not YYYY-MM-DD") from None
    result = gather(rt.store, start, min(end, now + 1) if day is None else end)
    if as_json:
        print_json(result)
    else:
        click.echo(format_summary(result))


COMMANDS: list[click.Command] = [alerts]
