"""The HTTP front door: GitHub webhooks, a bearer-authenticated events endpoint, a health check.

Redis and file I/O are synchronous, so every handler does its work in Starlette's thread pool
and the event loop only reads request bodies.

Bodies cost memory before anything is verified: a webhook without a well-formed signature
header (an event without the bearer token) is refused before its body is read, and the rest are
read within the bounds of :mod:`pitstop.server.bodies`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import redis
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import check_depth, check_source
from pitstop.bus.patterns import normalize_type
from pitstop.kernel.constants import (
    API_EVENT_SOURCE,
    HTTP_EVENTS_DEDUPE_PREFIX,
    RESERVED_EVENT_ROOTS,
    WEBHOOK_BODY_PREFIX,
    WEBHOOK_DELIVERY_PREFIX,
    WEBHOOK_DELIVERY_TTL_SECONDS,
)
from pitstop.kernel.errors import (
    PayloadTooLarge,
    RedisUnavailable,
    SignatureMismatch,
    ValidationError,
    WebhookError,
)
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.statelog import StateLog
from pitstop.server.bodies import BodyRefused, BoundedBodies
from pitstop.server.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    github_events,
    signature_digest,
    verify_github_signature,
)

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
GITHUB_SOURCE = "github"
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_CONCURRENT_BODIES = 4
"""Request bodies read at once; the others wait for a slot (memory: this many bodies at most)."""
BODY_TIMEOUT_SECONDS = 10.0
"""Time a request has to get a body slot and send its whole body."""
MAX_CONNECTIONS = 100
"""Connections uvicorn serves at once; beyond, new requests get 503 at once."""
_MAX_KEY_LENGTH = 200
_EVENT_FIELDS = frozenset({"type", "data", "source"})
_PENDING = "pending"
PENDING_TTL_SECONDS = 60
"""How long a claim of a delivery in progress lives: a process dying mid-request must not
block the delivery's redelivery for the whole dedupe window."""
_DONE = "done"


_TOO_DEEP = "body is not valid JSON: nested too deeply"


@dataclass
class _Outcome:
    """What a handler decided: the HTTP reply, plus the fields worth logging."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    result: str = ""

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def _error(status: int, message: str, result: str = "rejected", **headers: str) -> _Outcome:
    return _Outcome(status, {"error": message}, dict(headers), result)


def _unavailable(exc: Exception) -> _Outcome:
    # The detail names the Redis host: it goes to our log, never to the (external) caller.
    log.warning("request failed, Redis unavailable: %s", exc)
    return _error(503, "the event store is unavailable: retry later", result="error")


def _valid_key(value: str) -> bool:
    # Keys become part of Redis keys and log lines: keep them short and printable.
    return 0 < len(value) <= _MAX_KEY_LENGTH and value.isascii() and value.isprintable()


def _parse_github_body(body: bytes | bytearray, content_type: str) -> dict[str, Any]:
    """The delivery's JSON object; GitHub can also send it form-encoded as ``payload=<json>``."""
    text: str | bytes | bytearray = body
    if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
        fields = parse_qs(body.decode("utf-8", "replace"))
        if "payload" not in fields:
            raise ValueError("form-encoded delivery has no 'payload' field")
        text = fields["payload"][0]
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    if not isinstance(payload, dict):
        raise ValueError(f"body must be a JSON object, got {type(payload).__name__}")
    return payload


