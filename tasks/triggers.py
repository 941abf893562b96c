"""Triggers' Celery shell: the router thread in every worker's main process (started when the
worker is ready, stopped when it shuts down: no extra daemon) and ``fire_schedules`` (Beat).

The logic lives in :mod:`pitstop.triggers`; this only builds it from the worker's settings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery, Task, shared_task
from celery.signals import worker_ready, worker_shutdown

from pitstop import components
from pitstop.kernel.constants import LOG_TRIGGER_EXECUTIONS, ROUTER_ENV, TASK_FIRE_SCHEDULES
from pitstop.kernel.errors import RedisUnavailable
from pitstop.triggers.engine import TriggerEngine
from pitstop.triggers.router import Router
from pitstop.triggers.source import ConfigSource, LoadedConfig
from pitstop.triggers.state import TriggerState
from workers import context

log = logging.getLogger(__name__)

_lock = threading.Lock()
_engines: dict[int, tuple[TriggerEngine, ConfigSource]] = {}
_router: Router | None = None


def orchestrator(app: Celery) -> Any:
    """This process's orchestrator (the workstream engine's, sending through ``app``)."""
    try:
        from tasks import workstreams
    except ImportError:  # pragma: no cover - a tree without the workstream engine
        log.warning("triggers: no workstream engine here: launches will fail")
        return None
    return workstreams.orchestrator(app)


def _catalog_adopter(app: Celery) -> Callable[[LoadedConfig], None]:
    def adopt(loaded: LoadedConfig) -> None:
        current = orchestrator(app)
        if current is not None and loaded.catalog is not None:
            current.catalog = loaded.catalog  # workstreams.yaml reloaded with triggers.yaml
    return adopt


def engine(app: Celery) -> tuple[TriggerEngine, ConfigSource]:
    """This process's engine and config source (built once per process)."""
    with _lock:
        pid = os.getpid()
        if pid not in _engines:
            settings = context.settings()
            client = context.redis_client()
            built = TriggerEngine(
                context.bus(), orchestrator(app),
                state_log=components.state_log(LOG_TRIGGER_EXECUTIONS, settings,
                                               context.new_redactor()),
                max_hops=settings.bus.max_hops)
            _engines[pid] = (built, ConfigSource(settings.config_dir, TriggerState(client)))
        return _engines[pid]


def _current_engine(app: Celery) -> TriggerEngine:
    """The engine with the config in force fleet-wide (recompiled when its version moved)."""
    built, source = engine(app)
    version = source.state.active_version()
    loaded = None
    if version is None:
        loaded = source.startup()
    elif version != built.config.version:
        loaded = source.active()
    if loaded is not None:
        built.load(loaded.config)
        _catalog_adopter(app)(loaded)
    return built


@shared_task(name=TASK_FIRE_SCHEDULES, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=10, default_retry_delay=1)
def fire_schedules(self: Task) -> int:
    """Fire the schedule slots that are due; each slot at most once fleet-wide (fenced by this
    task's id, so a retry of this very task may finish what it fenced)."""
    try:
        decisions = _current_engine(self.app).fire_schedules(token=str(self.request.id))
    except RedisUnavailable as exc:
        raise self.retry(exc=exc) from exc
    return sum(1 for decision in decisions if decision.decision == "launched")


@worker_ready.connect
def _start_router(sender: Any = None, **_: Any) -> None:
    global _router
    if _router is not None or os.environ.get(ROUTER_ENV, "1") == "0":
        return
    try:
        settings = context.settings()
        app = sender.app
        built, source = engine(app)
        nodename = getattr(sender, "hostname", None) or f"{socket.gethostname()}-{os.getpid()}"
        consumer = context.bus().consumer(name=f"router:{nodename}")
        _router = Router(built, consumer, source=source, on_loaded=_catalog_adopter(app))
        _router.start()
        log.info("router: started in %s (config dir %s)", nodename, settings.config_dir)
    except Exception:
        log.exception("router: could not start")


@worker_shutdown.connect
def _stop_router(**_: Any) -> None:
    if _router is not None:
        _router.stop()
