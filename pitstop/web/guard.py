"""The web view's defences: security headers on every response (a strict Content-Security-Policy
without inline script or style, no framing, no sniffing, no caching of pages), the login gate,
CSRF checks on every POST, and the session cookie's flags.

The middleware is plain ASGI (not ``BaseHTTPMiddleware``) so server-sent event streams pass
through it unbuffered.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitstop.web.sessions import Session, Signer

__all__ = ["CSP", "SecurityHeaders", "cookie_secure", "csrf_ok", "read_form", "same_origin"]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
MAX_FORM_BYTES = 16 * 1024
SESSION_COOKIE = "pitstop_session"
LOGIN_COOKIE = "pitstop_login"
SECURE_PREFIX = "__Host-"
"""Over TLS the cookies are ``__Host-`` cookies: Secure, Path=/, no Domain (a sibling host
cannot plant one)."""


class SecurityHeaders:
    """Adds :data:`HEADERS` to every response, and ``Cache-Control: no-store`` unless set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cookie_secure(request: Request, policy: str) -> bool:
    if policy == "always":
        return True
    if policy == "never":
        return False
    return request.url.scheme == "https"


def cookie_name(base: str, secure: bool) -> str:
    return SECURE_PREFIX + base if secure else base


def session_cookie(request: Request) -> str | None:
    return (request.cookies.get(SECURE_PREFIX + SESSION_COOKIE)
            or request.cookies.get(SESSION_COOKIE))


def set_cookie(response: Response, request: Request, base: str, value: str, *, policy: str,
               max_age: int | None) -> None:
    secure = cookie_secure(request, policy)
    response.set_cookie(cookie_name(base, secure), value, max_age=max_age, path="/",
                        httponly=True, secure=secure, samesite="strict")


def clear_cookie(response: Response, request: Request, base: str, *, policy: str) -> None:
    secure = cookie_secure(request, policy)
    response.delete_cookie(cookie_name(base, secure), path="/", httponly=True, secure=secure,
                           samesite="strict")


def same_origin(request: Request) -> bool:
    """Whether a state-changing request comes from our own pages: ``Sec-Fetch-Site`` (when the
    browser sends it) says same-origin, and ``Origin`` (when sent) is this server."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin not in (f"{request.url.scheme}://{host}", f"http://{host}",
                          f"https://{host}"):
            return False
    return True


async def read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form of at most :data:`MAX_FORM_BYTES` (None when larger or malformed):
    one value per field."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20,
                          strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {key: values[0] for key, values in parsed.items() if values}


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(str(submitted), session.csrf)


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_token(signer: Signer, nonce: str) -> str:
    """The CSRF token of the login form, bound to the pre-login cookie's nonce."""
    return signer.mac("login", nonce)


Handler = Callable[[Request], Awaitable[Response]]
Extra = dict[str, Any]
