"""The web view as a Starlette app, mounted by ``pitstop serve`` under ``/ui``.

Every page and stream needs a login (a session cookie); every POST needs the session's CSRF
token and a same-origin request, and every action but logging out a session that may act (a
login with the API token is read-only unless ``config/web.yaml`` says ``token_can_act``).
Redis and file reads run in the thread pool; the event loop only parses requests and streams.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pitstop.kernel.constants import WEB_MOUNT
from pitstop.kernel.errors import RedisUnavailable, ValidationError
from pitstop.web.actions import Actions
from pitstop.web.context import WebContext, WebDeps
from pitstop.web.guard import SecurityHeaders, csrf_ok, read_form, same_origin, session_cookie
from pitstop.web.live import LiveStreams
from pitstop.web.login import Login
from pitstop.web.pages import Pages
from pitstop.web.render import ui
from pitstop.web.sessions import Session

__all__ = ["create_web_app", "web_routes"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
View = Callable[[Request, Session], Response]
Action = Callable[[Request, Session, dict[str, str]], Response]

READ_ONLY = ("read-only session: this login may look but not act. Log in as a user of "
             "config/web.yaml to act (a login with the API token acts only with "
             "token_can_act: true there).")


def _unavailable(ctx: WebContext, exc: Exception) -> Response:
    log.warning("web view: Redis unavailable: %s", exc)
    return ctx.render("error.html", {"title": "Redis is unavailable",
                                     "message": "pitstop cannot reach its Redis right now; "
                                                "this page will work again once it is back."},
                      status=503)


class Gate:
    """Wraps handlers: login first, then (POST) the form, same origin and CSRF token, then
    (actions) the session's right to act."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def session(self, request: Request) -> Session | None:
        return self.ctx.sessions.get(session_cookie(request))

    def view(self, fn: View) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def handler(request: Request) -> Response:
            try:
                session = await run_in_threadpool(self.session, request)
                if session is None:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(ui("login", next=target), status_code=303)
                return await run_in_threadpool(fn, request, session)
            except (RedisUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
                return _unavailable(self.ctx, exc)
        return handler

    def action(self, fn: Action, *, acts: bool = True
               ) -> Callable[[Request], Awaitable[Response]]:
        """``fn`` as a POST; ``acts``: it changes pitstop's state, so the session must be one
        that may act (logging out does not: a read-only session may still do it)."""
        @functools.wraps(fn)
        async def handler(request: Request) -> Response:
            try:
                session = await run_in_threadpool(self.session, request)
                if session is None:
                    return PlainTextResponse("login required", status_code=401)
                if not same_origin(request):
                    return PlainTextResponse("cross-site request refused", status_code=403)
                form = await read_form(request)
                if form is None or not csrf_ok(session, form.get("csrf")):
                    return PlainTextResponse("missing or wrong CSRF token: reload the page and "
                                             "try again", status_code=403)
                if acts and not self.ctx.may_act(session):
                    await run_in_threadpool(self.ctx.record, "refused_read_only", session.user,
                                            path=request.url.path)
                    return PlainTextResponse(READ_ONLY, status_code=403)
                return await run_in_threadpool(fn, request, session, form)
            except ValidationError as exc:
                return PlainTextResponse(str(exc), status_code=400)
            except (RedisUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
                return _unavailable(self.ctx, exc)
        return handler


def _redis_guarded(ctx: WebContext, fn: Callable[[Request], Awaitable[Response]]
                   ) -> Callable[[Request], Awaitable[Response]]:
    """``fn`` answering a clear 503 page while Redis is unreachable (the login page needs it)."""
    @functools.wraps(fn)
    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except (RedisUnavailable, redis.ConnectionError, redis.TimeoutError) as exc:
            return _unavailable(ctx, exc)
    return handler


def _routes(ctx: WebContext) -> list[BaseRoute]:
    gate = Gate(ctx)
    pages, actions = Pages(ctx), Actions(ctx)
    login, live = Login(ctx), LiveStreams(ctx, gate.session)
    view, act = gate.view, gate.action
    return [
        Route("/", lambda request: RedirectResponse(ui("events"), status_code=303)),
        Route("/login", _redis_guarded(ctx, login.form), methods=["GET"]),
        Route("/login", _redis_guarded(ctx, login.submit), methods=["POST"]),
        Route("/logout", act(login.logout, acts=False), methods=["POST"]),
        Route("/events", view(pages.events)),
        Route("/events/live", live.events),
        Route("/events/{event_id}", view(pages.event)),
        Route("/runs", view(pages.runs)),
        Route("/runs/{run_id}", view(pages.run)),
        Route("/runs/{run_id}/live", live.run),
        Route("/runs/{run_id}/output", live.output),
        Route("/triggers", view(pages.triggers)),
        Route("/triggers/{rule_id}/enable", act(actions.enable_rule), methods=["POST"]),
        Route("/triggers/{rule_id}/disable", act(actions.disable_rule), methods=["POST"]),
        Route("/alerts", view(pages.alerts)),
        Route("/alerts/silences", act(actions.silence), methods=["POST"]),
        Route("/alerts/silences/{silence_id}/end", act(actions.unsilence), methods=["POST"]),
        Route("/alerts/{alert_id}/ack", act(actions.ack), methods=["POST"]),
        Route("/triage", view(pages.triage)),
        Route("/fleet", view(pages.fleet)),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def create_web_app(deps: WebDeps) -> Starlette:
    """The web view (paths relative to where it is mounted: :data:`WEB_MOUNT`)."""
    ctx = WebContext(deps)
    app = Starlette(routes=_routes(ctx))
    app.add_middleware(SecurityHeaders)
    app.state.web = ctx
    return app


def _home(request: Request) -> Response:
    del request
    return RedirectResponse(WEB_MOUNT + "/", status_code=303)


def web_routes(deps: WebDeps) -> list[BaseRoute]:
    """What ``pitstop serve`` adds to its app: the web view under :data:`WEB_MOUNT`, and ``/``
    sending browsers there."""
    app: Any = create_web_app(deps)
    return [Mount(WEB_MOUNT, app=app), Route("/", _home, methods=["GET"])]
