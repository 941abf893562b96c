"""Messages: sandboxed Jinja2 templates with good defaults, and the shapes each channel sends.

A notification is rendered from its JSON snapshot (never from live objects): the sandbox sees
dicts, lists and strings only. Slack messages are Block Kit, cut to Slack's limits (50 blocks,
150 characters in a header, 3000 in a section); user-provided values are escaped for Slack's
mrkdwn (``&``, ``<``, ``>``), so event data cannot mention ``@channel`` or forge links.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from pitstop.kernel.errors import ConfigError

if TYPE_CHECKING:
    from pitstop.alerts.config import AlertsConfig
    from pitstop.kernel.configfile import Document

__all__ = ["DEFAULT_TEXT", "DEFAULT_TITLE", "check_templates", "render", "slack_payload"]

log = logging.getLogger(__name__)

SLACK_MAX_BLOCKS = 50
SLACK_HEADER_CHARS = 150
SLACK_SECTION_CHARS = 3000
SLACK_TEXT_CHARS = 3000
SLACK_MAX_ALERT_SECTIONS = 20

DEFAULT_TITLE = (
    "{% if kind == 'resolved' %}[RESOLVED] {% elif kind == 'escalation' %}[ESCALATED] "
    "{% elif kind == 'repeat' %}[STILL FIRING] {% elif kind == 'test' %}[TEST] {% endif %}"
    "{% if kind == 'summary' %}pitstop alerts: daily summary {{ date }}"
    "{% elif total_alerts == 1 %}[{{ alerts[0].severity | upper }}] {{ alerts[0].subject }}"
    "{% if alerts[0].count > 1 %} ({{ alerts[0].count }} events){% endif %}"
    "{% else %}{{ total_alerts }} alerts, {{ total_events }} events{% endif %}"
)

DEFAULT_TEXT = (
    "{% if kind == 'summary' %}{{ summary_text }}{% else %}"
    "{% for a in alerts %}"
    "* {{ a.severity | upper }} {{ a.subject }}: {{ a.count }} event(s) from {{ a.source }}"
    ", first {{ a.first_at }}{% if a.status == 'resolved' %}, resolved {{ a.resolved_at }}"
    "{% endif %}\n"
    "{% for t, n in a.top_types %}    {{ n }} x {{ t }}\n{% endfor %}"
    "{% for e in a.examples %}    e.g. {{ e.type }} {{ e.id }} at {{ e.time }}"
    "{% if e.summary %}: {{ e.summary }}{% endif %}{% if e.link %} ({{ e.link }}){% endif %}\n"
    "{% endfor %}"
    "    alert {{ a.id }}{% if a.ack_url and a.status != 'resolved' %}, acknowledge: "
    "{{ a.ack_url }}{% endif %}\n"
    "{% endfor %}"
    "{% if more_alerts %}... and {{ more_alerts }} more alert(s), {{ more_events }} event(s)\n"
    "{% endif %}{% endif %}"
)


def _environment(escape: Callable[[str], str] | None) -> SandboxedEnvironment:
    def finalize(value: Any) -> Any:
        # Not only strings: a list or dict prints its items' text unescaped
        # (``{{ a.group }}``, ``{{ a.examples }}`` hold event data).
        if escape is not None:
            return escape(value if isinstance(value, str) else str(value))
        return value

    return SandboxedEnvironment(undefined=jinja2.Undefined, autoescape=False,
                                finalize=finalize, keep_trailing_newline=True)


_PLAIN = _environment(None)


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK = _environment(slack_escape)


def render(template: str | None, default: str, context: dict[str, Any], *,
           slack: bool = False) -> str:
    """Render ``template`` (or ``default``); a template failing at run time falls back to the
    default (logged), so a typo in a template never swallows an alert."""
    if template is not None:
        try:
            return _compiled(template, slack).render(context)
        except Exception as exc:
            log.warning("alert template failed (%s: %s); using the default",
                        type(exc).__name__, exc)
    return _compiled(default, slack).render(context)


@functools.lru_cache(maxsize=256)
def _compiled(source: str, slack: bool) -> jinja2.Template:
    return (_SLACK if slack else _PLAIN).from_string(source)


def check_templates(config: AlertsConfig, doc: Document) -> None:
    """Refuse a template that does not compile (ConfigError naming its key and line)."""
    for name, channel in config.file.channels.items():
        for key in ("title", "text"):
            source = getattr(channel, key)
            if source is None:
                continue
            try:
                _PLAIN.parse(source)
            except jinja2.TemplateSyntaxError as exc:
                path = ("channels", name, key)
                from pitstop.kernel.configfile import format_key_path

                raise ConfigError(f"template syntax error: {exc.message}", file=doc.file,
                                  key_path=format_key_path(path),
                                  line=doc.line_of(path)) from None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _alert_section(alert: dict[str, Any]) -> dict[str, Any]:
    esc = slack_escape
    lines = [f"*{esc(str(alert.get('severity', '')).upper())}* `{esc(alert.get('subject', ''))}`"
             f" — {alert.get('count', 0)} event(s) from {esc(str(alert.get('source', '')))}"]
    if alert.get("status") == "resolved":
        lines.append(f"resolved at {esc(str(alert.get('resolved_at', '')))}")
    types = ", ".join(f"{n} x `{esc(t)}`" for t, n in alert.get("top_types", []))
    if types:
        lines.append(types)
    for example in alert.get("examples", [])[:3]:
        line = f"• `{esc(example.get('type', ''))}` at {esc(example.get('time', ''))}"
        if example.get("summary"):
            line += f": {esc(_cut(str(example['summary']), 300))}"
        link = example.get("link")
        if link:
            line += f" (<{link}|run>)"
        elif example.get("run_id"):
            line += f" (run `{esc(str(example['run_id']))}`: `pitstop show`)"
        lines.append(line)
    ack = alert.get("ack_url")
    footer = f"alert `{esc(alert.get('id', ''))}`"
    if ack and alert.get("status") != "resolved":
        footer += f" · <{ack}|acknowledge>"
    lines.append(footer)
    return {"type": "section", "text": {"type": "mrkdwn",
                                        "text": _cut("\n".join(lines), SLACK_SECTION_CHARS)}}


def slack_payload(context: dict[str, Any], title: str, text: str | None) -> dict[str, Any]:
    """A Block Kit message within Slack's limits. ``text``: a custom body (else per-alert
    sections)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text",
                                    "text": _cut(title, SLACK_HEADER_CHARS) or "pitstop alert"}}]
    if text is not None:
        for start in range(0, min(len(text), SLACK_SECTION_CHARS * 10), SLACK_SECTION_CHARS):
            blocks.append({"type": "section", "text": {
                "type": "mrkdwn", "text": text[start:start + SLACK_SECTION_CHARS]}})
    else:
        alerts = context.get("alerts", [])
        for alert in alerts[:SLACK_MAX_ALERT_SECTIONS]:
            blocks.append(_alert_section(alert))
        hidden = len(alerts) - SLACK_MAX_ALERT_SECTIONS
        more_alerts = context.get("more_alerts", 0) + max(0, hidden)
        if more_alerts:
            blocks.append({"type": "context", "elements": [{
                "type": "mrkdwn",
                "text": f"… and {more_alerts} more alert(s), {context.get('more_events', 0)} "
                        "more event(s): `pitstop alerts list`"}]})
    blocks = blocks[:SLACK_MAX_BLOCKS]
    # The header is plain text, but Slack reads the top-level text (the notification's words)
    # as mrkdwn: a title holding event data must be escaped there too.
    return {"text": _cut(slack_escape(title), SLACK_TEXT_CHARS), "blocks": blocks}
