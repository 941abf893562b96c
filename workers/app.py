"""The Celery app: JSON only, at-least-once delivery, queues declared in one place.

``create_app(settings, redis_url)`` builds a configured app; the module attribute ``app`` (for
``celery -A workers.app`` and Flower) is built lazily from the environment on first access.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from pitstop.connection import resolve_redis_url
from pitstop.constants import DEFAULT_QUEUE, SCRIPT_QUEUES, TASK_RUN_SCRIPT
from pitstop.errors import ConfigError
from pitstop.settings import Settings, load_settings

TASK_MODULES = ["tasks.scripts", "tasks.maintenance"]


def declared_queues(settings: Settings) -> list[str]:
    names = [DEFAULT_QUEUE, *SCRIPT_QUEUES, *settings.celery.queues]
    return list(dict.fromkeys(names))


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


def create_app(settings: Settings, redis_url: str) -> Celery:
    app = Celery("pitstop", set_as_current=True)
    transport = {
        "visibility_timeout": settings.celery.visibility_timeout,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    script_limit = settings.scripts.max_timeout + settings.celery.time_limit_grace
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
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
        task_queues=[Queue(name, routing_key=name) for name in declared_queues(settings)],
        task_create_missing_queues=True,
        task_routes={TASK_RUN_SCRIPT: {"queue": settings.scripts.default_queue}},
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_scheduler="workers.beat:LockedScheduler",
        include=TASK_MODULES,
        timezone="UTC",
        enable_utc=True,
    )
    from beat_schedule import build_schedule

    app.conf.beat_schedule = build_schedule(settings)
    app.pitstop_settings = settings
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
