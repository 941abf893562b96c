"""The channels: Slack incoming webhooks, e-mail over SMTP, a generic JSON webhook, Apprise.

Each ``send`` calls ``on_posting`` once the connection is up and just before the message's first
byte goes out (the ledger's idempotency point), and returns a :class:`SendResult` that never
holds the webhook URL or a password: errors are described, not quoted.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx

from pitstop.alerts.config import (
    AppriseChannel,
    ChannelModel,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
)
from pitstop.alerts.templates import DEFAULT_TEXT, DEFAULT_TITLE, render, slack_payload
from pitstop.kernel.errors import ValidationError

__all__ = ["HeaderRefused", "SendResult", "build_email", "compose", "send"]

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600.0
MAX_SUBJECT_CHARS = 200


class HeaderRefused(ValidationError):
    """A value bound for an e-mail header holds CR, LF or NUL (header injection)."""


@dataclass(frozen=True)
class SendResult:
    ok: bool
    permanent: bool = False
    retry_after: float | None = None
    """Seconds the service asked us to wait (HTTP 429 ``Retry-After``)."""
    error: str = ""
    status: int | None = None


class _Aborted(Exception):
    pass


# --- composing --------------------------------------------------------------------------------
def context_of(notification: dict[str, Any]) -> dict[str, Any]:
    alerts = list(notification.get("alerts", []))
    return {**notification, "alerts": alerts,
            "total_alerts": len(alerts) + int(notification.get("more_alerts", 0)),
            "total_events": sum(int(a.get("count", 0)) for a in alerts)
            + int(notification.get("more_events", 0))}


def title_of(channel: ChannelModel, notification: dict[str, Any],
             context: dict[str, Any] | None = None) -> str:
    """The rendered title on one line: CR, LF, NUL and runs of whitespace fold to one space."""
    rendered = render(channel.title, DEFAULT_TITLE,
                      context_of(notification) if context is None else context)
    return " ".join(rendered.replace("\x00", " ").split())


def text_of(channel: ChannelModel, notification: dict[str, Any], *, slack: bool = False) -> str:
    return render(channel.text, DEFAULT_TEXT, context_of(notification), slack=slack)


def check_header(name: str, value: str) -> str:
    if any(char in value for char in "\r\n\x00"):
        raise HeaderRefused(f"e-mail header {name} refused: its value contains CR, LF or NUL "
                            "(header injection)")
    return value


def build_email(channel: EmailChannel, notification: dict[str, Any]) -> EmailMessage:
    """The message; raises :class:`HeaderRefused` when a configured header value (From, To)
    holds CR/LF/NUL.

    The subject is folded onto one line instead: it holds event data (a ``data.*`` group label, a
    custom title), and refusing it would let whoever sends the first event of a group with a
    CR/LF in it silence that group's e-mail, a real failure joining it included."""
    context = context_of(notification)
    subject = check_header("Subject", title_of(channel, notification, context))
    message = EmailMessage()
    message["Subject"] = subject[:MAX_SUBJECT_CHARS]
    message["From"] = check_header("From", channel.sender)
    message["To"] = ", ".join(check_header("To", address) for address in channel.to)
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain="pitstop.local")
    message["X-Pitstop-Notification"] = check_header("X-Pitstop-Notification",
                                                     str(notification.get("id", "")))
    message.set_content(render(channel.text, DEFAULT_TEXT, context))
    return message


def compose(channel: ChannelModel, notification: dict[str, Any]) -> Any:
    """What ``channel`` sends for ``notification`` (JSON payload, EmailMessage, title/body)."""
    if isinstance(channel, SlackChannel):
        custom = text_of(channel, notification, slack=True) if channel.text else None
        return slack_payload(context_of(notification), title_of(channel, notification), custom)
    if isinstance(channel, EmailChannel):
        return build_email(channel, notification)
    if isinstance(channel, WebhookChannel):
        return {"title": title_of(channel, notification),
                "text": text_of(channel, notification), "notification": notification}
    return (title_of(channel, notification), text_of(channel, notification))


# --- sending ----------------------------------------------------------------------------------
_clients: dict[tuple[int, float], httpx.Client] = {}
_clients_lock = threading.Lock()


