"""The pages (GET): events and an event's trace, runs and one run, triggers, alerts, triage and
the fleet. Each gathers what it shows through the readers of its component, then renders one
template; nothing here writes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from pitstop.bus.patterns import compile_pattern
from pitstop.kernel.constants import RUN_KIND_WORKSTREAM
from pitstop.kernel.errors import ValidationError
from pitstop.kernel.timeparse import parse_since
from pitstop.runs.store import RUN_STATUSES
from pitstop.web.charts import bar_chart
from pitstop.web.context import WebContext
from pitstop.web.eventview import (
    event_ms,
    find_event,
    load_runs,
    recent_events,
    run_ids_of,
    trace_events,
    trace_tree,
)
from pitstop.web.fleetview import fleet_page
from pitstop.web.render import compact_json, pretty_json, seconds, ui
from pitstop.web.runview import get_run, graph_of, recent_runs, took
from pitstop.web.sessions import Session
from pitstop.web.triageview import triage_page

__all__ = ["Pages"]

MAX_LIMIT = 500
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,200}")


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(value or default)))
    except ValueError:
        return default


class Pages:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def _page(self, name: str, nav: str, session: Session, context: dict[str, Any],
              status: int = 200) -> Response:
        return self.ctx.render(name, context, status=status, user=session.user,
                               csrf=session.csrf, can_act=self.ctx.may_act(session), nav=nav)

    def _missing(self, session: Session, what: str) -> Response:
        return self._page("error.html", "", session, {"title": "Not found", "message": what},
                          status=404)

    # --- events ---------------------------------------------------------------------------------
    def events(self, request: Request, session: Session) -> Response:
        ctx = self.ctx
        pattern = (request.query_params.get("pattern") or "**").strip()
        since_text = (request.query_params.get("since") or "").strip()
        limit = _int(request.query_params.get("limit"), 100, 1, MAX_LIMIT)
        error = None
        since: datetime | None = None
        try:
            compile_pattern(pattern)
            since = parse_since(since_text, now=ctx.now()) if since_text else None
        except ValidationError as exc:
            error = str(exc)
        after = ctx.deps.bus.last_stream_id()
        rows: list[dict[str, Any]] = []
        page = None
        if error is None:
            page = recent_events(ctx.deps.bus, pattern=pattern, since=since, limit=limit)
            for stream_id, event in page.events:
                rows.append({"stream_id": stream_id, "event": event,
                             "data": compact_json(ctx.redactor.redact(event.data)),
                             "source": ctx.redactor.redact_text(event.source)})
        return self._page("events.html", "events", session, {
            "pattern": pattern, "since": since_text, "limit": limit, "error": error,
            "rows": rows, "page": page,
            "live_url": ui("events", "live", pattern=pattern if error is None else "**",
                           after=after)})

    def event(self, request: Request, session: Session) -> Response:
        ctx = self.ctx
        event_id = request.path_params["event_id"]
        found = find_event(ctx.deps.bus, event_id) if _ID.fullmatch(event_id) else None
        if found is None:
            return self._missing(session, "No stored event has this id: it may be older than "
                                          "the stream keeps, or mistyped.")
        stream_id, event = found
        decisions, others = ctx.triggers.matches_for(event.type, event.id)
        events, complete = trace_events(ctx.deps.bus, event.trace_id, around_ms=event_ms(event.id))
        if not any(e.id == event.id for e in events):
            events.append(event)
        trace_decisions = [d for d in ctx.triggers.decisions(needle=event.trace_id.encode(),
                                                             limit=500)
                           if d.get("trace_id") == event.trace_id]
        runs = load_runs(ctx.client, run_ids_of(events, trace_decisions))
        tree = trace_tree(events, runs, trace_decisions)
        return self._page("event.html", "events", session, {
            "event": event, "stream_id": stream_id,
            "data": pretty_json(ctx.redactor.redact(event.data)),
            "source": ctx.redactor.redact_text(event.source),
            "decisions": decisions, "others": others, "tree": tree,
            "trace_complete": complete, "redact": ctx.redactor.redact_text})

    # --- runs -----------------------------------------------------------------------------------
    def runs(self, request: Request, session: Session) -> Response:
        params = request.query_params
        status = params.get("status") or None
        kind = params.get("kind") or None
        workstream = params.get("workstream") or None
        if status not in (None, *RUN_STATUSES):
            status = None
        if kind is not None and not _ID.fullmatch(kind):
            kind = None
        if workstream is not None and not _ID.fullmatch(workstream):
            workstream = None
        offset = _int(params.get("offset"), 0, 0, 10**9)
        page = recent_runs(self.ctx.client, offset=offset, limit=50, status=status, kind=kind,
                           workstream=workstream)
        now = self.ctx.now()
        rows = [{"run": run, "took": took(run.started_at, run.finished_at, now),
                 "name": run.workstream_id or str(run.params.get("script") or "")}
                for run in page.runs]
        return self._page("runs.html", "runs", session, {
            "rows": rows, "page": page, "status": status or "", "kind": kind or "",
            "workstream": workstream or "", "statuses": RUN_STATUSES})

    def run(self, request: Request, session: Session) -> Response:
        ctx = self.ctx
        run_id = request.path_params["run_id"]
        run = get_run(ctx.client, run_id) if _ID.fullmatch(run_id) else None
        if run is None:
            return self._missing(session, "No run has this id (or its record has expired).")
        now = ctx.now()
        graph = graph_of(run, now=now, redactor=ctx.redactor)
        redact = ctx.redactor.redact
        return self._page("run.html", "runs", session, {
            "run": run, "graph": graph, "took": took(run.started_at, run.finished_at, now),
            "params": pretty_json(redact(run.params)) if run.params else "",
            "executions": [pretty_json(redact(e)) for e in run.executions[-5:]],
            "error": ctx.redactor.redact_text(run.error or ""),
            "script": ctx.redactor.redact_text(str(run.params.get("script") or "")),
            "event": run.event or {}, "is_workstream": run.kind == RUN_KIND_WORKSTREAM,
            "live_url": ui("runs", run.run_id, "live"),
            "output_url": ui("runs", run.run_id, "output")})

    # --- triggers, alerts, triage, fleet --------------------------------------------------------
    def triggers(self, request: Request, session: Session) -> Response:
        del request
        return self._page("triggers.html", "triggers", session, {"page": self.ctx.triggers.page()})

    def alerts(self, request: Request, session: Session) -> Response:
        del request
        page = self.ctx.alerts.page()
        summary = page.summary
        charts = []
        for key, title in (("time_to_deliver", "event → delivered"),
                           ("time_to_ack", "event → acknowledged (MTTA)")):
            spreads = summary.get(key, {})
            points: list[tuple[str, float | None]] = []
            css: list[str] = []
            for severity, spread in spreads.items():
                points += [(f"{severity} p50 (n={spread['n']})", spread["p50"]),
                           (f"{severity} p95", spread["p95"])]
                css += [f"sev-{severity}", f"sev-{severity} p95"]
            charts.append(bar_chart(title, points, css=css, show=seconds))
        days = page.days
        charts.append(bar_chart("alerts per day", [(d["day"], d["alerts"]) for d in days],
                                fmt="{:.0f}"))
        charts.append(bar_chart("time to acknowledge per day (p50)",
                                [(d["day"], d["ack_p50"]) for d in days], show=seconds))
        return self._page("alerts.html", "alerts", session, {"page": page, "charts": charts})

    def triage(self, request: Request, session: Session) -> Response:
        del request
        page = triage_page(self.ctx.client, self.ctx.deps.state_dir)
        share = bar_chart("auto-fixable share per batch",
                          [(f"{b['ts'][5:10]} {b['ts'][11:16]} · {b['failures']} failures",
                            b["share"] * 100)
                           for b in page.batches], unit="%", fmt="{:.0f}", width=480)
        return self._page("triage.html", "triage", session, {"page": page, "share": share})

    def fleet(self, request: Request, session: Session) -> Response:
        del request
        settings = self.ctx.deps.settings
        page = fleet_page(self.ctx.client, self.ctx.workers,
                          beat_lock_ttl=settings.celery.beat_lock_ttl,
                          extra_queues=[settings.scripts.default_queue, *settings.celery.queues])
        return self._page("fleet.html", "fleet", session, {"page": page})
