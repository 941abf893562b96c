"""The Celery app: JSON only, at-least-once delivery, queues declared in one place.

``create_app(settings, redis_url)`` builds a configured app; the module attribute ``app`` (for
``celery -A workers.app`` and Flower) is built lazily from the environment on first access.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from kombu.entity import Queue

from pitstop.connection.connect import resolve_redis_url
from pitstop.connection.sentinel import SentinelURL, is_sentinel_url
from pitstop.kernel.constants import DEFAULT_QUEUE, SCRIPT_QUEUES, TASK_RUN_SCRIPT
from pitstop.kernel.errors import ConfigError, ValidationError
from pitstop.kernel.settings import Settings, load_settings
from workers.transport import install as install_redis_transport

TASK_MODULES = [
    "tasks.scripts",
    "tasks.maintenance",
    "tasks.workstreams",  # workstreams
    "tasks.triggers",  # triggers
    "tasks.triage",  # triage
    "tasks.patches",  # patches
    "tasks.alerts",  # alerts
    "tasks.deploy",  # deploy
    "tasks.smoke",  # smoke
]

# Before any broker connection exists: losing Redis must not kill the worker (see the module).
install_redis_transport()


def worker_queues(settings: Settings, requested: str | None = None) -> list[str]:
    """The queues a worker consumes: ``requested`` (comma-separated, ``-Q``) or
    ``celery.queues``, and always the housekeeping queue ``default`` too: Beat sends the reaper
    of lost runs (and the orphan sweep) there, so every worker must take its share."""
    if requested is None:
        names = list(settings.celery.queues)
    else:
        names = [name.strip() for name in requested.split(",") if name.strip()]
        if not names:
            raise ValidationError(f"-Q/--queues {requested!r} names no queue")
    return list(dict.fromkeys([*names, DEFAULT_QUEUE]))


def declared_queues(settings: Settings, consumed: Iterable[str] = ()) -> list[str]:
    """Every queue the app declares: the housekeeping queue, the well-known script queues,
    the configured ones, where scripts go by default, and those this process consumes."""
    names = [DEFAULT_QUEUE, *SCRIPT_QUEUES, *settings.celery.queues,
             settings.scripts.default_queue, *consumed]
    return list(dict.fromkeys(names))


def ssl_options(redis_url: str) -> dict[str, Any] | None:
    """TLS options for a ``rediss://`` URL that does not say how to check the server's
    certificate: check it (``ssl.CERT_REQUIRED``, as redis-py does). None for ``redis://`` URLs
    and for URLs with ``ssl_cert_reqs``, which then wins."""
    parts = urlsplit(redis_url)
    if parts.scheme != "rediss" or "ssl_cert_reqs" in parse_qs(parts.query):
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def longest_time_limit(app: Celery, settings: Settings) -> float:
    """The longest hard time limit any registered task can run with."""
    limits: list[float] = [settings.scripts.max_timeout + settings.celery.time_limit_grace]
    if app.conf.task_time_limit:
        limits.append(float(app.conf.task_time_limit))
    for task in app.tasks.values():
        limit = getattr(task, "time_limit", None)
        if limit:
            limits.append(float(limit))
    return max(limits)


def check_visibility_timeout(app: Celery, settings: Settings) -> None:
    """Refuse to start when Redis could redeliver a task that is still running."""
    visibility = float(app.conf.broker_transport_options.get("visibility_timeout", 3600))
    longest = longest_time_limit(app, settings)
    if visibility <= longest:
        raise ConfigError(
            f"visibility_timeout {visibility:g}s is not longer than the longest task time limit "
            f"{longest:g}s: Redis would deliver a running task a second time",
            key_path="celery.visibility_timeout",
        )


def create_app(settings: Settings, redis_url: str, *, queues: Iterable[str] = ()) -> Celery:
    """The app on ``redis_url``; ``queues``: those this process will consume (declared too)."""
    app = Celery("pitstop", set_as_current=True)
    transport = {
        "visibility_timeout": settings.celery.visibility_timeout,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    broker_url = redis_url
    if is_sentinel_url(redis_url):  # kombu's and Celery's own Sentinel form, and the service name
        sentinel = SentinelURL.parse(redis_url)
        broker_url = sentinel.kombu_url()
        transport.update(sentinel.transport_options())
    script_limit = settings.scripts.max_timeout + settings.celery.time_limit_grace
    app.conf.update(
        broker_url=broker_url,
        result_backend=broker_url,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=script_limit,
        result_expires=settings.celery.result_expires,
        task_track_started=True,
        task_default_queue=DEFAULT_QUEUE,
        task_queues=[Queue(name, routing_key=name)
                     for name in declared_queues(settings, queues)],
        task_create_missing_queues=True,
        task_routes={TASK_RUN_SCRIPT: {"queue": settings.scripts.default_queue}},
        worker_send_task_events=settings.celery.task_events,  # Flower needs them; they cost
        task_send_sent_event=settings.celery.task_events,
        beat_scheduler="workers.beat:LockedScheduler",
        include=TASK_MODULES,
        timezone="UTC",
        enable_utc=True,
    )
    tls = ssl_options(redis_url)
    if tls is not None:
        # Celery refuses a rediss:// URL without ssl_cert_reqs ("Unrecoverable error");
        # default to verifying the server's certificate, as every other pitstop command does.
        app.conf.update(broker_use_ssl=tls, redis_backend_use_ssl=tls)
    from beat_schedule import build_schedule

    app.conf.beat_schedule = build_schedule(settings)
    app.pitstop_settings = settings
    app.pitstop_redis_url = redis_url  # pitstop's own form (Beat's lock client takes it)
    return app


_default_app: Celery | None = None


def default_app() -> Celery:
    """The app for this process, configured from ``config/`` and ``PITSTOP_*`` (built once)."""
    global _default_app
    if _default_app is None:
        settings = load_settings()
        _default_app = create_app(settings, resolve_redis_url(settings))
    return _default_app


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return default_app()
    raise AttributeError(name)


def run_worker(app: Celery, argv: list[str]) -> int:
    """Run ``celery worker`` with ``argv`` in this process; returns the worker's exit code.

    ``app.worker_main`` drops it (Celery's command ends with ``ctx.exit(code)``, which in the
    non-standalone mode Celery runs it in returns the code to ``app.start``, which discards
    it): a worker that stopped after an "Unrecoverable error" would exit 0, and a service
    manager would not restart it.
    """
    from celery import signals

    started: list[Any] = []

    def remember(sender: Any, **_: Any) -> None:
        started.append(sender)

    signals.worker_init.connect(remember, weak=False)
    try:
        app.worker_main(argv=argv)
    finally:
        signals.worker_init.disconnect(remember)
    if not started:
        return 0
    code = getattr(started[-1], "exitcode", None)
    return code if isinstance(code, int) else (0 if code is None else 1)