def _client(timeout: float) -> httpx.Client:
    """One pooled client per process and timeout (keep-alive to the same webhook host)."""
    key = (os.getpid(), timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=True)
            _clients[key] = client
        return client


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        import time

        seconds = moment.timestamp() - time.time()
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def post_json(url: str, payload: Any, *, headers: dict[str, str] | None, timeout: float,
              on_posting: Callable[[], bool]) -> SendResult:
    """POST ``payload``; the result describes failures without the URL."""
    posting = [False]

    def trace(name: str, info: dict[str, Any]) -> None:
        if name.endswith("send_request_headers.started") and not posting[0]:
            posting[0] = True
            if not on_posting():
                raise _Aborted

    body = json.dumps(payload, separators=(",", ":")).encode()
    sent_headers = {"Content-Type": "application/json", "User-Agent": "pitstop-alerts",
                    **(headers or {})}
    try:
        response = _client(timeout).post(url, content=body, headers=sent_headers,
                                         extensions={"trace": trace})
    except _Aborted:
        return SendResult(False, error="our claim on the delivery was lost before sending")
    except httpx.TimeoutException:
        return SendResult(False, error=f"no answer within {timeout:g}s")
    except httpx.HTTPError as exc:
        # str(exc) may quote the URL (a secret): name the kind of failure only.
        return SendResult(False, error=f"request failed ({type(exc).__name__})")
    except ValueError:
        return SendResult(False, permanent=True, error="the URL is not a valid http(s) URL")
    status = response.status_code
    if 200 <= status < 300:
        return SendResult(True, status=status)
    if status == 429:
        wait = retry_after_seconds(response.headers.get("retry-after"))
        return SendResult(False, retry_after=1.0 if wait is None else wait,
                          error="429 Too Many Requests", status=status)
    reason = response.text[:200].replace("\n", " ") if response.text else ""
    permanent = 400 <= status < 500 and status not in (408, 425)
    return SendResult(False, permanent=permanent, error=f"HTTP {status} {reason}".strip(),
                      status=status)


def send_email(channel: EmailChannel, message: EmailMessage,
               on_posting: Callable[[], bool]) -> SendResult:
    context = ssl.create_default_context()
    if not channel.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    host, port = channel.host, channel.effective_port
    try:
        smtp: smtplib.SMTP
        if channel.security == "ssl":
            smtp = smtplib.SMTP_SSL(host, port, timeout=channel.timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=channel.timeout)
        with smtp:
            smtp.ehlo()
            if channel.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if channel.username is not None and channel.password is not None:
                smtp.login(channel.username, channel.password)
            if not on_posting():
                return SendResult(False, error="our claim on the delivery was lost before sending")
            smtp.send_message(message, from_addr=channel.sender, to_addrs=list(channel.to))
    except smtplib.SMTPAuthenticationError as exc:
        return SendResult(False, permanent=True, error=f"SMTP login refused ({exc.smtp_code})")
    except smtplib.SMTPRecipientsRefused:
        return SendResult(False, permanent=True, error="SMTP server refused the recipients")
    except smtplib.SMTPResponseException as exc:
        return SendResult(False, permanent=500 <= exc.smtp_code < 600,
                          error=f"SMTP {exc.smtp_code}")
    except (smtplib.SMTPException, OSError) as exc:
        return SendResult(False, error=f"SMTP {host}:{port}: {type(exc).__name__}")
    return SendResult(True)


def send_apprise(channel: AppriseChannel, title: str, body: str,
                 on_posting: Callable[[], bool]) -> SendResult:
    try:
        import apprise
    except ImportError:
        return SendResult(False, permanent=True,
                          error="apprise is not installed (pip install 'pitstop[alerts-apprise]')")
    # Apprise logs the services' URLs, which hold their tokens: keep its log quiet.
    logging.getLogger("apprise").setLevel(logging.CRITICAL)
    notifier = apprise.Apprise()
    for url in channel.urls:
        if not notifier.add(url):
            return SendResult(False, permanent=True, error="Apprise does not understand a URL")
    if not on_posting():
        return SendResult(False, error="our claim on the delivery was lost before sending")
    ok = notifier.notify(body=body, title=title)
    return SendResult(True) if ok else SendResult(False, error="Apprise could not notify")


def send(channel: ChannelModel, notification: dict[str, Any],
         on_posting: Callable[[], bool]) -> SendResult:
    """Compose and send; a refused header is a permanent failure (nothing is sent)."""
    try:
        message = compose(channel, notification)
    except HeaderRefused as exc:
        return SendResult(False, permanent=True, error=str(exc))
    if isinstance(channel, SlackChannel):
        return post_json(channel.webhook_url, message, headers=None, timeout=channel.timeout,
                         on_posting=on_posting)
    if isinstance(channel, WebhookChannel):
        return post_json(channel.url, message, headers=channel.headers, timeout=channel.timeout,
                         on_posting=on_posting)
    if isinstance(channel, EmailChannel):
        return send_email(channel, message, on_posting)
    title, body = message
    return send_apprise(channel, title, body, on_posting)


def channel_url(channel: ChannelModel) -> str | None:
    """The URL whose shared rate limit applies (Slack and webhooks)."""
    if isinstance(channel, SlackChannel):
        return channel.webhook_url
    if isinstance(channel, WebhookChannel):
        return channel.url
    return None