class _Handlers:
    def __init__(
        self,
        *,
        bus: EventBus,
        client: redis.Redis,
        webhook_secret: str | None,
        api_token: str | None,
        state_log: StateLog | None,
        max_body_bytes: int,
        delivery_ttl_seconds: int,
        redactor: Redactor | None,
        max_concurrent_bodies: int,
        body_timeout: float,
    ) -> None:
        self.bus = bus
        self.client = client
        self.secret = webhook_secret.encode() if webhook_secret else None
        self.token = api_token.encode() if api_token else None
        self.state_log = state_log
        self.ttl = delivery_ttl_seconds
        self.max_data_bytes = bus.max_data_bytes
        self.redactor = redactor or Redactor.from_environ()
        self.bodies = BoundedBodies(max_bytes=max_body_bytes,
                                    max_concurrent=max_concurrent_bodies, timeout=body_timeout)

    async def _bounded_body(self, request: Request) -> bytearray | _Outcome:
        """The request's body, or the reply refusing it (:class:`BoundedBodies` says why)."""
        try:
            return await self.bodies.read(request)
        except BodyRefused as refused:
            return _error(refused.status, refused.message, result=refused.result,
                          **refused.headers)

    # --- GET /healthz ---------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        ok = await run_in_threadpool(self._ping)
        if ok:
            return JSONResponse({"status": "ok", "redis": True})
        return JSONResponse({"status": "unavailable", "redis": False}, status_code=503)

    def _ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError):
            return False

    # --- POST /webhooks/github ------------------------------------------------------------

    async def github(self, request: Request) -> Response:
        headers = request.headers
        record: dict[str, Any] = {
            "delivery_id": (headers.get(DELIVERY_HEADER) or "")[:_MAX_KEY_LENGTH] or None,
            "github_event": (headers.get(EVENT_HEADER) or "")[:_MAX_KEY_LENGTH] or None,
            "client": request.client.host if request.client else None,
        }
        if self.secret is None:
            outcome = _error(
                503, "GitHub webhooks are not configured on this server: set a webhook secret",
                result="not_configured",
            )
        else:
            body = await self._signed_body(request)
            if isinstance(body, _Outcome):
                outcome = body
            else:
                outcome = await run_in_threadpool(
                    self._deliver,
                    secret=self.secret,
                    body=body,
                    signature=headers.get(SIGNATURE_HEADER),
                    delivery_id=headers.get(DELIVERY_HEADER),
                    event_name=headers.get(EVENT_HEADER),
                    content_type=headers.get("content-type", ""),
                )
        record.update(result=outcome.result, status=outcome.status,
                      events=outcome.body.get("events", []))
        if "error" in outcome.body:
            record["reason"] = outcome.body["error"]
        await run_in_threadpool(self._log_delivery, record)
        return outcome.response()

    async def _signed_body(self, request: Request) -> bytearray | _Outcome:
        """The body of a delivery that carries a well-formed signature header; else a 401 sent
        without reading the body (nothing unauthenticated costs more than its headers)."""
        try:
            signature_digest(request.headers.get(SIGNATURE_HEADER))
        except SignatureMismatch as exc:
            return _error(401, str(exc), Connection="close")
        return await self._bounded_body(request)

    def _deliver(
        self,
        *,
        secret: bytes,
        body: bytes | bytearray,
        signature: str | None,
        delivery_id: str | None,
        event_name: str | None,
        content_type: str,
    ) -> _Outcome:
        try:
            verify_github_signature(secret, body, signature)
        except SignatureMismatch as exc:
            return _error(401, str(exc))
        if not delivery_id or not _valid_key(delivery_id):
            return _error(400, f"missing or invalid {DELIVERY_HEADER} header")
        if not event_name:
            return _error(400, f"missing {EVENT_HEADER} header")
        try:
            payload = _parse_github_body(body, content_type)
            mapped = github_events(event_name, payload, delivery_id,
                                   max_data_bytes=self.max_data_bytes)
        except (ValueError, WebhookError, ValidationError) as exc:
            return _error(400, str(exc))

        key = WEBHOOK_DELIVERY_PREFIX + delivery_id
        try:
            previous = self._claim(key, {})
        except redis.RedisError as exc:
            return _unavailable(exc)
        if previous is not None:
            if previous.get("state") != _DONE:
                return _error(409, "this delivery is being processed: retry shortly")
            return _Outcome(200, {"status": "duplicate", "events": previous.get("events", [])},
                            result="duplicate")
        # The signature covers the body only: a captured delivery re-sent under a fresh delivery
        # id (or another event name) must not publish again. Same body, same dedupe window.
        body_key = WEBHOOK_BODY_PREFIX + hashlib.sha256(body).hexdigest()
        try:
            same_body = self._claim(body_key, {"delivery_id": delivery_id})
        except redis.RedisError as exc:
            self._release(key)
            return _unavailable(exc)
        if same_body is not None:
            if same_body.get("state") != _DONE:
                self._release(key)
                return _error(409, "a delivery with this body is being processed: retry shortly")
            events = same_body.get("events", [])
            self._remember(key, {"state": _DONE, "events": events,
                                 "duplicate_of": same_body.get("delivery_id")})
            return _Outcome(200, {"status": "duplicate", "events": events}, result="duplicate")

        published: list[str] = []
        try:
            for event_type, data in mapped:
                published.append(self.bus.publish(event_type, self.redactor.redact(data),
                                                  source=GITHUB_SOURCE).id)
        except (RedisUnavailable, redis.RedisError, ValidationError) as exc:
            self._release(body_key)
            return self._publish_failed(key, exc)
        self._remember(key, {"state": _DONE, "events": published})
        self._remember(body_key, {"state": _DONE, "events": published,
                                  "delivery_id": delivery_id})
        return _Outcome(202, {"status": "accepted", "events": published}, result="accepted")

    def _log_delivery(self, record: Mapping[str, Any]) -> None:
        if self.state_log is None:
            return
        try:
            self.state_log.append(record)
        except Exception:
            # The log is an audit trail: losing a line must not fail the delivery.
            log.exception("could not append webhook delivery to the state log")

    # --- POST /events ---------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        if self.token is None:
            return _error(503, "the events endpoint is not configured: set an API token").response()
        if not self._authorized(request.headers.get("authorization")):
            return _error(401, "missing or wrong bearer token",
                          **{"WWW-Authenticate": "Bearer"}).response()
        body = await self._bounded_body(request)
        if isinstance(body, _Outcome):
            return body.response()
        idempotency_key = request.headers.get(IDEMPOTENCY_HEADER)
        outcome = await run_in_threadpool(self._accept_event, body, idempotency_key)
        return outcome.response()

    def _authorized(self, header: str | None) -> bool:
        if self.token is None:
            return False
        scheme, _, credentials = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self.token)

    def _accept_event(self, body: bytes | bytearray, idempotency_key: str | None) -> _Outcome:
        try:
            request = json.loads(body)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a >4300-digit number
            return _error(400, f"body is not valid JSON: {exc}")
        except RecursionError:
            return _error(400, _TOO_DEEP)
        problem = _check_event_request(request)
        if problem:
            return _error(400, problem)
        event_type, data = request["type"], request.get("data") or {}
        reserved = _reserved_root(event_type)
        if reserved is not None:
            return _error(403, f"event types under {reserved}.* are published by pitstop itself "
                               "or a verified webhook, not through POST /events")
        source = api_source(request.get("source"))
        try:
            check_source(source)
        except ValidationError as exc:
            return _error(400, str(exc))

        key: str | None = None
        fingerprint = ""
        if idempotency_key is not None:
            if not _valid_key(idempotency_key):
                return _error(400, f"{IDEMPOTENCY_HEADER} must be 1-{_MAX_KEY_LENGTH} printable "
                                   "ASCII characters")
            key = _idempotency_redis_key(idempotency_key)
            fingerprint = hashlib.sha256(
                json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
            try:
                replay = self._claim_idempotency(key, fingerprint)
            except redis.RedisError as exc:
                return _unavailable(exc)
            if replay is not None:
                return replay

        try:
            event = self.bus.publish(event_type, self.redactor.redact(data), source=source)
        except (RedisUnavailable, redis.RedisError, ValidationError) as exc:
            return self._publish_failed(key, exc)
        if key is not None:
            self._remember(key, {"state": _DONE, "fingerprint": fingerprint,
                                 "event": event.to_dict()})
        return _Outcome(201, event.to_dict(), result="accepted")

    def _claim_idempotency(self, key: str, fingerprint: str) -> _Outcome | None:
        """None when this request owns ``key``; else the reply to a repeated request."""
        stored = self._claim(key, {"fingerprint": fingerprint})
        if stored is None:
            return None
        if stored.get("fingerprint") not in (None, fingerprint):
            return _error(422, f"this {IDEMPOTENCY_HEADER} was already used for a different "
                               "request")
        event = stored.get("event")
        if stored.get("state") != _DONE or not isinstance(event, dict):
            return _error(409, f"a request with this {IDEMPOTENCY_HEADER} is still in progress: "
                               "retry shortly")
        return _Outcome(200, event, {"Idempotent-Replayed": "true"}, result="duplicate")

    # --- dedupe keys ----------------------------------------------------------------------
    # One protocol for webhook deliveries and idempotency keys: claim the key as pending (short
    # TTL, so a crash mid-request frees it), publish, then record the outcome for the whole
    # dedupe window; on a failed publication release the claim so a retry can succeed.

    def _claim(self, key: str, extra: Mapping[str, Any]) -> dict[str, Any] | None:
        """None when this request now owns ``key``; else what is stored there (may be {})."""
        pending = json.dumps({"state": _PENDING, **extra})
        if self.client.set(key, pending, nx=True, ex=PENDING_TTL_SECONDS):
            return None
        return _load_json(self.client.get(key))

    def _remember(self, key: str, value: Mapping[str, Any]) -> None:
        try:
            # Done: keep it for the whole dedupe window.
            self.client.set(key, json.dumps(value), xx=True, ex=self.ttl)
        except redis.RedisError:
            # Published already; the pending marker still blocks a second publication.
            log.warning("could not record the outcome under %s", key, exc_info=True)

    def _publish_failed(self, key: str | None, exc: Exception) -> _Outcome:
        """Release the dedupe claim (a retry may succeed) and map the error to a response."""
        self._release(key)
        if isinstance(exc, PayloadTooLarge):
            return _error(413, str(exc))
        if isinstance(exc, ValidationError):
            return _error(400, str(exc))
        return _unavailable(exc)

    def _release(self, key: str | None) -> None:
        """Drop a dedupe claim after a failed publication, so a retry can succeed."""
        if key is None:
            return
        try:
            self.client.delete(key)
        except redis.RedisError:
            log.warning("could not release dedupe key %s; it expires on its own", key,
                        exc_info=True)


def _check_event_request(request: Any) -> str | None:
    if not isinstance(request, dict):
        return f"body must be a JSON object, got {type(request).__name__}"
    unknown = sorted(set(request) - _EVENT_FIELDS)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}: expected type, data, source"
    if not isinstance(request.get("type"), str):
        return "field 'type' is required and must be a string"
    if request.get("data") is not None and not isinstance(request["data"], dict):
        return "field 'data' must be a JSON object"
    if request.get("source") is not None and not isinstance(request["source"], str):
        return "field 'source' must be a string"
    try:
        check_source(request.get("source") or "")
        check_depth(request.get("data"), what="field 'data'")
    except ValidationError as exc:
        return str(exc)
    return None


