"""The actions (POST, behind the login, same-origin and CSRF checks, for a session that may act:
see ``app.Gate``): enable or disable a trigger rule, acknowledge an alert, add or end a silence.
Each is recorded in ``web_actions.jsonl`` with the user, then redirects back to its page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pitstop.kernel.ids import utc_iso
from pitstop.web.context import WebContext
from pitstop.web.render import ui
from pitstop.web.sessions import Session
from pitstop.web.triggerview import check_rule_id

__all__ = ["Actions"]

MAX_REASON = 500


def _back(*parts: str, anchor: str = "") -> Response:
    return RedirectResponse(ui(*parts) + (f"#{anchor}" if anchor else ""), status_code=303)


class Actions:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def _who(self, session: Session) -> str:
        return f"web:{session.user}"

    def _set_rule(self, request: Request, session: Session, form: dict[str, str],
                  enabled: bool) -> Response:
        rule_id = check_rule_id(request.path_params["rule_id"])
        reason = form.get("reason", "").strip()[:MAX_REASON]
        self.ctx.triggers.set_enabled(rule_id, enabled, by=self._who(session), reason=reason,
                                      at=utc_iso(self.ctx.now()))
        self.ctx.record("enable_trigger" if enabled else "disable_trigger", session.user,
                        rule=rule_id, reason=reason)
        return _back("triggers", anchor=f"rule-{rule_id}")

    def enable_rule(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        return self._set_rule(request, session, form, True)

    def disable_rule(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        return self._set_rule(request, session, form, False)

    def ack(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        del form
        alert_id = request.path_params["alert_id"]
        created, _ = self.ctx.alerts.ack(alert_id, by=self._who(session))
        self.ctx.record("ack_alert", session.user, alert=alert_id, first=created)
        return _back("alerts", anchor=f"alert-{alert_id}")

    def silence(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        del request
        made = self.ctx.alerts.silence(form.get("pattern", ""), form.get("duration", "2h"),
                                       form.get("reason", ""), by=self._who(session))
        self.ctx.record("silence", session.user, silence=made.id, pattern=made.pattern)
        return _back("alerts", anchor="silences")

    def unsilence(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        del form
        ended = self.ctx.alerts.unsilence(request.path_params["silence_id"],
                                          by=self._who(session))
        self.ctx.record("unsilence", session.user, silence=ended.id)
        return _back("alerts", anchor="silences")
