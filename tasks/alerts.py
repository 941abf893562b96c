"""Alerting's Celery shell: ``send_alert`` (one delivery attempt; retries with the delay the
deliverer chose), ``alerts_daily_summary`` (Beat), and the alert manager's thread in the worker's
main process (started when the worker is ready, stopped when it shuts down: no extra daemon)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_ready, worker_shutdown

from pitstop.alerts.runtime import AlertsRuntime, ManagerThread
from pitstop.alerts.summary import send_daily_summary
from pitstop.kernel.constants import DEFAULT_QUEUE, TASK_ALERTS_SUMMARY, TASK_SEND_ALERT
from workers import context

log = logging.getLogger(__name__)

# httpx logs every request's URL at INFO; a webhook URL is a secret.
logging.getLogger("httpx").setLevel(logging.WARNING)

_runtimes: dict[int, AlertsRuntime] = {}
_runtime_lock = threading.Lock()
_manager: ManagerThread | None = None


def runtime() -> AlertsRuntime:
    """This process's alerting runtime (built once per process: prefork children get theirs)."""
    import os

    with _runtime_lock:
        pid = os.getpid()
        if pid not in _runtimes:
            _runtimes[pid] = AlertsRuntime(context.settings(), context.redis_client(),
                                           context.bus(), context.new_redactor())
        return _runtimes[pid]


def enqueue_delivery(delivery_id: str) -> None:
    send_alert.apply_async((delivery_id,), queue=DEFAULT_QUEUE)


@shared_task(name=TASK_SEND_ALERT, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def send_alert(self: Task, delivery_id: str) -> str:
    """Attempt one delivery from the ledger; the ledger makes a repeated message harmless."""
    deliverer = runtime().deliverer()
    if deliverer is None:
        return "alerting is not configured"
    outcome = deliverer.attempt(delivery_id)
    for queued in outcome.enqueue:
        enqueue_delivery(queued)
    if outcome.state == "retry" and outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.state


@shared_task(name=TASK_ALERTS_SUMMARY, acks_late=True, ignore_result=True)
def alerts_daily_summary() -> str:
    """Beat fires this every few minutes; it sends yesterday's summary once, after summary.at."""
    rt = runtime()
    config = rt.config()
    if config is None:
        return "alerting is not configured"
    return send_daily_summary(rt, config, enqueue=enqueue_delivery)


@worker_ready.connect
def _start_manager(**_: Any) -> None:
    global _manager
    if _manager is not None:
        return
    try:
        _manager = ManagerThread(runtime(), enqueue_delivery)
        _manager.start()
    except Exception:
        log.exception("alerts: could not start the alert manager")


@worker_shutdown.connect
def _stop_manager(**_: Any) -> None:
    if _manager is not None:
        _manager.stop()
