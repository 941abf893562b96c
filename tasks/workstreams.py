"""Workstream tasks: one step attempt (``workstream_step``) and the reaper Beat fires.

Shells around :class:`pitstop.workstreams.StepExecutor` and :func:`repair_runs`: they map a
Redis outage before the claim to a Celery retry, Celery's soft time limit to a timed-out step,
and hand the orchestrator this app's ``send_task``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import lru_cache
from typing import Any

from celery import Celery, Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from pitstop import components
from pitstop.kernel.constants import TASK_REAP_WORKSTREAMS, TASK_WORKSTREAM_STEP
from pitstop.kernel.errors import RedisUnavailable, RunNotFound
from pitstop.kernel.redaction import Redactor
from pitstop.workstreams import Orchestrator, StepExecutor, orchestrator_from, repair_runs
from workers import context

log = logging.getLogger(__name__)

TIME_LIMIT_MARGIN = 5.0
"""Seconds kept before the task's hard time limit for recording the step's result."""


@lru_cache(maxsize=1)
def _orchestrator_for(pid: int, app: Celery) -> Orchestrator:
    settings = context.settings()
    return orchestrator_from(settings, context.redis_client(), context.bus(),
                             context.run_store(), app.send_task,
                             redactor=components.new_redactor(settings))


def orchestrator(app: Celery) -> Orchestrator:
    """This worker process's orchestrator (sending through ``app``)."""
    return _orchestrator_for(os.getpid(), app)


@lru_cache(maxsize=1)
def _redactor_for(pid: int) -> Redactor:
    # Step kinds only redact with it (a script run learns its secrets in a redactor of its own),
    # so one per process serves every step without collecting anything.
    return context.new_redactor()


@lru_cache(maxsize=1)
def _executor_for(pid: int, app: Celery) -> StepExecutor:
    # One per process, like the orchestrator: it holds no state of its own between steps.
    return StepExecutor(orchestrator(app), host=socket.gethostname(), pid=pid,
                        new_redactor=lambda: _redactor_for(os.getpid()),
                        script_runner=context.script_runner,
                        runs=context.run_store(), timeout_errors=(SoftTimeLimitExceeded,))


def _executor(app: Celery) -> StepExecutor:
    return _executor_for(os.getpid(), app)


@shared_task(name=TASK_WORKSTREAM_STEP, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=5, default_retry_delay=2)
def workstream_step(self: Task, run_id: str, step_id: str, attempt: int) -> dict[str, Any]:
    """Execute attempt ``attempt`` of step ``step_id`` of workstream run ``run_id``, then move
    the run on. A message whose attempt has moved on (a redelivery) does nothing."""
    started = time.monotonic()
    executor = _executor(self.app)
    try:
        claimed = executor.claim(run_id, step_id, attempt)
    except RedisUnavailable as exc:
        raise self.retry(exc=exc) from exc  # nothing has started yet
    except RunNotFound:
        log.error("workstream run %s: no record; not running step %s", run_id, step_id)
        return {"run_id": run_id, "step": step_id, "attempt": attempt, "status": "skipped"}
    if claimed is None:
        return {"run_id": run_id, "step": step_id, "attempt": attempt, "status": "skipped"}
    limits = self.request.timelimit or (None, None)
    hard = limits[0] or self.time_limit or self.app.conf.task_time_limit
    give_up_by = started + float(hard) - TIME_LIMIT_MARGIN if hard else None
    return executor.run(claimed, attempt, give_up_by=give_up_by).as_result()


@shared_task(name=TASK_REAP_WORKSTREAMS, bind=True, acks_late=True, ignore_result=True)
def reap_workstreams(self: Task) -> list[str]:
    """Mend workstream runs a dead process left half-done (see pitstop.workstreams.repair)."""
    return repair_runs(orchestrator(self.app)).actions

