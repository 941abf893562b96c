"""The ack link's endpoint, mounted by ``pitstop serve``: ``GET /alerts/ack/<id>?exp=&sig=``
shows the alert and a button; the button's ``POST`` acknowledges it.

GET never acknowledges: chat clients and mail scanners open links to preview them, and a
preview must not silence an alert. Both verify the link's signature and expiry.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from pitstop.alerts.ack import AckLinks, signing_key
from pitstop.alerts.model import iso
from pitstop.alerts.runtime import redis_seconds
from pitstop.alerts.store import AlertStore

__all__ = ["ack_routes"]

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>pitstop alert</title>
<meta name="robots" content="noindex"></head><body style="font-family: sans-serif">{}</body></html>"""
_MAX_FIELD = 200
_MAX_BODY = 4096


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(body), status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


class _AckEndpoint:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.store = AlertStore(client)
        self.clock = redis_seconds(client)
        self._links: AckLinks | None = None

    def links(self) -> AckLinks:
        if self._links is None:
            self._links = AckLinks(signing_key(self.client), "", 0)
        return self._links

    def _check(self, alert_id: str, expires: str, signature: str) -> str | None:
        if len(alert_id) > _MAX_FIELD or len(expires) > 20 or len(signature) > _MAX_FIELD:
            return "the link is malformed"
        return self.links().verify(alert_id, expires, signature, now=self.clock())

    async def show(self, request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        expires = request.query_params.get("exp", "")
        signature = request.query_params.get("sig", "")
        return await run_in_threadpool(self._show, alert_id, expires, signature)

    def _show(self, alert_id: str, expires: str, signature: str) -> Response:
        problem = self._check(alert_id, expires, signature)
        if problem is not None:
            return _page(f"<p>{html.escape(problem)}</p>", 403)
        alert = self.store.get(alert_id)
        if alert is None:
            return _page("<p>This alert is no longer known.</p>", 404)
        acked = self.store.acks([alert_id]).get(alert_id)
        esc = html.escape
        info = (f"<h1>{esc(alert.severity.upper())}: "
                f"{esc(alert.group.get('subject') or alert.labels.get('type', ''))}</h1>"
                f"<p>{alert.count} event(s) since {esc(iso(alert.first_event_at))}, "
                f"status {esc(alert.status)}. Alert <code>{esc(alert.id)}</code>.</p>")
        if acked is not None:
            return _page(info + f"<p>Acknowledged by {esc(acked[1])} at "
                                f"{esc(iso(acked[0]))}.</p>")
        form = (f'<form method="post"><input type="hidden" name="exp" value="{esc(expires)}">'
                f'<input type="hidden" name="sig" value="{esc(signature)}">'
                '<label>Your name <input name="by" maxlength="100"></label> '
                '<button type="submit">Acknowledge</button></form>')
        return _page(info + form)

    async def acknowledge(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                return _page("<p>Request too large.</p>", 413)
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=5)
        fields: dict[str, Any] = {k: (form.get(k) or [""])[0][:_MAX_FIELD]
                                  for k in ("exp", "sig", "by")}
        client = request.client.host if request.client else "?"
        return await run_in_threadpool(self._acknowledge, request.path_params["alert_id"],
                                       fields, client)

    def _acknowledge(self, alert_id: str, fields: dict[str, str], client: str) -> Response:
        problem = self._check(alert_id, fields["exp"], fields["sig"])
        if problem is not None:
            return _page(f"<p>{html.escape(problem)}</p>", 403)
        if self.store.get(alert_id) is None:
            return _page("<p>This alert is no longer known.</p>", 404)
        name = " ".join(fields["by"].split()) or "someone"
        created, record = self.store.ack(alert_id, by=f"{name} (ack link from {client})",
                                         now=self.clock())
        verb = "Acknowledged" if created else "Already acknowledged"
        return _page(f"<p>{verb} by {html.escape(str(record.get('by')))} at "
                     f"{html.escape(iso(float(record.get('at', 0))))}.</p>")


def ack_routes(client: redis.Redis) -> list[BaseRoute]:
    endpoint = _AckEndpoint(client)
    return [Route("/alerts/ack/{alert_id}", endpoint.show, methods=["GET"]),
            Route("/alerts/ack/{alert_id}", endpoint.acknowledge, methods=["POST"])]
