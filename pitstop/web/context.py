"""What every page handler shares: the objects the server hands in (:class:`WebDeps`), the
readers built on them, and rendering a template with the common context (user, CSRF token,
whether the session may act, navigation)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from starlette.responses import HTMLResponse

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import LOG_ALERT_ACTIVITY, LOG_WEB_ACTIONS
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog
from pitstop.runs.output import RunOutput
from pitstop.web.alertview import AlertDesk
from pitstop.web.config import WebConfig
from pitstop.web.fleetview import WorkerProbe, WorkerWatch
from pitstop.web.render import environment, safe_href
from pitstop.web.sessions import LoginLimiter, Session, SessionStore, Signer, signing_key
from pitstop.web.triggerview import TriggerBook

__all__ = ["NAV", "WebContext", "WebDeps"]

NAV = (("events", "Events"), ("runs", "Runs"), ("triggers", "Triggers"), ("alerts", "Alerts"),
       ("triage", "Triage"), ("fleet", "Fleet"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class WebDeps:
    """What ``pitstop serve`` (or a test) hands the web view."""

    client: redis.Redis
    bus: EventBus
    settings: Settings
    config: WebConfig
    redactor: Redactor
    worker_probe: WorkerProbe | None = None
    clock: Callable[[], datetime] = _utcnow

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def api_token(self) -> str | None:
        token = self.settings.server.api_token
        return token.get_secret_value() if token is not None else None

    @property
    def flower_url(self) -> str:
        return self.config.flower_url or f"http://127.0.0.1:{self.settings.flower.port}"


class WebContext:
    """The shared readers and the renderer (one per app)."""

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps
        self.client = deps.client
        self.redactor = deps.redactor
        self.env = environment()
        self.triggers = TriggerBook(deps.client, deps.settings.config_dir, deps.state_dir)
        self.alerts = AlertDesk(deps.client, StateLog(LOG_ALERT_ACTIVITY, deps.state_dir,
                                                       redactor=deps.redactor))
        self.actions_log = StateLog(LOG_WEB_ACTIONS, deps.state_dir, redactor=deps.redactor)
        self.workers = WorkerWatch(deps.worker_probe)
        self.output = RunOutput(deps.client)
        self.limiter = LoginLimiter(deps.client, limit=deps.config.max_login_failures,
                                    window=deps.config.login_window_seconds)
        self._signer: Signer | None = None
        self._sessions: SessionStore | None = None
        self._lock = threading.Lock()

    @property
    def signer(self) -> Signer:
        with self._lock:
            if self._signer is None:
                self._signer = Signer(signing_key(self.client))
            return self._signer

    @property
    def sessions(self) -> SessionStore:
        signer = self.signer
        with self._lock:
            if self._sessions is None:
                self._sessions = SessionStore(
                    self.client, signer, ttl_seconds=int(self.deps.config.session_hours * 3600))
            return self._sessions

    def now(self) -> datetime:
        return self.deps.clock()

    def may_act(self, session: Session) -> bool:
        """Whether ``session`` may act now: allowed at login *and* still by the config in force,
        so turning ``token_can_act`` off (or removing a user) takes effect on live sessions."""
        if not session.can_act:
            return False
        if session.via == "token":
            return self.deps.config.token_can_act
        return any(user.name == session.user for user in self.deps.config.users)

    def record(self, action: str, user: str, **fields: Any) -> None:
        """One line in ``web_actions.jsonl`` (an audit trail: a failure here never fails the
        action)."""
        with contextlib.suppress(OSError):
            self.actions_log.append({"action": action, "user": user, **fields})

    def render(self, name: str, context: dict[str, Any], *, status: int = 200,
               user: str | None = None, csrf: str = "", can_act: bool = False,
               nav: str = "") -> HTMLResponse:
        template = self.env.get_template(name)
        text = template.render(user=user, csrf=csrf, can_act=can_act, nav=nav, nav_items=NAV,
                               now=self.now(), flower_url=safe_href(self.deps.flower_url),
                               **context)
        return HTMLResponse(text, status_code=status)
