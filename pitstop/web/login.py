"""Logging in (the API token, or a user of ``config/web.yaml`` and a password) and out.

A session's right to act is decided here: a user of ``config/web.yaml`` may, a login with the
API token only looks unless ``token_can_act`` says otherwise.

The login form has its own CSRF token, bound to a random cookie set with the form (so another
site cannot log a browser in to an account of its choosing). Failed logins count per client
address; past the limit the address waits for the window to pass, whatever it sends.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from pitstop.kernel.constants import WEB_MOUNT
from pitstop.web.config import TOKEN_USER
from pitstop.web.context import WebContext
from pitstop.web.guard import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    cookie_name,
    cookie_secure,
    login_token,
    new_login_nonce,
    read_form,
    same_origin,
    session_cookie,
    set_cookie,
)
from pitstop.web.passwords import verify_password
from pitstop.web.render import safe_href, ui
from pitstop.web.sessions import Session

__all__ = ["Login"]

LOGIN_COOKIE_SECONDS = 3600


def _next(value: str | None) -> str:
    """Where to go after logging in: a path of the web view only (never another site)."""
    target = safe_href(value)
    if target is None or not target.startswith(WEB_MOUNT + "/") or "\\" in target:
        return ui("events")
    return target


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(hashlib.sha256(a.encode()).digest(),
                               hashlib.sha256(b.encode()).digest())


class Login:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def _form(self, request: Request, *, error: str = "", status: int = 200,
              name: str = "") -> Response:
        nonce = new_login_nonce()
        config = self.ctx.deps.config
        response = self.ctx.render("login.html", {
            "token": login_token(self.ctx.signer, nonce), "error": error, "name": name,
            "next": _next(request.query_params.get("next")),
            "token_login": config.token_login and self.ctx.deps.api_token is not None,
            "token_can_act": config.token_can_act,
            "users": bool(config.users)}, status=status)
        set_cookie(response, request, LOGIN_COOKIE, nonce, policy=config.secure_cookies,
                   max_age=LOGIN_COOKIE_SECONDS)
        return response

    async def form(self, request: Request) -> Response:
        return await run_in_threadpool(self._form, request)

    async def submit(self, request: Request) -> Response:
        if not same_origin(request):
            return PlainTextResponse("cross-site request refused", status_code=403)
        form = await read_form(request)
        if form is None:
            return PlainTextResponse("expected a small urlencoded form", status_code=400)
        return await run_in_threadpool(self._submit, request, form)

    def _submit(self, request: Request, form: dict[str, str]) -> Response:
        ctx = self.ctx
        config = ctx.deps.config
        secure = cookie_secure(request, config.secure_cookies)
        nonce = request.cookies.get(cookie_name(LOGIN_COOKIE, secure)) or ""
        if not nonce or not ctx.signer.matches("login", nonce, form.get("csrf", "")):
            return self._form(request, error="The login form expired: please try again.",
                              status=403)
        address = request.client.host if request.client else "?"
        if ctx.limiter.blocked(address):
            return self._form(request, error="Too many failed logins from this address: wait "
                              "a few minutes.", status=429)
        name = form.get("user", "").strip()
        password = form.get("password", "")
        user = self._check(name, password)
        if user is None:
            ctx.limiter.failed(address)
            ctx.record("login_failed", name[:64] or TOKEN_USER, address=address)
            return self._form(request, error="Wrong name, password or token.", status=401,
                              name=name[:64])
        ctx.limiter.reset(address)
        by_token = user == TOKEN_USER
        can_act = config.token_can_act or not by_token
        cookie, _ = ctx.sessions.create(user, via="token" if by_token else "password",
                                        can_act=can_act, now=ctx.now().timestamp())
        ctx.record("login", user, address=address, can_act=can_act)
        response = RedirectResponse(_next(form.get("next")), status_code=303)
        set_cookie(response, request, SESSION_COOKIE, cookie, policy=config.secure_cookies,
                   max_age=int(config.session_hours * 3600))
        clear_cookie(response, request, LOGIN_COOKIE, policy=config.secure_cookies)
        return response

    def _check(self, name: str, password: str) -> str | None:
        """The user logged in by (name, password), or by the API token (no name); else None."""
        config = self.ctx.deps.config
        if not password:
            return None
        if not name or name == TOKEN_USER:
            token = self.ctx.deps.api_token
            if config.token_login and token and _same(password, token):
                return TOKEN_USER
            verify_password(password, None)  # the same work as a wrong password
            return None
        user = config.user(name)
        if verify_password(password, user.password_hash if user else None):
            return name
        return None

    def logout(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        del form
        self.ctx.sessions.delete(session_cookie(request))
        self.ctx.record("logout", session.user)
        response = RedirectResponse(ui("login"), status_code=303)
        clear_cookie(response, request, SESSION_COOKIE,
                     policy=self.ctx.deps.config.secure_cookies)
        return response