def api_source(claimed: str | None) -> str:
    """The ``source`` of an event published through ``POST /events``: :data:`API_EVENT_SOURCE`,
    followed by what the caller says (``api:token/ci-runner-7``), so an API event can never pass
    for one from a verified webhook (``github``) or a worker."""
    return f"{API_EVENT_SOURCE}/{claimed}" if claimed else API_EVENT_SOURCE


def _reserved_root(event_type: str) -> str | None:
    """The first segment of ``event_type`` when it is reserved (:data:`RESERVED_EVENT_ROOTS`)."""
    try:
        root = normalize_type(event_type).split(".", 1)[0]
    except ValidationError:
        return None  # malformed: publishing it fails with the reason
    return root if root in RESERVED_EVENT_ROOTS else None


def _idempotency_redis_key(idempotency_key: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{HTTP_EVENTS_DEDUPE_PREFIX}{digest}"


def _load_json(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, bytes | str):
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def create_app(
    *,
    bus: EventBus,
    client: redis.Redis,
    webhook_secret: str | None,
    api_token: str | None,
    state_log: StateLog | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    delivery_ttl_seconds: int = WEBHOOK_DELIVERY_TTL_SECONDS,
    redactor: Redactor | None = None,
    max_concurrent_bodies: int = MAX_CONCURRENT_BODIES,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The pitstop HTTP app. A ``None`` secret or token disables that endpoint (503).
    ``extra_routes`` come after the server's own (``pitstop serve`` adds the web view's).

    At most ``max_concurrent_bodies`` request bodies (of at most ``max_body_bytes``) are read
    at once; a request has ``body_timeout`` seconds to get a slot and send its body."""
    handlers = _Handlers(
        bus=bus,
        client=client,
        webhook_secret=webhook_secret,
        api_token=api_token,
        state_log=state_log,
        max_body_bytes=max_body_bytes,
        delivery_ttl_seconds=delivery_ttl_seconds,
        redactor=redactor,
        max_concurrent_bodies=max_concurrent_bodies,
        body_timeout=body_timeout,
    )
    from pitstop.alerts.web import ack_routes  # alerts
    from pitstop.server.metrics import metrics_routes  # metrics

    return Starlette(
        routes=[
            Route("/webhooks/github", handlers.github, methods=["POST"]),
            Route("/events", handlers.events, methods=["POST"]),
            Route("/healthz", handlers.healthz, methods=["GET"]),
            *ack_routes(client),  # alerts: signed ack links (GET shows, POST acknowledges)
            *metrics_routes(client, api_token),  # metrics: Prometheus, behind the API token
            *extra_routes,  # web: the web view under /ui (pitstop.web.web_routes)
        ]
    )


def serve(app: Starlette, *, host: str = "127.0.0.1", port: int = 8787,
          max_connections: int = MAX_CONNECTIONS) -> None:
    """Run ``app`` under uvicorn until interrupted; past ``max_connections`` connections, new
    requests get 503 at once."""
    uvicorn.run(app, host=host, port=port, log_level="warning",
                limit_concurrency=max_connections)
