"""``run_script``: the Celery shell around :class:`pitstop.scripts.runner.ScriptRunner`.

It only maps a message to a :class:`ScriptRequest`, Redis outages before the start to Celery
retries, and outcomes to Celery results (``ScriptFailed`` is a declared, expected failure).
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task, shared_task

from pitstop.kernel.constants import TASK_RUN_SCRIPT
from pitstop.kernel.errors import RedisUnavailable, ScriptFailed
from pitstop.scripts.runner import ScriptRequest
from workers import context

TIME_LIMIT_MARGIN = 5.0
"""Seconds kept before the task's hard time limit for what follows the retries of a result."""


# ``throws``: a failing script is a FAILURE in Flower and the result backend, logged by the
# worker as one line rather than as a crash with a traceback.
@shared_task(name=TASK_RUN_SCRIPT, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=5, default_retry_delay=2, throws=(ScriptFailed,))
def run_script(self: Task, run_id: str = "", script: str = "", args: list[str] | None = None,
               env: dict[str, str] | None = None, cwd: str | None = None,
               timeout: float | None = None, idempotent: bool = False,
               trace_id: str | None = None, sealed_env: str | None = None,
               sealed_args: str | None = None, secret_env: list[str] | None = None,
               **unknown: Any) -> dict[str, Any]:
    """Run ``script`` for run ``run_id``; never starts a script twice unless ``idempotent``.

    Returns the execution result when the script succeeded; raises :class:`ScriptFailed` when
    it ran and failed, was refused or was lost, after the run record says so. The fields are
    passed on as they came (the runner checks them once the run is claimed, so a malformed
    message ends its run ``failed`` saying why, never ``running`` or ``queued``).
    """
    started = time.monotonic()
    request = ScriptRequest(run_id=run_id, script=script,
                            args=[] if args is None else args, env={} if env is None else env,
                            cwd=cwd, timeout=timeout, idempotent=idempotent,
                            trace_id=trace_id, sealed_env=sealed_env, sealed_args=sealed_args,
                            secret_env=[] if secret_env is None else secret_env,
                            unknown=tuple(unknown))
    runner = context.script_runner()
    try:
        skip = runner.claim(request)
    except RedisUnavailable as exc:
        # Nothing has started yet: safe to try again later. Keep the masked arguments: a retry
        # is a new message, and Celery does not carry argsrepr/kwargsrepr over by itself.
        raise self.retry(exc=exc, argsrepr=self.request.argsrepr,
                         kwargsrepr=self.request.kwargsrepr) from exc
    if skip is not None:
        return skip.as_result()
    hard_limit = _hard_time_limit(self)
    give_up_by = None if hard_limit is None else started + hard_limit - TIME_LIMIT_MARGIN
    return runner.execute(request, give_up_by=give_up_by).to_dict()  # redacted already


def _hard_time_limit(task: Task) -> float | None:
    """Seconds this task may run before Celery kills it (None: no limit)."""
    limits = task.request.timelimit or (None, None)
    hard = limits[0] or task.time_limit or task.app.conf.task_time_limit
    return float(hard) if hard else None
